// kernels/ops.c: the op layer's dispatcher. Checks each call's shapes, dtypes and
// devices (a mismatch is a programming error: SQ_CHECK aborts naming the op and the
// shapes), then runs the CPU reference (kernels/cpu/) or the CUDA kernels
// (kernels/cuda/).
//
// The dispatch rule, for every op of kernels/ops.h, quant.h and int8.h (this file,
// quant_ops.c, int8_ops.c):
// - The public function (sq_*) takes tensors, checks them, and picks the device from
//   its tensors (all on one): the CPU half is a raw-pointer cpu_* function (kernels/cpu/),
//   the CUDA half a raw-pointer cuda_* function declared in kernels/cuda/cuda_ops.h.
// - The CUDA half is called only as CUDA_OR_FAIL("name", cuda_x(...))
//   (kernels/dispatch.h): that is what brackets it with the profiler, so SQ_PROFILE=1
//   sees every GPU op under its name, and what makes a CPU-only build abort naming the
//   op. So an op neither calls a cuda_* function bare nor wraps the call in its own
//   #ifdef; the one #ifdef SQ_HAVE_CUDA left in these files guards a query that picks
//   a path (quant_ops.c's sq_qlinear_uses_gemv), not a call that does work.
// - SQ_HAVE_CUDA (meson.build: the build has the CUDA backend) is the one build flag;
//   backend.c uses it for the device functions that are not ops.
//
// The prefixes, as the code has them (the whole project, written down here because
// kernels/ is where both meet; docs/DESIGN.md "Conventions" says the same):
// - sq_ : what does not know Stable Diffusion: the library layers core/ and kernels/
//   (tensors, errors, ops, int4/int8 formats, the perturbation RNG, the backend; the
//   helpers kernels/cuda/ files share, sq_cudnn_*, sq_slab_*), the model-agnostic
//   QZO optimiser and its checkpoint file (qzo/qzo.*: sq_qzo_*, sq_lr_schedule_*;
//   qzo/checkpoint.*: sq_checkpoint_*) and app/'s command plumbing (sq_cmd_*,
//   sq_options_*).
// - sd_ : what is Stable Diffusion: mmdit/ (sd_mmdit_*, and the base model on disk,
//   sd_base_*, sd_q4_header, sd_quantize_checkpoint), vae/, text_encoders/,
//   datasets/, samples/, the QZO code that knows the MMDiT (qzo/trained_scales.*:
//   sd_scale_list, sd_load_finetuned_mmdit; qzo/diagnostics.*: sd_qzo_diagnose),
//   the SD training around the QZO step (qzo/flow_loss.*, qzo/noise.*: sd_flow_*,
//   sd_draw_*; app/train_*: sd_train_* options, eval, log and report) and
//   `sd-qzo export` (app/export*: sd_export_*).
// - cpu_ / cuda_ : the raw-pointer halves of an op (kernels/cpu/, kernels/cuda/),
//   called from the dispatchers, from each other (a fused kernel's fallback), and by
//   tests; model code never sees them.
// Types, macros and include guards follow their functions (sq_tensor, SQ_CHECK,
// SQ_OPS_H; sd_dataset, SD_MMDIT_MODEL_H).
#include "kernels/ops.h"

#include <math.h>
#include <string.h>

#include "core/error.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/dispatch.h"

static const char *desc(const sq_tensor *t, char *buf) { return t ? sq_tensor_describe(t, buf, 96) : "NULL"; }

static bool on_cpu(const char *op, const sq_tensor *out, const sq_tensor *a, const sq_tensor *b, const sq_tensor *c) {
    const sq_tensor *ts[4] = {out, a, b, c};
    for (int i = 1; i < 4; i++)
        if (ts[i]) SQ_CHECK(ts[i]->device == out->device, "%s: tensors on different devices", op);
    if (out->device != SQ_CPU) {
        // CUDA: bf16 activations by default, f32 for models run at full precision
        SQ_CHECK(out->dtype == SQ_BF16 || out->dtype == SQ_F32, "%s: CUDA tensors must be BF16 or F32, got %s", op,
                 sq_dtype_name(out->dtype));
        for (int i = 1; i < 4; i++)
            if (ts[i]) SQ_CHECK(ts[i]->dtype == out->dtype, "%s: mixed dtypes %s and %s", op, sq_dtype_name(out->dtype),
                                sq_dtype_name(ts[i]->dtype));
        return false;
    }
    for (int i = 0; i < 4; i++)
        if (ts[i]) SQ_CHECK(ts[i]->dtype == SQ_F32, "%s: CPU tensors must be F32, got %s", op, sq_dtype_name(ts[i]->dtype));
    return true;
}

