// kernels/linear.c: dense or quantised linear layers (kernels/linear.h).
#include "kernels/linear.h"

#include "core/error.h"
#include "kernels/ops.h"
#include "kernels/weight_prefetch.h"

// The one path of both entry points: gelu selects gelu_tanh(layer(x)).
static int forward(sq_tensor *out, const sq_tensor *x, const sq_linear *l, const sq_perturb *p, sq_arena *scratch,
                   bool gelu) {
    const sq_tensor *b = l->b.data ? &l->b : NULL;
    if (!sq_linear_quantized(l)) {
        if (gelu) sq_matmul_gelu(out, x, &l->w, b);
        else sq_matmul(out, x, &l->w, b);
        return SQ_OK;
    }
    sq_q4_layer q4 = {l, &l->codes, &l->scales, l->group, l->index_base, l->frozen};
    if (sq_prefetch_linear(out, x, &q4, b, p, gelu)) return SQ_OK;
    sq_perturb lp = sq_layer_perturbation(p, l->index_base, l->frozen);
    size_t mark = sq_arena_mark(scratch);
    sq_tensor w;
    if (sq_arena_tensor(scratch, &w, x->dtype, 2, l->codes.shape) != SQ_OK) return SQ_FAIL;
    sq_qlinear(out, x, &l->codes, &l->scales, b, l->group, &lp, &w, gelu);
    sq_arena_reset(scratch, mark);
    return SQ_OK;
}

int sq_linear_forward(sq_tensor *out, const sq_tensor *x, const sq_linear *l, const sq_perturb *p, sq_arena *scratch) {
    return forward(out, x, l, p, scratch, false);
}

int sq_linear_forward_gelu(sq_tensor *out, const sq_tensor *x, const sq_linear *l, const sq_perturb *p,
                           sq_arena *scratch) {
    return forward(out, x, l, p, scratch, true);
}

void sq_linear_free(sq_linear *l) {
    sq_tensor_free(&l->w);
    sq_tensor_free(&l->b);
    sq_tensor_free(&l->codes);
    sq_tensor_free(&l->scales);
}
