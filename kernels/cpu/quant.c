// kernels/cpu/quant.c: fp32 reference for int4 quantisation, perturbed
// dequantisation, the QZO scale update and the EMA of the scales. These are the
// ground truth the CUDA versions are tested against.
// The quantiser is the one exception to "plain loops": it runs over every weight of
// a checkpoint (8 G for SD3.5 Large) at 26 clipping ratios, so it is threaded over
// groups and divides only where a division could give another code than a
// multiplication by the reciprocal (see quantize_group). Its results are bit for bit
// those of the plain loops it replaced, kept in tests/quant_ref.h and compared with
// it by tests/unit/test_quant_fast.c.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/dtype.h"
#include "kernels/cpu/cpu_quant.h"
#include "kernels/rng.h"

static inline int code_at(const uint8_t *codes, int64_t i) {
    int v = (i & 1) ? (codes[i >> 1] >> 4) : (codes[i >> 1] & 0xf);
    return v >= 8 ? v - 16 : v;
}

// ---- the quantiser ----
// Per group, and per ratio r = 100, 98, …, 50 (SQ_Q4_RATIOS of them):
//   s   = amax · r / 100 / 7                    (float, in that order)
//   q_i = clamp(rint(x_i / s), −7, 7)           (float division, ties to even)
//   err = Σ_i ((double)x_i − (double)(q_i·s))²  (double, i in order)
// and the first ratio with the smallest err wins (strict <). An all-zero group, or
// one whose every err is NaN (an inf or NaN weight), keeps scale 0 and codes 0.
//
// Without the division: the codes are computed for all ratios at once (one lane per
// ratio) by multiplying with 1/s, and a lane that cpu_q4_code (kernels/cpu/
// cpu_quant.h, where the proof is) would send to the division is redone with it.
#define LANES 32   // SQ_Q4_RATIOS padded to a multiple of the vector width