static int64_t last_dim(const sq_tensor *t) { return t->ndim ? t->shape[t->ndim - 1] : 1; }
static int64_t rows_of(const sq_tensor *t) { return sq_tensor_numel(t) / last_dim(t); }
#define F(t) ((float *)(t)->data)
#define CF(t) ((const float *)(t)->data)
#define OPT(t) ((t) ? CF(t) : NULL)

// The shape checks of both matmul ops; *N, *K, *M get the GEMM's sizes.
static void check_matmul(const char *op, const sq_tensor *out, const sq_tensor *x, const sq_tensor *w, const sq_tensor *b,
                         int64_t *N, int64_t *K, int64_t *M) {
    char b1[96], b2[96], b3[96];
    *K = last_dim(x), *N = rows_of(x), *M = w->shape[0];
    SQ_CHECK(w->ndim == 2 && w->shape[1] == *K && last_dim(out) == *M && rows_of(out) == *N &&
                 (!b || sq_tensor_numel(b) == *M),
             "%s: x %s, w %s, out %s", op, desc(x, b1), desc(w, b2), desc(out, b3));
}

void sq_matmul(sq_tensor *out, const sq_tensor *x, const sq_tensor *w, const sq_tensor *b) {
    int64_t N, K, M;
    check_matmul("matmul", out, x, w, b, &N, &K, &M);
    if (on_cpu("matmul", out, x, w, b)) cpu_matmul(F(out), CF(x), CF(w), OPT(b), N, K, M);
    else CUDA_OR_FAIL("matmul", cuda_matmul(out->dtype, out->data, x->data, w->data, b ? b->data : NULL, N, K, M));
}

void sq_matmul_shared_input(sq_tensor *out, int64_t out_stride, const sq_tensor *x, const sq_tensor *w,
                            const sq_tensor *b) {
    char b1[96], b2[96], b3[96];
    SQ_CHECK(w->ndim == 3, "matmul_shared_input: w must be (G, M, K), not %s", desc(w, b2));
    int64_t K = last_dim(x), N = rows_of(x), G = w->shape[0], M = w->shape[1];
    SQ_CHECK(G >= 1 && w->shape[2] == K && last_dim(out) == M && rows_of(out) == N && out_stride >= N * M &&
                 (!b || sq_tensor_numel(b) == G * M),
             "matmul_shared_input: x %s, w %s, out %s, stride %lld", desc(x, b1), desc(w, b2), desc(out, b3),
             (long long)out_stride);
    if (on_cpu("matmul_shared_input", out, x, w, b)) {   // the CPU twin: G plain products
        for (int64_t g = 0; g < G; g++)
            cpu_matmul(F(out) + g * out_stride, CF(x), CF(w) + g * M * K, b ? CF(b) + g * M : NULL, N, K, M);
        return;
    }
    CUDA_OR_FAIL("matmul_shared_input", cuda_matmul_shared_input(out->dtype, out->data, out_stride, x->data, w->data,
                                                                 b ? b->data : NULL, G, N, K, M));
}

void sq_matmul_gelu(sq_tensor *out, const sq_tensor *x, const sq_tensor *w, const sq_tensor *b) {
    int64_t N, K, M;
    check_matmul("matmul_gelu", out, x, w, b, &N, &K, &M);
    // cuBLASLt's GELU epilogue serves bf16; the CPU and f32 run the two ops
    if (!on_cpu("matmul_gelu", out, x, w, b) && out->dtype == SQ_BF16) {
        CUDA_OR_FAIL("matmul_gelu", cuda_matmul_gelu(out->dtype, out->data, x->data, w->data, b ? b->data : NULL, N, K, M));
        return;
    }
    sq_matmul(out, x, w, b);
    sq_gelu(out, out, true);
}

