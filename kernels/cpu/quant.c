// kernels/cpu/quant.c: fp32 reference for int4 quantisation, perturbed
// dequantisation, the QZO scale update and the EMA of the scales. Plain loops: these are the ground truth
// the CUDA versions are tested against.
#include <math.h>
#include <string.h>

#include "kernels/cpu/cpu_quant.h"
#include "kernels/rng.h"

static inline int code_at(const uint8_t *codes, int64_t i) {
    int v = (i & 1) ? (codes[i >> 1] >> 4) : (codes[i >> 1] & 0xf);
    return v >= 8 ? v - 16 : v;
}

double cpu_quantize_q4(const float *w, int64_t nout, int64_t k, int group, uint8_t *codes, float *scales) {
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

// Effective scale under p: sq_perturbed_scale, the expression the CUDA kernels use.
static inline float effective_scale(float s, const sq_perturb *p, uint64_t j) {
    if (!p || p->sign == 0) return s;
    float z = sq_rng_normal(p->seed, p->step, p->index_base + j);
    return sq_perturbed_scale(s, z, (float)p->sign * p->eps, p->relative);
}

void cpu_dequant_q4(float *out, const uint8_t *codes, const float *scales, int64_t nout, int64_t k, int group,
                    const sq_perturb *p) {
    int64_t groups = k / group;
#pragma omp parallel for
    for (int64_t n = 0; n < nout; n++) {
        for (int64_t g = 0; g < groups; g++) {
            float s = effective_scale(scales[n * groups + g], p, (uint64_t)(n * groups + g));
            for (int i = 0; i < group; i++) {
                int64_t idx = n * k + g * group + i;
                out[idx] = s * (float)code_at(codes, idx);
            }
        }
    }
}

void cpu_qzo_update(float *scales, int64_t count, const sq_perturb *p, float coeff) {
#pragma omp parallel for
    for (int64_t j = 0; j < count; j++) {
        float z = sq_rng_normal(p->seed, p->step, p->index_base + (uint64_t)j);
        scales[j] = p->sign < 0 ? sq_restored_scale(scales[j], z, coeff, p->relative)
                                : sq_updated_scale(scales[j], z, coeff, p->relative);
    }
}

void cpu_ema_update(float *ema, const float *scales, int64_t count, float beta) {
#pragma omp parallel for
    for (int64_t j = 0; j < count; j++) ema[j] = sq_ema_scale(ema[j], scales[j], beta);
}