// err[j] for every lane j: Σ_i ((double)x_i − (double)(q_ij·s_j))², i in order.
// The portable version: plain loops over the lanes (GCC vectorises the second).
static void ratio_errors_generic(const float *x, int group, const float *s, const float *inv, const int *slow,
                                 int any_slow, double *err) {
    for (int j = 0; j < LANES; j++) err[j] = 0;
    for (int i = 0; i < group; i++) {
        float xi = x[i], q[LANES];
        int flag = any_slow;
        for (int j = 0; j < LANES; j++) {
            float t = xi * inv[j];
            t = t > -7.0f ? t : -7.0f;
            t = t < 7.0f ? t : 7.0f;
            float r = (t + CPU_Q4_RINT_MAGIC) - CPU_Q4_RINT_MAGIC;
            flag |= fabsf(t - r) >= CPU_Q4_NEAR_HALF;
            q[j] = r;
        }
        if (flag)
            for (int j = 0; j < SQ_Q4_RATIOS; j++) q[j] = cpu_q4_code(xi, s[j], inv[j], slow[j]);
        double xd = xi;
        for (int j = 0; j < LANES; j++) {   // each err[j] still sums over i in order
            double d = xd - (double)(q[j] * s[j]);
            err[j] += d * d;
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
// The same with AVX2 (8 float / 4 double lanes), chosen at run time. Every
// operation is the scalar one lane-wise: max_ps(t, −7) is t > −7 ? t : −7 (its
// second operand on NaN), min_ps likewise, and with no "fma" target (and
// -ffp-contract=off, C11's default) mul_pd + add_pd stay two roundings. Only lanes
// 0..27 of the doubles are summed (the ratios are 26).
__attribute__((target("avx2"))) static void ratio_errors_avx2(const float *x, int group, const float *s,
                                                              const float *inv, const int *slow, int any_slow,
                                                              double *err) {
    const __m256 lo = _mm256_set1_ps(-7.0f), hi = _mm256_set1_ps(7.0f), magic = _mm256_set1_ps(CPU_Q4_RINT_MAGIC),
                 near = _mm256_set1_ps(CPU_Q4_NEAR_HALF), absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 vinv[4], vs[4];
    for (int v = 0; v < 4; v++) {
        vinv[v] = _mm256_loadu_ps(inv + 8 * v);
        vs[v] = _mm256_loadu_ps(s + 8 * v);
    }
    __m256d e[7];
    for (int v = 0; v < 7; v++) e[v] = _mm256_setzero_pd();
    for (int i = 0; i < group; i++) {
        __m256 vx = _mm256_set1_ps(x[i]), q[4], flag = _mm256_setzero_ps();
        for (int v = 0; v < 4; v++) {
            __m256 t = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(vx, vinv[v]), lo), hi);
            __m256 r = _mm256_sub_ps(_mm256_add_ps(t, magic), magic);
            flag = _mm256_or_ps(flag, _mm256_cmp_ps(_mm256_and_ps(_mm256_sub_ps(t, r), absmask), near, _CMP_GE_OQ));
            q[v] = r;
        }
        if (any_slow || _mm256_movemask_ps(flag)) {
            float qs[LANES];
            for (int v = 0; v < 4; v++) _mm256_storeu_ps(qs + 8 * v, q[v]);
            for (int j = 0; j < SQ_Q4_RATIOS; j++) qs[j] = cpu_q4_code(x[i], s[j], inv[j], slow[j]);
            for (int v = 0; v < 4; v++) q[v] = _mm256_loadu_ps(qs + 8 * v);
        }
        __m256d xd = _mm256_set1_pd((double)x[i]);
        for (int v = 0; v < 4; v++) {
            __m256 p = _mm256_mul_ps(q[v], vs[v]);
            __m256d d0 = _mm256_sub_pd(xd, _mm256_cvtps_pd(_mm256_castps256_ps128(p)));
            e[2 * v] = _mm256_add_pd(e[2 * v], _mm256_mul_pd(d0, d0));
            if (v < 3) {
                __m256d d1 = _mm256_sub_pd(xd, _mm256_cvtps_pd(_mm256_extractf128_ps(p, 1)));
                e[2 * v + 1] = _mm256_add_pd(e[2 * v + 1], _mm256_mul_pd(d1, d1));
            }
        }
    }
    for (int v = 0; v < 7; v++) _mm256_storeu_pd(err + 4 * v, e[v]);
    for (int j = 28; j < LANES; j++) err[j] = 0;
}
#endif

typedef void ratio_errors_fn(const float *, int, const float *, const float *, const int *, int, double *);

// The AVX2 version where the CPU has it. Callers may already be threads (export
// quantises blocks of rows in parallel): the choice is an atomic, and every thread
// makes the same one.
static ratio_errors_fn *choose_isa(void) {
    static ratio_errors_fn *chosen = NULL;
    ratio_errors_fn *f = __atomic_load_n(&chosen, __ATOMIC_ACQUIRE);
    if (f) return f;
    f = ratio_errors_generic;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && !getenv("SQ_QUANTIZE_GENERIC")) f = ratio_errors_avx2;
#endif
    __atomic_store_n(&chosen, f, __ATOMIC_RELEASE);
    return f;
}

const char *cpu_quantize_isa(void) { return choose_isa() == ratio_errors_generic ? "generic" : "avx2"; }

// One group of `group` weights already in fp32; returns its squared error and
// writes its scale and group/2 code bytes.
static double quantize_group(ratio_errors_fn *ratio_errors, const float *x, int group, uint8_t *codes, float *scale) {
    float amax = 0;
    for (int i = 0; i < group; i++) {
        float a = fabsf(x[i]);
        amax = a > amax ? a : amax;   // skips NaN, as fmaxf does
    }
    memset(codes, 0, (size_t)group / 2);
    *scale = 0;
    if (!(amax > 0)) {
        double err = 0;
        for (int i = 0; i < group; i++) err += (double)x[i] * x[i];
        return err;
    }
    float s[LANES], inv[LANES];
    int slow[LANES];
    for (int j = 0; j < LANES; j++) {
        // padding lanes: t = 0 whatever x is, so they never ask for the division
        s[j] = j < SQ_Q4_RATIOS ? amax * (float)(100 - 2 * j) / 100.0f / 7.0f : 1.0f;
        inv[j] = j < SQ_Q4_RATIOS ? 1.0f / s[j] : 0.0f;
        slow[j] = !(s[j] >= CPU_Q4_SAFE_S_MIN && s[j] <= CPU_Q4_SAFE_S_MAX);
    }
    int any_slow = 0;
    for (int j = 0; j < SQ_Q4_RATIOS; j++) any_slow |= slow[j];
    double err[LANES];
    ratio_errors(x, group, s, inv, slow, any_slow, err);
    double best_err = INFINITY;
    int best = -1;
    for (int j = 0; j < SQ_Q4_RATIOS; j++)
        if (err[j] < best_err) { best_err = err[j]; best = j; }
    if (best < 0 || !(s[best] > 0)) {
        if (best >= 0) *scale = s[best];   // +0: the ratio's scale underflowed
        return best_err;
    }
    *scale = s[best];
    for (int i = 0; i < group; i++) {
        int qi = (int)cpu_q4_code(x[i], s[best], inv[best], slow[best]);
        codes[i >> 1] |= (i & 1) ? (uint8_t)((qi & 0xf) << 4) : (uint8_t)(qi & 0xf);
    }
    return best_err;
}