void sq_layernorm(sq_tensor *out, const sq_tensor *x, const sq_tensor *w, const sq_tensor *b, float eps) {
    char b1[96], b2[96];
    int64_t C = last_dim(x);
    SQ_CHECK(sq_tensor_numel(out) == sq_tensor_numel(x) && (!w || sq_tensor_numel(w) == C) &&
                 (!b || sq_tensor_numel(b) == C),
             "layernorm: x %s, out %s", desc(x, b1), desc(out, b2));
    if (on_cpu("layernorm", out, x, w, b)) cpu_layernorm(F(out), CF(x), OPT(w), OPT(b), rows_of(x), C, eps);
    else CUDA_OR_FAIL("layernorm", cuda_layernorm(out->dtype, out->data, x->data, w ? w->data : NULL, b ? b->data : NULL, rows_of(x), C, eps));
}

void sq_rmsnorm(sq_tensor *out, const sq_tensor *x, const sq_tensor *w, float eps) {
    char b1[96], b2[96];
    int64_t C = last_dim(x);
    SQ_CHECK(sq_tensor_numel(out) == sq_tensor_numel(x) && (!w || sq_tensor_numel(w) == C),
             "rmsnorm: x %s, out %s", desc(x, b1), desc(out, b2));
    if (on_cpu("rmsnorm", out, x, w, NULL)) cpu_rmsnorm(F(out), CF(x), OPT(w), rows_of(x), C, eps);
    else CUDA_OR_FAIL("rmsnorm", cuda_rmsnorm(out->dtype, out->data, x->data, w ? w->data : NULL, rows_of(x), C, eps));
}

void sq_groupnorm(sq_tensor *out, const sq_tensor *x, const sq_tensor *w, const sq_tensor *b, int groups, float eps) {
    char b1[96], b2[96];
    SQ_CHECK(x->ndim == 4 && sq_tensor_same_shape(out, x) && groups > 0 && x->shape[1] % groups == 0 &&
                 (!w || sq_tensor_numel(w) == x->shape[1]) && (!b || sq_tensor_numel(b) == x->shape[1]),
             "groupnorm: x %s, out %s, groups %d", desc(x, b1), desc(out, b2), groups);
    int64_t B = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    if (on_cpu("groupnorm", out, x, w, b)) cpu_groupnorm(F(out), CF(x), OPT(w), OPT(b), B, C, HW, groups, eps);
    else CUDA_OR_FAIL("groupnorm", cuda_groupnorm(out->dtype, out->data, x->data, w ? w->data : NULL, b ? b->data : NULL, B, C, HW, groups, eps));
}

static void check_same_numel(const char *op, const sq_tensor *out, const sq_tensor *x) {
    char b1[96], b2[96];
    SQ_CHECK(sq_tensor_numel(out) == sq_tensor_numel(x), "%s: x %s, out %s", op, desc(x, b1), desc(out, b2));
}

void sq_gelu(sq_tensor *out, const sq_tensor *x, bool tanh_approx) {
    check_same_numel("gelu", out, x);
    if (on_cpu("gelu", out, x, NULL, NULL)) cpu_gelu(F(out), CF(x), sq_tensor_numel(x), tanh_approx);
    else CUDA_OR_FAIL("gelu", cuda_gelu(out->dtype, out->data, x->data, sq_tensor_numel(x), tanh_approx));
}

void sq_silu(sq_tensor *out, const sq_tensor *x) {
    check_same_numel("silu", out, x);
    if (on_cpu("silu", out, x, NULL, NULL)) cpu_silu(F(out), CF(x), sq_tensor_numel(x));
    else CUDA_OR_FAIL("silu", cuda_silu(out->dtype, out->data, x->data, sq_tensor_numel(x)));
}

void sq_quick_gelu(sq_tensor *out, const sq_tensor *x) {
    check_same_numel("quick_gelu", out, x);
    if (on_cpu("quick_gelu", out, x, NULL, NULL)) cpu_quick_gelu(F(out), CF(x), sq_tensor_numel(x));
    else CUDA_OR_FAIL("quick_gelu", cuda_quick_gelu(out->dtype, out->data, x->data, sq_tensor_numel(x)));
}

