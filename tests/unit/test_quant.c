// tests/unit/test_quant.c: int4 quantisation and the QZO scale ops on the CPU.
// - quantiser: codes in [-7, 7], error no worse than plain absmax rounding, and the
//   clipping search finds the best ratio (checked by brute force in double);
// - fused perturbed dequantisation == dequantise, then perturb the scales by hand;
// - the update touches every scale exactly as s = max(s - c z, 0), or relative
//   max(s (1 - c z), 0), and its undo (sign -1) restores the scales.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/quant.h"
#include "kernels/rng.h"
#include "tests/test_util.h"

static int code_at(const uint8_t *c, int64_t i) {
    int v = (i & 1) ? c[i >> 1] >> 4 : c[i >> 1] & 15;
    return v >= 8 ? v - 16 : v;
}

// Squared error of plain absmax rounding (scale = group max / 7), the baseline the
// clipping search must not lose to.
static double absmax_sq_error(const float *w, int64_t n, int group) {
    double err = 0;
    for (int64_t g = 0; g < n / group; g++) {
        float amax = 0;
        for (int i = 0; i < group; i++) amax = fmaxf(amax, fabsf(w[g * group + i]));
        float sa = amax / 7;
        for (int i = 0; i < group; i++) {
            float x = w[g * group + i];
            double qa = sa > 0 ? fmin(fmax(rint(x / sa), -7), 7) : 0;
            err += pow(x - qa * sa, 2);
        }
    }
    return err;
}

// An SD3.5-Large-shaped layer (hidden 2432: attention q/k/v/out are 2432x2432) with
// Gaussian weights (std 0.02, about what trained transformer linears hold), at every
// selectable group size: the relative RMS error must beat plain absmax rounding and
// sit where 4-bit Gaussian quantisation theory puts it (roughly 0.09-0.14).
static void test_large_shaped_layer(void) {
    enum { NOUT = 2432, K = 2432 };
    float *w = malloc(sizeof(float) * NOUT * K);
    uint8_t *codes = malloc(NOUT * K / 2);
    float *scales = malloc(sizeof(float) * NOUT * (K / 32));
    TU_CHECK(w && codes && scales, "allocation");
    if (!w || !codes || !scales) return;
    uint64_t rs = 2432;
    for (int64_t i = 0; i < (int64_t)NOUT * K; i += 2) {   // Box-Muller pairs
        float u1 = tu_uniform(&rs, 1e-7f, 1.0f), u2 = tu_uniform(&rs, 0.0f, 1.0f);
        float r = 0.02f * sqrtf(-2.0f * logf(u1));
        w[i] = r * cosf(6.2831853f * u2);
        w[i + 1] = r * sinf(6.2831853f * u2);
    }
    double energy = 0;
    for (int64_t i = 0; i < (int64_t)NOUT * K; i++) energy += (double)w[i] * w[i];
    for (int group = 32; group <= 128; group *= 2) {
        double err = sq_quantize_q4(w, NOUT, K, group, codes, scales);
        double err_absmax = absmax_sq_error(w, (int64_t)NOUT * K, group);
        double rel = sqrt(err / energy), rel_absmax = sqrt(err_absmax / energy);
        printf("SD3.5-Large-shaped layer 2432x2432, N(0, 0.02), group %3d: relative RMS error %.4f (absmax rounding %.4f)\n",
               group, rel, rel_absmax);
        TU_CHECK(err <= err_absmax * (1 + 1e-9), "group %d: clip search worse than absmax", group);
        TU_CHECK(rel > 0.05 && rel < 0.16, "group %d: relative RMS error %.4f outside the expected 4-bit range", group, rel);
    }
    free(w);
    free(codes);
    free(scales);
}