// A group widened to f32. Copied first: a tensor in a safetensors file need not be
// aligned to its element size.
static inline void load_group(float *dst, const void *src, sq_dtype dtype, int64_t off, int group) {
    if (dtype == SQ_F32) {
        memcpy(dst, (const char *)src + off * 4, (size_t)group * sizeof(float));
        return;
    }
    uint16_t h[SQ_Q4_MAX_GROUP];
    memcpy(h, (const char *)src + off * 2, (size_t)group * 2);
    if (dtype == SQ_BF16)
        for (int i = 0; i < group; i++) dst[i] = sq_bf16_to_f32(h[i]);
    else
        for (int i = 0; i < group; i++) dst[i] = sq_f16_to_f32(h[i]);
}

// Groups go to threads in blocks of BLOCK_GROUPS; each block's per-group errors
// are summed in group order afterwards, so the total (like every code and scale)
// does not depend on the thread count and equals the serial sum.
#define BLOCK_GROUPS 8192

double cpu_quantize_q4_src(const void *w, sq_dtype dtype, int64_t nout, int64_t k, int group, uint8_t *codes,
                           float *scales, double *energy) {
    int64_t ngroups = nout * (k / group);
    double total = 0, sumsq = 0;
    ratio_errors_fn *ratio_errors = choose_isa();
    double gerr[BLOCK_GROUPS], gsq[BLOCK_GROUPS];
    for (int64_t b0 = 0; b0 < ngroups; b0 += BLOCK_GROUPS) {
        int nb = (int)(ngroups - b0 < BLOCK_GROUPS ? ngroups - b0 : BLOCK_GROUPS);
#pragma omp parallel for schedule(dynamic, 64)
        for (int b = 0; b < nb; b++) {
            float x[SQ_Q4_MAX_GROUP];
            int64_t gi = b0 + b;   // groups of a row are consecutive: element offset gi·group
            load_group(x, w, dtype, gi * group, group);
            gerr[b] = quantize_group(ratio_errors, x, group, codes + gi * group / 2, scales + gi);
            double e = 0;
            for (int i = 0; i < group; i++) e += (double)x[i] * x[i];
            gsq[b] = e;
        }
        for (int b = 0; b < nb; b++) {
            total += gerr[b];
            sumsq += gsq[b];
        }
    }
    if (energy) *energy = sumsq;
    return total;
}

int cpu_quantize_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

double cpu_quantize_q4(const float *w, int64_t nout, int64_t k, int group, uint8_t *codes, float *scales) {
    return cpu_quantize_q4_src(w, SQ_F32, nout, k, group, codes, scales, NULL);
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

// All terms of one scale, in order, before the next scale: each scale's result
// depends on that scale alone, so this is the term-by-term, layer-by-layer order of
// calling cpu_qzo_update for each (term, layer) bit for bit. One parallel region,
// each layer's scales shared out without a barrier between layers.
void cpu_qzo_update_terms(float *const *scales, const int64_t *counts, const uint64_t *index_base, int n_layers,
                          const sq_perturb *terms, const float *coeffs, int n_terms) {
#pragma omp parallel
    for (int l = 0; l < n_layers; l++) {
        float *sl = scales[l];
#pragma omp for nowait
        for (int64_t j = 0; j < counts[l]; j++) {
            float s = sl[j];
            for (int t = 0; t < n_terms; t++) {
                const sq_perturb *p = &terms[t];
                float z = sq_rng_normal(p->seed, p->step, index_base[l] + (uint64_t)j);
                s = p->sign < 0 ? sq_restored_scale(s, z, coeffs[t], p->relative)
                                : sq_updated_scale(s, z, coeffs[t], p->relative);
            }
            sl[j] = s;
        }
    }
}

void cpu_ema_update(float *ema, const float *scales, int64_t count, float beta) {
#pragma omp parallel for
    for (int64_t j = 0; j < count; j++) ema[j] = sq_ema_scale(ema[j], scales[j], beta);
}
