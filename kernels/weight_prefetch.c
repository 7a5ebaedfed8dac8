// kernels/weight_prefetch.c: the learned order of a model's int4 linears and the
// pass that prefetches along it (kernels/weight_prefetch.h).
#include "kernels/weight_prefetch.h"

#include <stdint.h>
#include <stdlib.h>

#include "core/error.h"
#include "kernels/dispatch.h"
#include "kernels/env_switch.h"
#include "kernels/ops.h"
#include "kernels/streams.h"

// An open-addressing map from a linear to the one after it. SD3.5 Large has about
// 700 int4 linears on the dequantise path; when the table fills, the rest is not learned.
#define ORDER_SLOTS 4096

struct sq_linear_order {
    const void *key[ORDER_SLOTS];     // a layer's identity (sq_q4_layer.key)
    sq_q4_layer next[ORDER_SLOTS];    // the layer that followed it
};

static struct {
    sq_linear_order *order;   // NULL outside a pass
    sq_device device;
    const void *last;         // the previous linear of this pass on the dequantise path
} g_pass;

static int g_enabled = -1;    // kernels/env_switch.h

sq_linear_order *sq_linear_order_new(void) { return calloc(1, sizeof(sq_linear_order)); }

void sq_linear_order_free(sq_linear_order *o) {
    if (g_pass.order == o) g_pass.order = NULL;
    free(o);
}

void sq_prefetch_counts(long *ahead, long *in_line) {
    *ahead = *in_line = 0;
#ifdef SQ_HAVE_CUDA
    cuda_prefetch_counts(ahead, in_line);
#endif
}

void sq_prefetch_set_enabled(bool on) { g_enabled = on; }

static bool enabled(void) { return sq_env_switch_on(&g_enabled, "SQ_WEIGHT_PREFETCH"); }

void sq_prefetch_pass_begin(sq_linear_order *o, sq_device device) {
    g_pass.order = o;
    g_pass.device = device;
    g_pass.last = NULL;
}

void sq_prefetch_pass_end(void) {
#ifdef SQ_HAVE_CUDA
    if (g_pass.order && g_pass.device == SQ_CUDA) cuda_prefetch_finish();
#endif
    g_pass.order = NULL;
    g_pass.last = NULL;
}

#ifdef SQ_HAVE_CUDA
// Layer l's weights under pass perturbation p, as the device half takes them.
static cuda_q4_weight weight_of(const sq_q4_layer *l, const sq_perturb *p) {
    cuda_q4_weight w = {l->codes->data, l->scales->data, l->codes->shape[0], l->codes->shape[1], l->group,
                        sq_layer_perturbation(p, l->index_base, l->frozen)};
    return w;
}

// The slot of l: where it is, or the empty one where it would go; -1 when full.
static int slot_of(const sq_linear_order *o, const void *l) {
    unsigned h = (unsigned)(((uintptr_t)l >> 4) * 2654435761u) % ORDER_SLOTS;
    for (int probe = 0; probe < ORDER_SLOTS; probe++) {
        int i = (int)((h + (unsigned)probe) % ORDER_SLOTS);
        if (o->key[i] == l || o->key[i] == NULL) return i;
    }
    return -1;
}

static void learn(sq_linear_order *o, const void *prev, const sq_q4_layer *l) {
    int i = slot_of(o, prev);
    if (i < 0) return;
    o->key[i] = prev;
    o->next[i] = *l;
}

static const sq_q4_layer *next_of(const sq_linear_order *o, const void *l) {
    int i = slot_of(o, l);
    return i >= 0 && o->key[i] == l ? &o->next[i] : NULL;
}

#endif

bool sq_prefetch_linear(sq_tensor *out, const sq_tensor *x, const sq_q4_layer *l, const sq_tensor *b,
                        const sq_perturb *p, bool gelu) {
    // the side stream's linears (kernels/streams.h) take the plain path: the buffers
    // and their events belong to the default stream's sequence of layers
    if (!g_pass.order || g_pass.device != SQ_CUDA || !enabled() || sq_stream_on_side()) return false;
    if (x->device != SQ_CUDA || x->dtype != SQ_BF16 || l->codes->device != SQ_CUDA ||
        sq_qlinear_uses_gemv(out, x, l->codes, b, l->group))
        return false;
#ifdef SQ_HAVE_CUDA
    sq_qlinear_check_layer("qlinear", l->codes, l->scales, l->group);
    if (g_pass.last) learn(g_pass.order, g_pass.last, l);
    g_pass.last = l->key;
    cuda_q4_weight w = weight_of(l, p);
    void *buf = NULL;
    CUDA_OR_FAIL("dequant_q4", buf = cuda_prefetch_take(&w));
    sq_tensor wt = sq_tensor_view(buf, SQ_BF16, SQ_CUDA, 2, l->codes->shape);
    if (gelu) sq_matmul_gelu(out, x, &wt, b);
    else sq_matmul(out, x, &wt, b);
    cuda_prefetch_taken_read();
    const sq_q4_layer *n = next_of(g_pass.order, l->key);
    if (n && n->codes->data && n->codes->device == SQ_CUDA) {
        cuda_q4_weight nw = weight_of(n, p);
        CUDA_OR_FAIL("dequant_q4 ahead", cuda_prefetch_start(&nw));
    }
    return true;
#else
    (void)out; (void)b; (void)p; (void)gelu;
    return false;   // never reached: no CUDA tensors in this build
#endif
}
