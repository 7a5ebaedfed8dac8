// tests/unit/test_quant_fast.c: the threaded, division-free int4 quantiser of
// kernels/cpu/quant.c is bit-identical to the plain reference it replaced
// (tests/quant_ref.h): codes, scales and the returned squared error.
// - one weight's code, cpu_q4_code against the division, exhaustively over every
//   bf16 value at the 26 clipping ratios' scales of 100 group maxima spanning the
//   float range (subnormal to FLT_MAX), and over f32 weights within ±6 ulps of every
//   rounding boundary (m + ½)·s;
// - whole matrices of hard groups (qr_fill_hard: zeros, NaN, inf, subnormals,
//   outliers, weights on rounding boundaries, FLT_MAX) at G = 16, 32, 64, 128, from f32,
//   and from bf16 and f16 storage against the reference on the widened weights, on
//   poisoned outputs;
// - Gaussian weights of an SD3.5-Large-shaped layer (2432 x 2432, G = 64).
// With argument "generic" the portable inner loop is tested instead of the AVX2 one.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "kernels/cpu/cpu_quant.h"
#include "kernels/quant.h"
#include "tests/quant_ref.h"
#include "tests/test_util.h"

static void test_codes_exhaustive(void) {
    uint64_t rs = 5;
    int64_t checked = 0, mismatched = 0, divided = 0;
    for (int a = 0; a < 100; a++) {
        // group maxima from 2^-149 (subnormal) to FLT_MAX, plus random mantissas
        float amax = ldexpf(1.0f + qr_unit(&rs), -149 + (int)((a * 277) / 100));
        if (a == 99) amax = FLT_MAX;
        for (int j = 0; j < SQ_Q4_RATIOS; j++) {
            float s = amax * (float)(100 - 2 * j) / 100.0f / 7.0f, inv = 1.0f / s;
            int slow = !(s >= CPU_Q4_SAFE_S_MIN && s <= CPU_Q4_SAFE_S_MAX);
            for (uint32_t b = 0; b < 65536; b++) {
                uint32_t u = b << 16;
                float x;
                memcpy(&x, &u, 4);
                int want = (int)cpu_q4_code_div(x, s), got = (int)cpu_q4_code(x, s, inv, slow);
                mismatched += want != got;
                checked++;
            }
            for (int m = -8; m <= 7; m++) {   // f32 weights on and beside every boundary
                float v0 = ((float)m + 0.5f) * s;
                for (int d = -6; d <= 6; d++) {
                    float x = v0;
                    for (int e = d; e > 0; e--) x = nextafterf(x, INFINITY);
                    for (int e = d; e < 0; e++) x = nextafterf(x, -INFINITY);
                    int want = (int)cpu_q4_code_div(x, s), got = (int)cpu_q4_code(x, s, inv, slow);
                    float t = x * inv;
                    divided += !slow && fabsf(t - rintf(t)) >= CPU_Q4_NEAR_HALF;
                    mismatched += want != got;
                    checked++;
                }
            }
        }
    }
    printf("one code: %lld (weight, scale) pairs, %lld mismatches (%lld boundary pairs took the division)\n",
           (long long)checked, (long long)mismatched, (long long)divided);
    TU_CHECK(mismatched == 0, "cpu_q4_code differs from the division in %lld cases", (long long)mismatched);
    TU_CHECK(divided > 0, "the boundary cases must exercise the division fallback");
}