void sq_attention(sq_tensor *out, const sq_tensor *q, const sq_tensor *k, const sq_tensor *v, const sq_tensor *bias,
                  const sq_tensor *key_mask, bool causal, float scale) {
    char b1[96], b2[96], b3[96];
    SQ_CHECK(q->ndim == 4 && k->ndim == 4 && sq_tensor_same_shape(k, v) && sq_tensor_same_shape(out, q) &&
                 k->shape[0] == q->shape[0] && k->shape[2] == q->shape[2] && k->shape[3] == q->shape[3],
             "attention: q %s, k %s, out %s", desc(q, b1), desc(k, b2), desc(out, b3));
    int64_t B = q->shape[0], Tq = q->shape[1], NH = q->shape[2], HS = q->shape[3], Tk = k->shape[1];
    SQ_CHECK(!causal || Tq == Tk, "attention: causal needs Tq == Tk (%lld vs %lld)", (long long)Tq, (long long)Tk);
    SQ_CHECK(!bias || (sq_tensor_numel(bias) == NH * Tq * Tk && bias->device == q->device), "attention: bias must be (NH,Tq,Tk)");
    SQ_CHECK(!key_mask || (key_mask->dtype == SQ_U8 && sq_tensor_numel(key_mask) == B * Tk && key_mask->device == q->device),
             "attention: key_mask must be U8 (B,Tk)");
    if (on_cpu("attention", out, q, k, v)) {
        SQ_CHECK(!bias || bias->dtype == SQ_F32, "attention: CPU bias must be F32");
        cpu_attention(F(out), CF(q), CF(k), CF(v), OPT(bias), key_mask ? (const uint8_t *)key_mask->data : NULL, causal,
                      scale, B, Tq, Tk, NH, HS);
    } else {
        CUDA_OR_FAIL("attention", cuda_attention(out->dtype, out->data, q->data, k->data, v->data, bias ? bias->data : NULL,
                                                 key_mask ? key_mask->data : NULL, causal, scale, B, Tq, Tk, NH, HS));
    }
}

void sq_conv2d(sq_tensor *out, const sq_tensor *x, const sq_tensor *w, const sq_tensor *b, int stride, int pad_top,
               int pad_bottom, int pad_left, int pad_right) {
    char b1[96], b2[96], b3[96];
    SQ_CHECK(x->ndim == 4 && w->ndim == 4 && out->ndim == 4 && w->shape[1] == x->shape[1] && stride > 0,
             "conv2d: x %s, w %s, out %s", desc(x, b1), desc(w, b2), desc(out, b3));
    int64_t B = x->shape[0], Cin = x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t Cout = w->shape[0], KH = w->shape[2], KW = w->shape[3];
    int64_t Ho = (H + pad_top + pad_bottom - KH) / stride + 1, Wo = (W + pad_left + pad_right - KW) / stride + 1;
    SQ_CHECK(out->shape[0] == B && out->shape[1] == Cout && out->shape[2] == Ho && out->shape[3] == Wo &&
                 (!b || sq_tensor_numel(b) == Cout),
             "conv2d: x %s, w %s, out %s (expected %lldx%lld output)", desc(x, b1), desc(w, b2), desc(out, b3),
             (long long)Ho, (long long)Wo);
    if (on_cpu("conv2d", out, x, w, b))
        cpu_conv2d(F(out), CF(x), CF(w), OPT(b), B, Cin, H, W, Cout, KH, KW, stride, pad_top, pad_left, Ho, Wo);
    else
        CUDA_OR_FAIL("conv2d", cuda_conv2d(out->dtype, out->data, x->data, w->data, b ? b->data : NULL, B, Cin, H, W, Cout, KH, KW,
                                           stride, pad_top, pad_bottom, pad_left, pad_right, Ho, Wo));
}

void sq_upsample_nearest2x(sq_tensor *out, const sq_tensor *x) {
    char b1[96], b2[96];
    SQ_CHECK(x->ndim == 4 && out->ndim == 4 && out->shape[0] == x->shape[0] && out->shape[1] == x->shape[1] &&
                 out->shape[2] == 2 * x->shape[2] && out->shape[3] == 2 * x->shape[3],
             "upsample_nearest2x: x %s, out %s", desc(x, b1), desc(out, b2));
    int64_t BC = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    if (on_cpu("upsample", out, x, NULL, NULL)) cpu_upsample_nearest2x(F(out), CF(x), BC, H, W);
    else CUDA_OR_FAIL("upsample", cuda_upsample_nearest2x(out->dtype, out->data, x->data, BC, H, W));
}

