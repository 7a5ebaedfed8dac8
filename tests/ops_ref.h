// tests/ops_ref.h: tensor-level ops that only the tests use, kept out of the op layer
// (kernels/ops.h holds what the models call). Each dispatches on the tensor's device
// like kernels/ops.c does: the CPU half is written here (fp32, the reference the
// tests compare against), the CUDA half is a raw kernel of kernels/cuda/cuda_ops.h.
// Header-only (static), so a test includes it and links nothing more.
//   tr_modulate  x (B,T,C) * (1 + scale (B,C)) + shift (B,C): the unfused half of
//                sq_layernorm_modulate (cpu_modulate / cuda_modulate serve the
//                fused op's fallbacks in production);
//   tr_softmax   over the last dim, fp32 statistics;
//   tr_add_row_bias / tr_add_channel_bias  x (N,C) += b (C) / x (B,C,H,W) += b (B,C);
//   tr_mean      mean over all elements in double (synchronises on CUDA);
//   tr_transpose swap two dims (an sq_permute).
#ifndef SQ_TESTS_OPS_REF_H
#define SQ_TESTS_OPS_REF_H

#include <math.h>
#include <stdint.h>

#include "core/error.h"
#include "core/tensor.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/ops.h"
#ifdef SQ_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

static inline int64_t tr_last_dim(const sq_tensor *t) { return t->ndim ? t->shape[t->ndim - 1] : 1; }

// True for CPU (then every tensor must be F32); false for CUDA (one dtype for all).
static inline bool tr_on_cpu(const char *op, const sq_tensor *out, const sq_tensor *a, const sq_tensor *b) {
    const sq_tensor *ts[3] = {out, a, b};
    for (int i = 0; i < 3; i++) {
        if (!ts[i]) continue;
        SQ_CHECK(ts[i]->device == out->device, "%s: tensors on different devices", op);
        SQ_CHECK(out->device == SQ_CPU ? ts[i]->dtype == SQ_F32 : ts[i]->dtype == out->dtype, "%s: dtype %s", op,
                 sq_dtype_name(ts[i]->dtype));
    }
#ifndef SQ_HAVE_CUDA
    SQ_CHECK(out->device == SQ_CPU, "%s: this build has no CUDA ops", op);
#endif
    return out->device == SQ_CPU;
}

static inline void tr_modulate(sq_tensor *out, const sq_tensor *x, const sq_tensor *shift, const sq_tensor *scale) {
    int64_t C = tr_last_dim(x), B = x->shape[0], T = sq_tensor_numel(x) / (B * C);
    SQ_CHECK(sq_tensor_numel(out) == sq_tensor_numel(x) && sq_tensor_numel(shift) == B * C &&
                 sq_tensor_numel(scale) == B * C,
             "modulate: shapes");
    bool cpu = tr_on_cpu("modulate", out, x, shift);
    tr_on_cpu("modulate", out, scale, NULL);
    if (cpu) cpu_modulate(out->data, x->data, shift->data, scale->data, B, T, C);
#ifdef SQ_HAVE_CUDA
    else cuda_modulate(out->dtype, out->data, x->data, shift->data, scale->data, B, T, C);
#endif
}

static inline void tr_softmax(sq_tensor *out, const sq_tensor *x) {
    int64_t C = tr_last_dim(x), rows = sq_tensor_numel(x) / C;
    SQ_CHECK(sq_tensor_numel(out) == sq_tensor_numel(x), "softmax: shapes");
    if (tr_on_cpu("softmax", out, x, NULL)) {
        const float *xs = x->data;
        float *os = out->data;
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = xs + r * C;
            float *o = os + r * C;
            float mx = -INFINITY;
            for (int64_t i = 0; i < C; i++) mx = fmaxf(mx, xr[i]);
            double sum = 0;
            for (int64_t i = 0; i < C; i++) {
                float e = expf(xr[i] - mx);
                o[i] = e;
                sum += e;
            }
            float inv = (float)(1.0 / sum);
            for (int64_t i = 0; i < C; i++) o[i] *= inv;
        }
    }
}

static inline void tr_add_row_bias(sq_tensor *x, const sq_tensor *b) {
    int64_t C = tr_last_dim(x), rows = sq_tensor_numel(x) / C;
    SQ_CHECK(sq_tensor_numel(b) == C, "add_row_bias: shapes");
    if (tr_on_cpu("add_row_bias", x, b, NULL)) {
        float *xs = x->data;
        const float *bs = b->data;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t i = 0; i < C; i++) xs[r * C + i] += bs[i];
    }
}

static inline void tr_add_channel_bias(sq_tensor *x, const sq_tensor *b) {
    SQ_CHECK(x->ndim == 4 && sq_tensor_numel(b) == x->shape[0] * x->shape[1], "add_channel_bias: shapes");
    int64_t BC = x->shape[0] * x->shape[1], HW = x->shape[2] * x->shape[3];
    if (tr_on_cpu("add_channel_bias", x, b, NULL)) {
        float *xs = x->data;
        const float *bs = b->data;
        for (int64_t c = 0; c < BC; c++)
            for (int64_t i = 0; i < HW; i++) xs[c * HW + i] += bs[c];
    }
#ifdef SQ_HAVE_CUDA
    else cuda_add_channel_bias(x->dtype, x->data, b->data, BC, HW);
#endif
}

static inline double tr_mean(const sq_tensor *x) {
    int64_t n = sq_tensor_numel(x);
    if (tr_on_cpu("mean", x, NULL, NULL)) {
        const float *xs = x->data;
        double s = 0;
        for (int64_t i = 0; i < n; i++) s += xs[i];
        return s / (double)n;
    }
#ifdef SQ_HAVE_CUDA
    return cuda_sum(x->data, x->dtype, n) / (double)n;
#else
    return 0;
#endif
}

static inline void tr_transpose(sq_tensor *out, const sq_tensor *x, int dim0, int dim1) {
    int perm[4] = {0, 1, 2, 3};
    perm[dim0] = dim1;
    perm[dim1] = dim0;
    sq_permute(out, x, perm);
}

#endif