// The fast path against the reference on W; src is W as stored (dtype), w32 its
// widened values, which the reference reads.
static void compare(const char *what, const void *src, sq_dtype dtype, const float *w32, int64_t nout, int64_t k,
                    int group) {
    int64_t n = nout * k, ng = n / group;
    uint8_t *c_ref = malloc((size_t)n / 2), *c_fast = malloc((size_t)n / 2);
    float *s_ref = malloc((size_t)ng * sizeof(float)), *s_fast = malloc((size_t)ng * sizeof(float));
    TU_CHECK(c_ref && c_fast && s_ref && s_fast, "allocation");
    if (!c_ref || !c_fast || !s_ref || !s_fast) return;
    double e_ref = ref_quantize_q4(w32, nout, k, group, c_ref, s_ref);
    memset(c_fast, 0xa5, (size_t)n / 2);
    tu_poison(s_fast, ng);
    double energy = NAN;
    double e_fast = dtype == SQ_F32 ? sq_quantize_q4(w32, nout, k, group, c_fast, s_fast)
                                    : sq_quantize_q4_src(src, dtype, nout, k, group, c_fast, s_fast, &energy);
    int64_t bad_codes = 0, bad_scales = 0, zero_scales = 0, nonfinite_err = 0;
    for (int64_t i = 0; i < n / 2; i++) bad_codes += c_ref[i] != c_fast[i];
    for (int64_t g = 0; g < ng; g++) {
        bad_scales += memcmp(&s_ref[g], &s_fast[g], 4) != 0;
        zero_scales += s_ref[g] == 0;
    }
    nonfinite_err += !isfinite(e_ref);
    TU_CHECK(bad_codes == 0 && bad_scales == 0, "%s, G=%d: %lld code bytes and %lld scales differ", what, group,
             (long long)bad_codes, (long long)bad_scales);
    TU_CHECK(memcmp(&e_ref, &e_fast, sizeof e_ref) == 0, "%s, G=%d: total error %.17g vs reference %.17g", what, group,
             e_fast, e_ref);
    if (dtype != SQ_F32) {
        double want = 0;   // the energy: per group in order, then groups in order
        for (int64_t g = 0; g < ng; g++) {
            double e = 0;
            for (int i = 0; i < group; i++) e += (double)w32[g * group + i] * w32[g * group + i];
            want += e;
        }
        TU_CHECK(memcmp(&want, &energy, sizeof want) == 0, "%s, G=%d: energy %.17g vs %.17g", what, group, energy, want);
    }
    printf("%s, G=%d: %lld groups (%lld with scale 0), total error %s, identical\n", what, group, (long long)ng,
           (long long)zero_scales, nonfinite_err ? "not finite (inf/NaN weights)" : "finite");
    free(c_ref);
    free(c_fast);
    free(s_ref);
    free(s_fast);
}

static void test_hard_matrices(void) {
    const int64_t nout = 40, k = 1280;   // 800 groups of 64: every kind of qr_fill_hard many times
    float *w = malloc(sizeof(float) * nout * k), *w16 = malloc(sizeof(float) * nout * k);
    uint16_t *bf = malloc(2 * (size_t)(nout * k)), *hf = malloc(2 * (size_t)(nout * k));
    TU_CHECK(w && w16 && bf && hf, "allocation");
    if (!w || !w16 || !bf || !hf) return;
    for (int group = 16; group <= 128; group *= 2) {   // 16: test_gpu_quant's dequantisation uses it
        qr_fill_hard(w, nout, k, group, (uint64_t)group + 1000, 1);
        compare("hard finite groups, f32", w, SQ_F32, w, nout, k, group);
        qr_fill_hard(w, nout, k, group, (uint64_t)group, 0);
        compare("hard groups, f32", w, SQ_F32, w, nout, k, group);
        for (int64_t i = 0; i < nout * k; i++) {
            bf[i] = sq_f32_to_bf16(w[i]);
            w16[i] = sq_bf16_to_f32(bf[i]);
        }
        compare("hard groups, bf16", bf, SQ_BF16, w16, nout, k, group);
        for (int64_t i = 0; i < nout * k; i++) {
            hf[i] = sq_f32_to_f16(w[i]);
            w16[i] = sq_f16_to_f32(hf[i]);
        }
        compare("hard groups, f16", hf, SQ_F16, w16, nout, k, group);
    }
    free(w);
    free(w16);
    free(bf);
    free(hf);
}

static void test_large_shaped(void) {
    enum { NOUT = 2432, K = 2432 };
    float *w = malloc(sizeof(float) * NOUT * K);
    TU_CHECK(w != NULL, "allocation");
    if (!w) return;
    uint64_t rs = 11;
    for (int64_t i = 0; i < (int64_t)NOUT * K; i++)
        w[i] = 0.02f * (tu_uniform(&rs, -1, 1) + tu_uniform(&rs, -1, 1) + tu_uniform(&rs, -1, 1));
    compare("2432x2432 Gaussian-like, f32", w, SQ_F32, w, NOUT, K, 64);
    free(w);
}

int main(int argc, char **argv) {
    // "generic": the portable inner loop, not the AVX2 one (read at the first call)
    if (argc > 1 && !strcmp(argv[1], "generic")) setenv("SQ_QUANTIZE_GENERIC", "1", 1);
    printf("inner loop: %s\n", cpu_quantize_isa());
    test_codes_exhaustive();
    test_hard_matrices();
    test_large_shaped();
    return tu_finish("test_quant_fast");
}
