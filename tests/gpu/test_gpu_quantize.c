// tests/gpu/test_gpu_quantize.c: the CUDA int4 quantiser (kernels/cuda/quantize.cu)
// against the CPU: codes, scales, the total squared error and the energy, bit for
// bit, against both the old plain reference (tests/quant_ref.h) and the threaded,
// division-free CPU path (sq_quantize_q4_src), on poisoned outputs, at G = 32, 64
// and 128, from f32, bf16 and f16 storage:
// - hard groups (qr_fill_hard): all zeros (±0), zeros with a NaN, inf, NaN beside
//   finite weights, bf16 subnormals and tiny normals (scales that underflow),
//   random bf16 bit patterns of every exponent, weights on and within ulps of the
//   rounding boundaries, outliers, |w| up to FLT_MAX; and the same kept finite, so
//   the total error's bits are compared too;
// - an SD3.5-Large-shaped MLP slice (2432 x 9728 columns, Gaussian-like, bf16).
// Skips (exit 77) without a GPU.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/error.h"
#include "kernels/backend.h"
#include "kernels/quant.h"
#include "tests/quant_ref.h"
#include "tests/test_util.h"

static bool same_double(double a, double b) { return (isnan(a) && isnan(b)) || !memcmp(&a, &b, sizeof a); }

static void compare(const char *what, const void *src, sq_dtype dtype, const float *w32, int64_t nout, int64_t k,
                    int group) {
    int64_t n = nout * k, ng = n / group;
    uint8_t *c_ref = malloc((size_t)n / 2), *c_cpu = malloc((size_t)n / 2), *c_gpu = malloc((size_t)n / 2);
    float *s_ref = malloc(4 * (size_t)ng), *s_cpu = malloc(4 * (size_t)ng), *s_gpu = malloc(4 * (size_t)ng);
    if (!c_ref || !c_cpu || !c_gpu || !s_ref || !s_cpu || !s_gpu) {
        TU_CHECK(0, "allocation");
        return;
    }
    double e_ref = ref_quantize_q4(w32, nout, k, group, c_ref, s_ref);
    double en_cpu = 0, e_cpu = sq_quantize_q4_src(src, dtype, nout, k, group, c_cpu, s_cpu, &en_cpu);
    memset(c_gpu, 0xa5, (size_t)n / 2);
    tu_poison(s_gpu, ng);
    double e_gpu = NAN, en_gpu = NAN;
    int rc = sq_quantize_q4_cuda(src, dtype, nout, k, group, c_gpu, s_gpu, &e_gpu, &en_gpu);
    TU_CHECK(rc == SQ_OK, "%s: %s", what, sq_error_message());
    int64_t bad_c = 0, bad_s = 0, bad_c_cpu = 0, zero = 0;
    for (int64_t i = 0; i < n / 2; i++) {
        bad_c += c_gpu[i] != c_ref[i];
        bad_c_cpu += c_cpu[i] != c_ref[i];
    }
    for (int64_t g = 0; g < ng; g++) {
        bad_s += memcmp(&s_gpu[g], &s_ref[g], 4) != 0;
        zero += s_ref[g] == 0;
    }
    TU_CHECK(bad_c == 0 && bad_s == 0, "%s, G=%d: GPU differs from the reference in %lld code bytes, %lld scales", what,
             group, (long long)bad_c, (long long)bad_s);
    TU_CHECK(bad_c_cpu == 0 && !memcmp(s_cpu, s_ref, 4 * (size_t)ng), "%s, G=%d: CPU path differs from the reference",
             what, group);
    TU_CHECK(same_double(e_gpu, e_ref) && same_double(e_cpu, e_ref), "%s, G=%d: total error GPU %.17g CPU %.17g ref %.17g",
             what, group, e_gpu, e_cpu, e_ref);
    TU_CHECK(same_double(en_gpu, en_cpu), "%s, G=%d: energy GPU %.17g CPU %.17g", what, group, en_gpu, en_cpu);
    printf("%s, G=%d: %lld groups (%lld scale 0), total error %.6g: GPU = CPU = reference, bit for bit\n", what, group,
           (long long)ng, (long long)zero, e_ref);
    free(c_ref); free(c_cpu); free(c_gpu);
    free(s_ref); free(s_cpu); free(s_gpu);
}

int main(void) {
    if (sq_cuda_device_count() == 0) {
        printf("SKIP: no CUDA GPU\n");
        return 77;
    }
    sq_device dev;
    if (sq_backend_select(SQ_DEVICE_CUDA, &dev) != SQ_OK) {
        fprintf(stderr, "%s\n", sq_error_message());
        return 1;
    }
    const int64_t nout = 40, k = 1280;
    float *w = malloc(sizeof(float) * nout * k), *w16 = malloc(sizeof(float) * nout * k);
    uint16_t *h = malloc(2 * (size_t)(nout * k));
    if (!w || !w16 || !h) return 1;
    for (int group = 32; group <= 128; group *= 2)
        for (int finite = 0; finite <= 1; finite++) {
            qr_fill_hard(w, nout, k, group, (uint64_t)(group + 7 * finite), finite);
            compare(finite ? "hard finite groups, f32" : "hard groups, f32", w, SQ_F32, w, nout, k, group);
            for (int64_t i = 0; i < nout * k; i++) {
                h[i] = sq_f32_to_bf16(w[i]);
                w16[i] = sq_bf16_to_f32(h[i]);
            }
            compare(finite ? "hard finite groups, bf16" : "hard groups, bf16", h, SQ_BF16, w16, nout, k, group);
            for (int64_t i = 0; i < nout * k; i++) {
                h[i] = sq_f32_to_f16(w[i]);
                w16[i] = sq_f16_to_f32(h[i]);
            }
            compare(finite ? "hard finite groups, f16" : "hard groups, f16", h, SQ_F16, w16, nout, k, group);
        }
    free(w); free(w16); free(h);

    enum { NOUT = 2432, K = 9728 / 4 };   // a quarter of an MLP's rows' width keeps the reference quick
    float *lw = malloc(sizeof(float) * NOUT * K);
    uint16_t *lb = malloc(2 * (size_t)NOUT * K);
    if (!lw || !lb) return 1;
    uint64_t rs = 3;
    for (int64_t i = 0; i < (int64_t)NOUT * K; i++) {
        lb[i] = sq_f32_to_bf16(0.02f * (tu_uniform(&rs, -1, 1) + tu_uniform(&rs, -1, 1) + tu_uniform(&rs, -1, 1)));
        lw[i] = sq_bf16_to_f32(lb[i]);
    }
    compare("2432x2432 Gaussian-like, bf16", lb, SQ_BF16, lw, NOUT, K, 64);
    free(lw); free(lb);
    return tu_finish("test_gpu_quantize");
}