static void check_binary(const char *op, const sq_tensor *out, const sq_tensor *a, const sq_tensor *b) {
    char b1[96], b2[96], b3[96];
    SQ_CHECK(sq_tensor_numel(out) == sq_tensor_numel(a) && sq_tensor_numel(out) == sq_tensor_numel(b),
             "%s: a %s, b %s, out %s", op, desc(a, b1), desc(b, b2), desc(out, b3));
}

void sq_add(sq_tensor *out, const sq_tensor *a, const sq_tensor *b) {
    check_binary("add", out, a, b);
    if (on_cpu("add", out, a, b, NULL)) cpu_add(F(out), CF(a), CF(b), sq_tensor_numel(out));
    else CUDA_OR_FAIL("add", cuda_axpby(out->dtype, out->data, 1.0f, a->data, 1.0f, b->data, sq_tensor_numel(out)));
}

void sq_sub(sq_tensor *out, const sq_tensor *a, const sq_tensor *b) {
    check_binary("sub", out, a, b);
    if (on_cpu("sub", out, a, b, NULL)) cpu_sub(F(out), CF(a), CF(b), sq_tensor_numel(out));
    else CUDA_OR_FAIL("sub", cuda_axpby(out->dtype, out->data, 1.0f, a->data, -1.0f, b->data, sq_tensor_numel(out)));
}

void sq_mul(sq_tensor *out, const sq_tensor *a, const sq_tensor *b) {
    check_binary("mul", out, a, b);
    if (on_cpu("mul", out, a, b, NULL)) cpu_mul(F(out), CF(a), CF(b), sq_tensor_numel(out));
    else CUDA_OR_FAIL("mul", cuda_mul(out->dtype, out->data, a->data, b->data, sq_tensor_numel(out)));
}

void sq_scale(sq_tensor *out, const sq_tensor *x, float alpha, float beta) {
    check_same_numel("scale", out, x);
    if (on_cpu("scale", out, x, NULL, NULL)) cpu_scale(F(out), CF(x), alpha, beta, sq_tensor_numel(x));
    else CUDA_OR_FAIL("scale", cuda_scale(out->dtype, out->data, x->data, alpha, beta, sq_tensor_numel(x)));
}

void sq_axpby(sq_tensor *out, float alpha, const sq_tensor *a, float beta, const sq_tensor *b) {
    check_binary("axpby", out, a, b);
    if (on_cpu("axpby", out, a, b, NULL)) cpu_axpby(F(out), alpha, CF(a), beta, CF(b), sq_tensor_numel(out));
    else CUDA_OR_FAIL("axpby", cuda_axpby(out->dtype, out->data, alpha, a->data, beta, b->data, sq_tensor_numel(out)));
}

void sq_fill(sq_tensor *out, float value) {
    if (on_cpu("fill", out, NULL, NULL, NULL)) cpu_fill(F(out), value, sq_tensor_numel(out));
    else CUDA_OR_FAIL("fill", cuda_fill(out->dtype, out->data, value, sq_tensor_numel(out)));
}

// (B,T,C) activations with (B,C) per-sample vectors; T is everything between.
static void btc_of(const char *op, const sq_tensor *x, const sq_tensor *vec, int64_t *B, int64_t *T, int64_t *C) {
    char b1[96], b2[96];
    *C = last_dim(x);
    *B = x->shape[0];
    *T = sq_tensor_numel(x) / (*B * *C);
    SQ_CHECK(x->ndim >= 2 && sq_tensor_numel(vec) == *B * *C, "%s: x %s, vector %s (expected (B,C))", op, desc(x, b1),
             desc(vec, b2));
}

void sq_gated_add(sq_tensor *x, const sq_tensor *gate, const sq_tensor *y) {
    int64_t B, T, C;
    if (gate) btc_of("gated_add", x, gate, &B, &T, &C);
    else { C = last_dim(x); B = 1; T = rows_of(x); }
    check_same_numel("gated_add", x, y);
    if (on_cpu("gated_add", x, gate, y, NULL)) cpu_gated_add(F(x), OPT(gate), CF(y), B, T, C);
    else CUDA_OR_FAIL("gated_add", cuda_gated_add(x->dtype, x->data, gate ? gate->data : NULL, y->data, B, T, C));
}

