// kernels/cpu/cpu_quant.h: raw-pointer fp32 CPU versions of kernels/quant.h.
#ifndef SQ_CPU_QUANT_H
#define SQ_CPU_QUANT_H

#include <float.h>
#include <math.h>
#include <stdint.h>

#include "kernels/quant.h"

double cpu_quantize_q4(const float *w, int64_t nout, int64_t k, int group, uint8_t *codes, float *scales);
double cpu_quantize_q4_src(const void *w, sq_dtype dtype, int64_t nout, int64_t k, int group, uint8_t *codes,
                           float *scales, double *energy);
int cpu_quantize_threads(void);
// "avx2" or "generic": the inner loop the quantiser uses on this CPU. The
// environment variable SQ_QUANTIZE_GENERIC (any value) forces the portable one (the
// tests run both).
const char *cpu_quantize_isa(void);
void cpu_dequant_q4(float *out, const uint8_t *codes, const float *scales, int64_t nout, int64_t k, int group,
                    const sq_perturb *p);
void cpu_qzo_update(float *scales, int64_t count, const sq_perturb *p, float coeff);
// sq_qzo_update_terms: layer l is scales[l][0..counts[l]) with index base index_base[l].
void cpu_qzo_update_terms(float *const *scales, const int64_t *counts, const uint64_t *index_base, int n_layers,
                          const sq_perturb *terms, const float *coeffs, int n_terms);
void cpu_ema_update(float *ema, const float *scales, int64_t count, float beta);

// ---- one weight's int4 code, without the division ----
// The reference code is clamp(rint(x / s), −7, 7) in float (cpu_q4_code_div).
// t = x·fl(1/s) differs from u = fl(x/s) by at most 3·2⁻²⁴·|x/s| (one rounding in
// 1/s, one in the product, against one in the quotient) when s and 1/s are normal
// floats. After the clamp only |t| ≤ 7 matters, so |t − u| < 2⁻¹⁹: rint(t) and
// rint(u) can differ only when a rounding boundary k + ½ lies between them, i.e.
// when t is within 2⁻¹⁹ of one. Such a weight (flagged when |t − rint(t)| ≥
// ½ − 2⁻¹⁶, a wide margin), and every weight whose s is zero, subnormal, huge, inf or
// NaN, takes the division instead. Gaussian weights flag about one (weight, ratio)
// pair in 10⁵. (t + 1.5·2²³) − 1.5·2²³ is rint(t), ties to even, for |t| < 2²²; a
// clamped NaN t gives −7 as fmaxf(NaN, −7) does; a code of −0 where the reference
// has +0 (or back) changes neither q·s's square nor the code's bits.
// tests/unit/test_quant_fast.c checks this exhaustively over bf16 weights.
#define CPU_Q4_SAFE_S_MIN FLT_MIN
#define CPU_Q4_SAFE_S_MAX 0x1p125f   // 1/s stays a normal float
#define CPU_Q4_NEAR_HALF (0.5f - 0x1p-16f)
#define CPU_Q4_RINT_MAGIC 0x1.8p23f

static inline float cpu_q4_code_div(float x, float s) { return fminf(fmaxf(rintf(x / s), -7.0f), 7.0f); }

// The code of x at scale s (inv = 1/s, slow = s outside [CPU_Q4_SAFE_S_MIN,
// CPU_Q4_SAFE_S_MAX]), equal to cpu_q4_code_div(x, s) for every x.
static inline float cpu_q4_code(float x, float s, float inv, int slow) {
    float t = x * inv;
    t = t > -7.0f ? t : -7.0f;   // NaN → −7, like fmaxf(NaN, −7)
    t = t < 7.0f ? t : 7.0f;
    float q = (t + CPU_Q4_RINT_MAGIC) - CPU_Q4_RINT_MAGIC;
    return slow || fabsf(t - q) >= CPU_Q4_NEAR_HALF ? cpu_q4_code_div(x, s) : q;
}

#endif