int main(void) {
    test_large_shaped_layer();
    const int64_t nout = 7, k = 192;
    uint64_t rs = 99;
    float w[7 * 192];
    for (int64_t i = 0; i < nout * k; i++) w[i] = tu_uniform(&rs, -0.05f, 0.05f);
    w[5] = 0.4f;                                   // an outlier: clipping should help its group
    for (int i = 0; i < 64; i++) w[64 * 3 + i] = 0; // an all-zero group (row 1, group 0)
    for (int group = 32; group <= 64; group *= 2) {
        int64_t ng = k / group;
        uint8_t codes[7 * 192 / 2];
        float scales[7 * 192 / 32];
        double err = sq_quantize_q4(w, nout, k, group, codes, scales);
        int out_of_range = 0;
        double err_check = 0, err_absmax = absmax_sq_error(w, nout * k, group);
        for (int64_t n = 0; n < nout; n++)
            for (int64_t g = 0; g < ng; g++)
                for (int i = 0; i < group; i++) {
                    int64_t idx = n * k + g * group + i;
                    int q = code_at(codes, idx);
                    if (q < -7 || q > 7) out_of_range++;
                    double d = w[idx] - (double)scales[n * ng + g] * q;
                    err_check += d * d;
                }
        TU_CHECK(out_of_range == 0, "codes outside [-7,7]: %d", out_of_range);
        TU_CHECK(fabs(err - err_check) <= 1e-9 + 1e-6 * err_check, "reported error %g vs recomputed %g", err, err_check);
        TU_CHECK(err_check <= err_absmax * (1 + 1e-9), "clip search worse than absmax: %g > %g", err_check, err_absmax);
        TU_CHECK(err_check < 0.95 * err_absmax, "clip search should beat absmax with an outlier: %g vs %g", err_check, err_absmax);
        TU_CHECK(group != 64 || scales[1 * ng + 0] == 0.0f, "all-zero group gets scale 0");
        double rel = sqrt(err_check / (nout * k * 0.05 * 0.05 / 3));
        printf("group %d: relative RMS quantisation error %.4f\n", group, rel);

        // fused perturbed dequant vs by-hand
        int64_t sh[2] = {nout, k}, ssh[2] = {nout, ng};
        sq_tensor tc = sq_tensor_view(codes, SQ_Q4, SQ_CPU, 2, sh);
        sq_tensor ts = sq_tensor_view(scales, SQ_F32, SQ_CPU, 2, ssh);
        float deq[7 * 192];
        sq_tensor td = sq_tensor_view(deq, SQ_F32, SQ_CPU, 2, sh);
        for (int sign = -1; sign <= 1; sign++) {
            sq_perturb p = {.seed = 77, .step = 5, .index_base = 1000, .eps = 1e-3f, .sign = sign};
            tu_poison(deq, nout * k);
            sq_dequant_q4(&td, &tc, &ts, group, &p);
            int bad = 0;
            for (int64_t n = 0; n < nout; n++)
                for (int64_t g = 0; g < ng; g++) {
                    float z = sq_rng_normal(77, 5, 1000 + (uint64_t)(n * ng + g));
                    // the documented formula s + sign*eps*z, as one fused multiply-add
                    float s = fmaf((float)sign * 1e-3f, z, scales[n * ng + g]);
                    for (int i = 0; i < group; i++) {
                        int64_t idx = n * k + g * group + i;
                        float want = s * (float)code_at(codes, idx);
                        if (!(deq[idx] == want)) bad++;
                    }
                }
            TU_CHECK(bad == 0, "perturbed dequant sign %d: %d mismatches", sign, bad);
        }
        // update
        float before[7 * 192 / 32], after[7 * 192 / 32];
        for (int64_t j = 0; j < nout * ng; j++) before[j] = after[j] = scales[j];
        sq_perturb p = {.seed = 3, .step = 9, .index_base = 42};
        float coeff = 0.01f;
        sq_tensor ta = sq_tensor_view(after, SQ_F32, SQ_CPU, 2, ssh);
        sq_qzo_update(&ta, &p, coeff);
        int bad = 0, clamped = 0;
        for (int64_t j = 0; j < nout * ng; j++) {
            float want = before[j] - coeff * sq_rng_normal(3, 9, 42 + (uint64_t)j);
            if (want < 0) { want = 0; clamped++; }
            if (fabsf(after[j] - want) > 1e-7f) bad++;
        }
        TU_CHECK(bad == 0, "update mismatches: %d", bad);
        TU_CHECK(clamped > 0, "test should exercise the clamp at 0 (coeff large vs scales)");

        // relative form: the perturbation s(1 + sign eps z) and the update max(s(1 - c z), 0)
        for (int sign = -1; sign <= 1; sign += 2) {
            sq_perturb pr = {.seed = 77, .step = 6, .index_base = 500, .eps = 0.05f, .sign = sign, .relative = 1};
            tu_poison(deq, nout * k);
            sq_dequant_q4(&td, &tc, &ts, group, &pr);
            int badr = 0;
            for (int64_t n = 0; n < nout; n++)
                for (int64_t g = 0; g < ng; g++) {
                    double z = sq_rng_normal(77, 6, 500 + (uint64_t)(n * ng + g));
                    double s = scales[n * ng + g] * (1.0 + sign * 0.05 * z);
                    for (int i = 0; i < group; i++) {
                        int64_t idx = n * k + g * group + i;
                        double want = s * code_at(codes, idx);
                        if (!(fabs(deq[idx] - want) <= 1e-6 * fabs(want) + 1e-12)) badr++;
                    }
                }
            TU_CHECK(badr == 0, "relative perturbed dequant sign %d: %d mismatches", sign, badr);
        }
        sq_perturb pu = {.seed = 4, .step = 2, .index_base = 7, .relative = 1};
        float rcoeff = 0.9f;   // large enough that some 1 - c z < 0: those clamp at 0
        for (int64_t j = 0; j < nout * ng; j++) after[j] = before[j];
        sq_qzo_update(&ta, &pu, rcoeff);
        int badu = 0, clampedr = 0;
        for (int64_t j = 0; j < nout * ng; j++) {
            double want = before[j] * (1.0 - rcoeff * (double)sq_rng_normal(4, 2, 7 + (uint64_t)j));
            if (want < 0) { want = 0; clampedr++; }
            if (!(fabs(after[j] - want) <= 1e-6 * fabs(before[j]))) badu++;
        }
        TU_CHECK(badu == 0, "relative update mismatches: %d", badu);
        TU_CHECK(clampedr > 0, "the relative update's clamp at 0 is exercised");
        // and sign -1 takes it back: s / (1 - c z), exact up to rounding except where it clamped
        pu.sign = -1;
        sq_qzo_update(&ta, &pu, rcoeff);
        int badb = 0, zero_bad = 0;
        for (int64_t j = 0; j < nout * ng; j++) {
            double f = 1.0 - rcoeff * (double)sq_rng_normal(4, 2, 7 + (uint64_t)j);
            if (f <= 0 || before[j] == 0) { zero_bad += after[j] != 0; continue; }   // clamped: stays 0
            if (!(fabs(after[j] - before[j]) <= 1e-6 * before[j] / fmin(f, 1.0))) badb++;
        }
        TU_CHECK(badb == 0 && zero_bad == 0, "relative undo restores the scales: %d mismatches, %d clamped scales not 0",
                 badb, zero_bad);
        // absolute undo: s + c z
        sq_perturb pa = {.seed = 5, .step = 1, .index_base = 0};
        for (int64_t j = 0; j < nout * ng; j++) after[j] = before[j];
        sq_qzo_update(&ta, &pa, 1e-3f);
        pa.sign = -1;
        sq_qzo_update(&ta, &pa, 1e-3f);
        int bada = 0;
        for (int64_t j = 0; j < nout * ng; j++) bada += !(fabsf(after[j] - before[j]) <= 1e-7f);
        TU_CHECK(bada == 0, "absolute undo restores the scales: %d mismatches", bada);

        // negative scales (a Q4_0 GGUF base's) stay on their side of 0 in both modes:
        // the same arithmetic, mirrored, clamped at 0 from above
        for (int rel = 0; rel <= 1; rel++) {
            float neg[7 * 192 / 32];
            for (int64_t j = 0; j < nout * ng; j++) neg[j] = after[j] = -before[j];
            sq_perturb pn = {.seed = 6, .step = 3, .index_base = 11, .relative = rel};
            float c = rel ? 0.9f : 0.01f;
            sq_qzo_update(&ta, &pn, c);
            int badn = 0, clampn = 0, crossed = 0;
            for (int64_t j = 0; j < nout * ng; j++) {
                double z = sq_rng_normal(6, 3, 11 + (uint64_t)j);
                double want = rel ? neg[j] * (1.0 - c * z) : neg[j] - c * z;
                if (neg[j] == 0) {   // a scale at 0 counts as non-negative and may leave 0 upwards
                    if (!(fabs(after[j] - fmax(want, 0)) <= 1e-7)) badn++;
                    continue;
                }
                if (want > 0) { want = 0; clampn++; }
                crossed += after[j] > 0;
                if (!(fabs(after[j] - want) <= 1e-6 * fabs(neg[j]) + 1e-7)) badn++;
            }
            TU_CHECK(badn == 0 && crossed == 0, "%s update of negative scales: %d mismatches, %d turned positive",
                     rel ? "relative" : "absolute", badn, crossed);
            TU_CHECK(clampn > 0, "%s update: the clamp at 0 from above is exercised", rel ? "relative" : "absolute");
        }
    }
    return tu_finish("test_quant");
}