void sq_layernorm_modulate(sq_tensor *out, const sq_tensor *x, const sq_tensor *shift, const sq_tensor *scale, float eps) {
    int64_t B, T, C;
    btc_of("layernorm_modulate", x, shift, &B, &T, &C);
    btc_of("layernorm_modulate", x, scale, &B, &T, &C);
    check_same_numel("layernorm_modulate", out, x);
    if (on_cpu("layernorm_modulate", out, x, shift, scale))
        cpu_layernorm_modulate(F(out), CF(x), CF(shift), CF(scale), B, T, C, eps);
    else CUDA_OR_FAIL("layernorm_modulate", cuda_layernorm_modulate(out->dtype, out->data, x->data, shift->data, scale->data,
                                                                    B, T, C, eps));
}

void sq_gated_add_layernorm_modulate(sq_tensor *x, const sq_tensor *gate, const sq_tensor *y, sq_tensor *h,
                                     const sq_tensor *shift, const sq_tensor *scale, float eps) {
    const char *op = "gated_add_layernorm_modulate";
    int64_t B, T, C;
    btc_of(op, x, shift, &B, &T, &C);
    btc_of(op, x, scale, &B, &T, &C);
    if (gate) btc_of(op, x, gate, &B, &T, &C);
    check_same_numel(op, x, y);
    check_same_numel(op, h, x);
    SQ_CHECK(h->data != x->data, "%s: h must not alias x", op);
    bool cpu = on_cpu(op, h, x, y, gate);
    on_cpu(op, h, shift, scale, NULL);   // the same device and dtype checks for the vectors
    if (cpu) {
        cpu_gated_add(F(x), OPT(gate), CF(y), B, T, C);
        cpu_layernorm_modulate(F(h), CF(x), CF(shift), CF(scale), B, T, C, eps);
    } else {
        CUDA_OR_FAIL(op, cuda_gated_add_layernorm_modulate(x->dtype, x->data, gate ? gate->data : NULL, y->data, h->data,
                                                           shift->data, scale->data, B, T, C, eps));
    }
}

// ---- layout: everything is a strided copy of a 4-D view ----

// Pads a shape to 4 dims on the left, returning contiguous strides.
static void shape4(const sq_tensor *t, int64_t shape[4], int64_t stride[4], int *offset) {
    int off = 4 - t->ndim;
    for (int i = 0; i < 4; i++) shape[i] = i < off ? 1 : t->shape[i - off];
    int64_t s = 1;
    for (int i = 3; i >= 0; i--) { stride[i] = s; s *= shape[i]; }
    *offset = off;
}

static void strided_copy(sq_tensor *dst, const void *src, const sq_tensor *src_t, const int64_t shape[4],
                         const int64_t st[4]) {
    if (dst->device == SQ_CPU) {
        SQ_CHECK(dst->dtype == SQ_F32 && src_t->dtype == SQ_F32, "layout ops: CPU tensors must be F32");
        cpu_strided_copy(F(dst), src, shape, st);
    } else {
        SQ_CHECK(dst->dtype == src_t->dtype, "layout ops: dtypes differ");
        CUDA_OR_FAIL("layout", cuda_strided_copy(dst->data, src, shape, st, sq_dtype_bytes(dst->dtype, 1)));
    }
}

void sq_copy(sq_tensor *out, const sq_tensor *x) {
    check_same_numel("copy", out, x);
    SQ_CHECK(out->device == x->device, "copy: use sq_tensor_copy between devices");
    if (out->dtype == x->dtype) {
        if (out->data == x->data) return;
        if (out->device == SQ_CPU) memcpy(out->data, x->data, sq_tensor_nbytes(x));
        else CUDA_OR_FAIL("copy", cuda_copy(out->data, x->data, sq_tensor_nbytes(x)));
        return;
    }
    if (out->device == SQ_CPU) {
        SQ_CHECK(sq_tensor_copy(out, x) == SQ_OK, "copy: %s", sq_error_message());
    } else {
        CUDA_OR_FAIL("copy", cuda_convert(out->data, out->dtype, x->data, x->dtype, sq_tensor_numel(x)));
    }
}

