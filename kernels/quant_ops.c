// kernels/quant_ops.c: device dispatch for the quantised ops of kernels/quant.h, by
// the rule at the head of kernels/ops.c.
#include "kernels/quant.h"

#include <stdlib.h>

#include "core/error.h"
#include "kernels/cpu/cpu_quant.h"
#include "kernels/dispatch.h"
#include "kernels/ops.h"

static void check_quantize(const char *op, sq_dtype dtype, int64_t k, int group) {
    SQ_CHECK(dtype == SQ_F32 || dtype == SQ_BF16 || dtype == SQ_F16, "%s: weights must be F32, BF16 or F16", op);
    SQ_CHECK(group >= 2 && group <= SQ_Q4_MAX_GROUP && group % 2 == 0 && k % group == 0,
             "%s: K=%lld and group %d", op, (long long)k, group);
}

double sq_quantize_q4(const float *w, int64_t nout, int64_t k, int group, uint8_t *codes, float *scales) {
    check_quantize("quantize_q4", SQ_F32, k, group);
    return cpu_quantize_q4(w, nout, k, group, codes, scales);
}

int sq_quantize_q4_threads(void) { return cpu_quantize_threads(); }

double sq_quantize_q4_src(const void *w, sq_dtype dtype, int64_t nout, int64_t k, int group, uint8_t *codes,
                          float *scales, double *energy) {
    check_quantize("quantize_q4", dtype, k, group);
    return cpu_quantize_q4_src(w, dtype, nout, k, group, codes, scales, energy);
}

int sq_quantize_q4_cuda(const void *w, sq_dtype dtype, int64_t nout, int64_t k, int group, uint8_t *codes,
                        float *scales, double *err, double *energy) {
    check_quantize("quantize_q4_cuda", dtype, k, group);
    int rc = SQ_FAIL;
    CUDA_OR_FAIL("quantize_q4", rc = cuda_quantize_q4(w, dtype, nout, k, group, codes, scales, err, energy));
    return rc;
}

void sq_qlinear_check_layer(const char *op, const sq_tensor *codes, const sq_tensor *scales, int group) {
    SQ_CHECK(codes->dtype == SQ_Q4 && codes->ndim == 2, "%s: codes must be Q4 (Nout, K)", op);
    SQ_CHECK(scales->dtype == SQ_F32 && scales->ndim == 2, "%s: scales must be F32 (Nout, K/G)", op);
    SQ_CHECK(group > 0 && codes->shape[1] % group == 0, "%s: K=%lld not a multiple of group %d", op,
             (long long)codes->shape[1], group);
    SQ_CHECK(scales->shape[0] == codes->shape[0] && scales->shape[1] == codes->shape[1] / group,
             "%s: scales shape does not match codes and group", op);
    SQ_CHECK(codes->device == scales->device, "%s: codes and scales on different devices", op);
}

void sq_dequant_q4(sq_tensor *out, const sq_tensor *codes, const sq_tensor *scales, int group, const sq_perturb *p) {
    sq_qlinear_check_layer("dequant_q4", codes, scales, group);
    SQ_CHECK(out->ndim == 2 && out->shape[0] == codes->shape[0] && out->shape[1] == codes->shape[1],
             "dequant_q4: out must be (Nout, K)");
    SQ_CHECK(out->device == codes->device, "dequant_q4: out on another device");
    if (out->device == SQ_CPU) {
        SQ_CHECK(out->dtype == SQ_F32, "dequant_q4: CPU out must be F32");
        cpu_dequant_q4(out->data, codes->data, scales->data, codes->shape[0], codes->shape[1], group, p);
        return;
    }
    SQ_CHECK(out->dtype == SQ_BF16, "dequant_q4: CUDA out must be BF16");
    CUDA_OR_FAIL("dequant_q4", cuda_dequant_q4(out->data, codes->data, scales->data, codes->shape[0], codes->shape[1],
                                               group, p));
}

// True when the CUDA int4 GEMV can take y = x·Wᵀ + b: few rows, bf16 activations.
// (A query that picks the path, so it tests the build itself; the GEMV call below
// goes through CUDA_OR_FAIL like every other.)
bool sq_qlinear_uses_gemv(const sq_tensor *out, const sq_tensor *x, const sq_tensor *codes, const sq_tensor *b,
                          int group) {
#ifdef SQ_HAVE_CUDA
    if (x->device != SQ_CUDA || x->dtype != SQ_BF16 || out->dtype != SQ_BF16 || (b && b->dtype != SQ_BF16)) return false;
    int64_t k = codes->shape[1];
    if (x->ndim < 1 || x->shape[x->ndim - 1] != k) return false;
    return cuda_qgemv_q4_supported(x->data, codes->data, sq_tensor_numel(x) / k, k, group);
#else
    (void)out; (void)x; (void)codes; (void)b; (void)group;
    return false;
#endif
}

