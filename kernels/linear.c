// kernels/linear.c: dense or quantised linear layers (kernels/linear.h).
#include "kernels/linear.h"

#include <stddef.h>

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

static long g_batched;   // sq_linear_shared_input_batched

long sq_linear_shared_input_batched(void) { return g_batched; }

// Whether the n layers can run as one sq_matmul_shared_input, and the outputs' stride.
static bool one_batched_gemm(sq_tensor *const *out, const sq_tensor *x, const sq_linear *const *l, int n,
                             int64_t *out_stride) {
    if (n < 2 || n > SQ_LINEAR_SHARED_INPUT_MAX || !sq_linear_quantized(l[0])) return false;
    const sq_linear *l0 = l[0];
    size_t es = sq_dtype_bytes(out[0]->dtype, 1);
    ptrdiff_t step = (char *)out[1]->data - (char *)out[0]->data;
    // each output must end before the next begins
    if (step < (ptrdiff_t)((size_t)sq_tensor_numel(out[0]) * es) || step % (ptrdiff_t)es) return false;
    for (int i = 0; i < n; i++) {
        const sq_linear *li = l[i];
        if (!sq_linear_quantized(li) || sq_qlinear_uses_gemv(out[i], x, &li->codes, li->b.data ? &li->b : NULL, li->group))
            return false;
        if (li->group != l0->group || li->codes.shape[0] != l0->codes.shape[0] ||
            li->codes.shape[1] != l0->codes.shape[1] || (li->b.data != NULL) != (l0->b.data != NULL) ||
            out[i]->dtype != out[0]->dtype || sq_tensor_numel(out[i]) != sq_tensor_numel(out[0]) ||
            (char *)out[i]->data - (char *)out[0]->data != (ptrdiff_t)i * step)
            return false;
    }
    *out_stride = step / (ptrdiff_t)es;
    return true;
}

int sq_linear_forward_shared_input(sq_tensor *const *out, const sq_tensor *x, const sq_linear *const *l, int n,
                                   const sq_perturb *p, sq_arena *scratch) {
    int64_t out_stride;
    if (!one_batched_gemm(out, x, l, n, &out_stride)) {
        for (int i = 0; i < n; i++)
            if (forward(out[i], x, l[i], p, scratch, false) != SQ_OK) return SQ_FAIL;
        return SQ_OK;
    }
    int64_t M = l[0]->codes.shape[0], K = l[0]->codes.shape[1];
    bool bias = l[0]->b.data != NULL;
    size_t mark = sq_arena_mark(scratch);
    sq_tensor w, b;
    if (sq_arena_tensor(scratch, &w, x->dtype, 3, (int64_t[]){n, M, K}) != SQ_OK ||
        (bias && sq_arena_tensor(scratch, &b, out[0]->dtype, 1, (int64_t[]){n * M}) != SQ_OK)) {
        sq_arena_reset(scratch, mark);
        return SQ_FAIL;
    }
    size_t wes = sq_dtype_bytes(w.dtype, 1);
    const sq_tensor *biases[SQ_LINEAR_SHARED_INPUT_MAX];
    for (int i = 0; i < n; i++) {
        sq_tensor wi = sq_tensor_view((char *)w.data + (size_t)(i * M * K) * wes, w.dtype, w.device, 2, (int64_t[]){M, K});
        sq_perturb lp = sq_layer_perturbation(p, l[i]->index_base, l[i]->frozen);
        sq_dequant_q4(&wi, &l[i]->codes, &l[i]->scales, l[i]->group, &lp);
        biases[i] = &l[i]->b;
    }
    if (bias) sq_concat(&b, biases, n, 0);   // the biases side by side too: n·M values, a short copy each
    sq_matmul_shared_input(out[0], out_stride, x, &w, bias ? &b : NULL);
    g_batched++;
    sq_arena_reset(scratch, mark);
    return SQ_OK;
}

void sq_linear_free(sq_linear *l) {
    sq_tensor_free(&l->w);
    sq_tensor_free(&l->b);
    sq_tensor_free(&l->codes);
    sq_tensor_free(&l->scales);
}