void sq_concat(sq_tensor *out, const sq_tensor *const *xs, int n, int dim) {
    char b1[96], b2[96];
    SQ_CHECK(n > 0 && dim >= 0 && dim < out->ndim, "concat: bad dim %d or count %d", dim, n);
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        SQ_CHECK(xs[i]->ndim == out->ndim && xs[i]->device == out->device, "concat: input %d %s vs out %s", i,
                 desc(xs[i], b1), desc(out, b2));
        for (int d = 0; d < out->ndim; d++)
            SQ_CHECK(d == dim || xs[i]->shape[d] == out->shape[d], "concat: input %d %s vs out %s", i, desc(xs[i], b1),
                     desc(out, b2));
        total += xs[i]->shape[dim];
    }
    SQ_CHECK(total == out->shape[dim], "concat: sizes along dim %d add to %lld, out has %lld", dim, (long long)total,
             (long long)out->shape[dim]);
    // Each input is copied into a strided window of out: view out as
    // (outer, out_dim, inner) and write the input's (outer, in_dim, inner) block.
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < dim; d++) outer *= out->shape[d];
    for (int d = dim + 1; d < out->ndim; d++) inner *= out->shape[d];
    int64_t offset = 0;
    size_t es = sq_dtype_bytes(out->dtype, 1);
    for (int i = 0; i < n; i++) {
        int64_t len = xs[i]->shape[dim];
        if (out->device == SQ_CUDA) {   // one pitched copy: outer rows of len·inner elements
            SQ_CHECK(xs[i]->dtype == out->dtype, "concat: dtypes differ");
            CUDA_OR_FAIL("layout", cuda_copy_2d((char *)out->data + offset * inner * (int64_t)es,
                                                out->shape[dim] * inner * (int64_t)es, xs[i]->data,
                                                len * inner * (int64_t)es, len * inner * (int64_t)es, outer));
            offset += len;
            continue;
        }
        // dst window is not contiguous, so copy per outer slice as a 4-D copy from the
        // contiguous input into a temporary view: iterate outer slices here.
        for (int64_t o = 0; o < outer; o++) {
            sq_tensor dst = sq_tensor_view((char *)out->data + ((o * out->shape[dim] + offset) * inner) * (int64_t)es,
                                           out->dtype, out->device, 1, SQ_SHAPE(len * inner));
            const void *src = (const char *)xs[i]->data + (o * len * inner) * (int64_t)es;
            int64_t shape[4] = {1, 1, 1, len * inner}, st[4] = {0, 0, 0, 1};
            strided_copy(&dst, src, xs[i], shape, st);
        }
        offset += len;
    }
}

void sq_slice(sq_tensor *out, const sq_tensor *x, int dim, int64_t start) {
    char b1[96], b2[96];
    SQ_CHECK(out->ndim == x->ndim && dim >= 0 && dim < x->ndim && start >= 0 &&
                 start + out->shape[dim] <= x->shape[dim] && out->device == x->device,
             "slice: x %s, out %s, dim %d, start %lld", desc(x, b1), desc(out, b2), dim, (long long)start);
    for (int d = 0; d < x->ndim; d++)
        SQ_CHECK(d == dim || out->shape[d] == x->shape[d], "slice: x %s, out %s", desc(x, b1), desc(out, b2));
    if (x->device == SQ_CUDA) {   // one pitched copy: outer rows of len·inner elements
        SQ_CHECK(out->dtype == x->dtype, "slice: dtypes differ");
        int64_t outer = 1, inner = 1;
        for (int d = 0; d < dim; d++) outer *= x->shape[d];
        for (int d = dim + 1; d < x->ndim; d++) inner *= x->shape[d];
        int64_t es = (int64_t)sq_dtype_bytes(x->dtype, 1);
        (void)es;   // a CPU-only build compiles no CUDA call
        CUDA_OR_FAIL("layout", cuda_copy_2d(out->data, out->shape[dim] * inner * es,
                                            (const char *)x->data + start * inner * es, x->shape[dim] * inner * es,
                                            out->shape[dim] * inner * es, outer));
        return;
    }
    int64_t xs[4], xst[4], os[4], ost[4];
    int off;
    shape4(x, xs, xst, &off);
    shape4(out, os, ost, &off);
    size_t es = sq_dtype_bytes(x->dtype, 1);
    const char *src = (const char *)x->data + start * xst[dim + off] * (int64_t)es;
    strided_copy(out, src, x, os, xst);
}