void sq_qlinear(sq_tensor *out, const sq_tensor *x, const sq_tensor *codes, const sq_tensor *scales,
                const sq_tensor *b, int group, const sq_perturb *p, sq_tensor *w_scratch, bool gelu) {
    if (sq_qlinear_uses_gemv(out, x, codes, b, group)) {
        sq_qlinear_check_layer("qlinear", codes, scales, group);
        int64_t k = codes->shape[1], nout = codes->shape[0], rows = sq_tensor_numel(x) / k;
        SQ_CHECK(sq_tensor_numel(out) == rows * nout && (!b || sq_tensor_numel(b) == nout) && codes->device == SQ_CUDA &&
                     out->device == SQ_CUDA,
                 "qlinear: out, bias or weights do not match x (%lld rows) and the layer (%lld x %lld)",
                 (long long)rows, (long long)nout, (long long)k);
        CUDA_OR_FAIL("qgemv_q4", cuda_qgemv_q4(out->data, x->data, codes->data, scales->data, b ? b->data : NULL, rows,
                                               nout, k, group, p));
        if (gelu) sq_gelu(out, out, true);   // the GEMV has no GELU epilogue
        return;
    }
    sq_dequant_q4(w_scratch, codes, scales, group, p);
    if (gelu) sq_matmul_gelu(out, x, w_scratch, b);
    else sq_matmul(out, x, w_scratch, b);
}

void sq_qzo_update(sq_tensor *scales, const sq_perturb *p, float coeff) {
    SQ_CHECK(scales->dtype == SQ_F32, "qzo_update: scales must be F32");
    if (scales->device == SQ_CPU) {
        cpu_qzo_update(scales->data, sq_tensor_numel(scales), p, coeff);
        return;
    }
    CUDA_OR_FAIL("qzo_update", cuda_qzo_update(scales->data, sq_tensor_numel(scales), p, coeff));
}

void sq_qzo_update_terms(sq_tensor *const *scales, const uint64_t *index_base, int n_layers, const sq_perturb *terms,
                         const float *coeffs, int n_terms) {
    SQ_CHECK(n_layers >= 0 && n_terms >= 0, "qzo_update_terms: %d layers, %d terms", n_layers, n_terms);
    if (n_layers == 0 || n_terms == 0) return;
    sq_device dev = scales[0]->device;
    for (int l = 0; l < n_layers; l++) {
        SQ_CHECK(scales[l]->dtype == SQ_F32, "qzo_update_terms: layer %d's scales must be F32", l);
        SQ_CHECK(scales[l]->device == dev, "qzo_update_terms: layer %d's scales are on %s, layer 0's on %s: all must be "
                 "on one device", l, scales[l]->device == SQ_CPU ? "the CPU" : "CUDA", dev == SQ_CPU ? "the CPU" : "CUDA");
    }
    float **data = malloc((size_t)n_layers * sizeof *data);
    int64_t *counts = malloc((size_t)n_layers * sizeof *counts);
    SQ_CHECK(data && counts, "qzo_update_terms: out of memory for a list of %d layers", n_layers);
    for (int l = 0; l < n_layers; l++) {
        data[l] = scales[l]->data;
        counts[l] = sq_tensor_numel(scales[l]);
    }
    if (dev == SQ_CPU) cpu_qzo_update_terms(data, counts, index_base, n_layers, terms, coeffs, n_terms);
    else CUDA_OR_FAIL("qzo_update_terms", cuda_qzo_update_terms(data, counts, index_base, n_layers, terms, coeffs, n_terms));
    free(counts);
    free(data);
}

void sq_ema_update(sq_tensor *ema, const sq_tensor *scales, float beta) {
    SQ_CHECK(ema->dtype == SQ_F32 && scales->dtype == SQ_F32, "ema_update: EMA and scales must be F32");
    SQ_CHECK(sq_tensor_numel(ema) == sq_tensor_numel(scales) && ema->device == scales->device,
             "ema_update: the EMA must match the scales' size and device");
    if (ema->device == SQ_CPU) {
        cpu_ema_update(ema->data, scales->data, sq_tensor_numel(ema), beta);
        return;
    }
    CUDA_OR_FAIL("ema_update", cuda_ema_update(ema->data, scales->data, sq_tensor_numel(ema), beta));
}
