// tests/quant_ref.h: the int4 quantiser as it was before it was threaded and lost
// its per-weight division (kernels/cpu/quant.c up to the commit that added this
// file), kept verbatim as the reference the fast CPU path and the CUDA quantiser
// must match bit for bit: codes, scales and the returned squared error.
// Also qr_fill_hard: weights that exercise every branch of the quantiser.
// Header-only (static); only the tests include it.
#ifndef SQ_TESTS_QUANT_REF_H
#define SQ_TESTS_QUANT_REF_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline double ref_quantize_q4(const float *w, int64_t nout, int64_t k, int group, uint8_t *codes,
                                     float *scales) {
    int64_t groups = k / group;
    double total = 0;
    memset(codes, 0, (size_t)(nout * k + 1) / 2);
    for (int64_t n = 0; n < nout; n++) {
        for (int64_t g = 0; g < groups; g++) {
            const float *x = w + n * k + g * group;
            float amax = 0;
            for (int i = 0; i < group; i++) amax = fmaxf(amax, fabsf(x[i]));
            float best_scale = 0;
            double best_err = 0;
            if (amax > 0) {
                best_err = INFINITY;
                for (int r = 100; r >= 50; r -= 2) {
                    float s = amax * (float)r / 100.0f / 7.0f;
                    double err = 0;
                    for (int i = 0; i < group; i++) {
                        float q = fminf(fmaxf(rintf(x[i] / s), -7.0f), 7.0f);
                        double d = (double)x[i] - (double)(q * s);
                        err += d * d;
                    }
                    if (err < best_err) { best_err = err; best_scale = s; }
                }
            } else {
                for (int i = 0; i < group; i++) best_err += (double)x[i] * x[i];
            }
            scales[n * groups + g] = best_scale;
            total += best_err;
            for (int i = 0; i < group; i++) {
                int q = best_scale > 0 ? (int)fminf(fmaxf(rintf(x[i] / best_scale), -7.0f), 7.0f) : 0;
                int64_t idx = n * k + g * group + i;
                uint8_t nib = (uint8_t)(q & 0xf);
                codes[idx >> 1] |= (idx & 1) ? (uint8_t)(nib << 4) : nib;
            }
        }
    }
    return total;
}

// Fills W (nout, k) group by group with a mix of kinds, by group index mod 10:
// Gaussian-like (std 0.02), one outlier, all zeros, zeros and one NaN, an inf,
// bf16 subnormals (whose scales underflow), random bf16 bit patterns of every
// exponent (NaN and inf among them), weights placed within a few ulps of a rounding
// boundary (m + ½)·s of some clipping ratio's scale s (and exactly on it), and the
// same rounded to bf16, and huge weights near FLT_MAX. Every value is finite unless
// the kind says otherwise.
//
static inline float qr_bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return x;
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}
static inline uint64_t qr_next(uint64_t *s) {
    *s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}
static inline float qr_unit(uint64_t *s) { return (float)((qr_next(s) >> 40) * (1.0 / 16777216.0)); }

// finite_only: the NaN, inf and random-bit-pattern kinds become boundary groups, so
// the total error is finite and its bits are compared too.
static inline void qr_fill_hard(float *w, int64_t nout, int64_t k, int group, uint64_t seed, int finite_only) {
    uint64_t rs = seed * 0x9E3779B97F4A7C15ull + 1;
    int64_t ngroups = nout * k / group;
    for (int64_t g = 0; g < ngroups; g++) {
        float *x = w + g * group;
        int kind = (int)(g % 10);
        if (finite_only && (kind == 3 || kind == 4 || kind == 6)) kind = 7;
        for (int i = 0; i < group; i++) {   // the Gaussian-like base (sum of uniforms)
            float u = qr_unit(&rs) + qr_unit(&rs) + qr_unit(&rs) - 1.5f;
            x[i] = 0.04f * u;
        }
        switch (kind) {
        case 0: break;
        case 1: x[qr_next(&rs) % (uint64_t)group] = 0.5f * (qr_unit(&rs) < 0.5f ? -1 : 1); break;
        case 2: for (int i = 0; i < group; i++) x[i] = (qr_next(&rs) & 1) ? 0.0f : -0.0f; break;
        case 3:
            for (int i = 0; i < group; i++) x[i] = 0.0f;
            x[qr_next(&rs) % (uint64_t)group] = NAN;
            if (g % 20 == 3) x[0] = 1e-3f;   // and a NaN beside finite weights
            break;
        case 4: x[qr_next(&rs) % (uint64_t)group] = (g % 20 == 4) ? INFINITY : -INFINITY; break;
        case 5:   // bf16 subnormals and tiny normals: amax · r / 700 underflows
            for (int i = 0; i < group; i++) {
                uint32_t u = (uint32_t)(qr_next(&rs) & 0x807f) << 16;
                if (g % 20 == 15 && i % 7 == 0) u = (uint32_t)(qr_next(&rs) & 0x80ff) << 16 | 0x00800000u;
                memcpy(&x[i], &u, 4);
            }
            break;
        case 6:   // random bf16 bit patterns, every exponent
            for (int i = 0; i < group; i++) {
                uint32_t u = (uint32_t)(qr_next(&rs) & 0xffff) << 16;
                memcpy(&x[i], &u, 4);
            }
            break;
        case 7:
        case 8: {   // on and beside the rounding boundaries of the clipping ratios
            float amax = (kind == 7 ? 0.05f : 3e-30f) * (0.5f + qr_unit(&rs));
            for (int i = 0; i < group; i++) {
                int r = 100 - 2 * (int)(qr_next(&rs) % 26);
                float s = amax * (float)r / 100.0f / 7.0f;
                int m = (int)(qr_next(&rs) % 14) - 7;   // m + ½ in [−6.5, 6.5]
                float v = ((float)m + 0.5f) * s;
                int ulps = (int)(qr_next(&rs) % 9) - 4;
                for (; ulps > 0; ulps--) v = nextafterf(v, INFINITY);
                for (; ulps < 0; ulps++) v = nextafterf(v, -INFINITY);
                if (fabsf(v) > amax) v = 0.5f * v;
                x[i] = v;
            }
            x[0] = amax;
            if (g % 20 == 18)
                for (int i = 0; i < group; i++) x[i] = qr_bf16_round(x[i]);
            break;
        }
        case 9:   // |x| up to FLT_MAX (s near 2¹²⁵, 1/s near the normal limit), or tiny normals
            // (amax · 100 overflows above FLT_MAX / 100: s = inf, every err NaN, scale 0)
            for (int i = 0; i < group; i++)
                x[i] = (g % 20 == 9) ? x[i] / 0.06f * (finite_only ? 3.0e36f : 3.4e38f) : x[i] * 1e-37f;
            break;
        }
    }
}

#endif