void sq_permute(sq_tensor *out, const sq_tensor *x, const int *perm) {
    char b1[96], b2[96];
    SQ_CHECK(out->ndim == x->ndim && out->device == x->device, "permute: x %s, out %s", desc(x, b1), desc(out, b2));
    int64_t xs[4], xst[4];
    int off;
    shape4(x, xs, xst, &off);
    int64_t shape[4] = {1, 1, 1, 1}, st[4] = {0, 0, 0, 0};
    int o = 4 - out->ndim;
    for (int i = 0; i < out->ndim; i++) {
        SQ_CHECK(perm[i] >= 0 && perm[i] < x->ndim && out->shape[i] == x->shape[perm[i]],
                 "permute: x %s, out %s, perm[%d] = %d", desc(x, b1), desc(out, b2), i, perm[i]);
        shape[i + o] = out->shape[i];
        st[i + o] = xst[perm[i] + off];
    }
    strided_copy(out, x->data, x, shape, st);
}

void sq_embedding(sq_tensor *out, const sq_tensor *table, const int32_t *ids) {
    char b1[96], b2[96];
    int64_t C = last_dim(out), N = rows_of(out);
    SQ_CHECK(table->ndim == 2 && table->shape[1] == C && (N == 0 || ids), "embedding: table %s, out %s",
             desc(table, b1), desc(out, b2));
    for (int64_t i = 0; i < N; i++)
        SQ_CHECK(ids[i] >= 0 && ids[i] < table->shape[0], "embedding: id %d at %lld outside the table's %lld rows",
                 (int)ids[i], (long long)i, (long long)table->shape[0]);
    if (on_cpu("embedding", out, table, NULL, NULL)) cpu_embedding(F(out), CF(table), ids, N, C);
    else CUDA_OR_FAIL("embedding", cuda_embedding(out->dtype, out->data, table->data, ids, N, C));
}

double sq_mse(const sq_tensor *a, const sq_tensor *b) {
    check_binary("mse", a, a, b);
    int64_t n = sq_tensor_numel(a);
    if (a->device == SQ_CPU) {
        SQ_CHECK(a->dtype == SQ_F32 && b->dtype == SQ_F32, "mse: CPU tensors must be F32");
        return cpu_sum_sq_diff(CF(a), CF(b), n) / (double)n;
    }
    double sum = 0;
    CUDA_OR_FAIL("mse", sum = cuda_sum_sq_diff(a->data, a->dtype, b->data, b->dtype, n));
    return sum / (double)n;
}

double sq_weighted_mse(const sq_tensor *a, const sq_tensor *b, const sq_tensor *w) {
    char b1[96], b2[96], b3[96];
    int64_t n = sq_tensor_numel(a), P = sq_tensor_numel(w);
    SQ_CHECK(n == sq_tensor_numel(b) && P > 0 && n % P == 0, "weighted_mse: a %s, b %s, w %s", desc(a, b1), desc(b, b2),
             desc(w, b3));
    SQ_CHECK(a->device == b->device && a->device == w->device, "weighted_mse: tensors on different devices");
    SQ_CHECK(w->dtype == SQ_F32, "weighted_mse: the weights must be F32, got %s", sq_dtype_name(w->dtype));
    int64_t C = n / P;
    double wsum = 0, sum = 0;
    if (a->device == SQ_CPU) {
        SQ_CHECK(a->dtype == SQ_F32 && b->dtype == SQ_F32, "weighted_mse: CPU tensors must be F32");
        sum = cpu_weighted_sum_sq_diff(CF(a), CF(b), CF(w), C, P, &wsum);
    } else {
        SQ_CHECK((a->dtype == SQ_BF16 || a->dtype == SQ_F32) && b->dtype == a->dtype,
                 "weighted_mse: CUDA tensors must be BF16 or F32 and alike");
        CUDA_OR_FAIL("weighted_mse", sum = cuda_weighted_sum_sq_diff(a->data, a->dtype, b->data, b->dtype, CF(w), C, P, &wsum));
    }
    return wsum > 0 ? sum / ((double)C * wsum) : NAN;
}

void sq_set_num_threads(int n) { cpu_set_num_threads(n); }
