// kernels/quant.h: int4 weights with trainable per-group scales, and the QZO
// perturbation fused into their dequantisation.
//
// Layout of a quantised linear layer with weight W (Nout, K), group size G (K % G == 0):
//   codes  Q4 (Nout, K): two's-complement int4 in [-7, 7], element 2i in the low
//          nibble of byte i (core/dtype.h), row-major, so each row is K/2 bytes;
//   scales F32 (Nout, K/G): W[n, k] ≈ scales[n, k / G] * codes[n, k].
// Scale j of a layer (row-major index n * K/G + g) has the global index
// `index_base + j`, which keys its perturbation direction z (kernels/rng.h).
#ifndef SQ_QUANT_H
#define SQ_QUANT_H

#include <stdbool.h>
#include <math.h>
#include <stdint.h>

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

// One perturbation of all scales, z = z(seed, step, index):
//   absolute (relative = 0): s_eff = s + sign * eps * z            (the paper's Q-SPSA)
//   relative (relative = 1): s_eff = s * (1 + sign * eps * z)      (eps is a fraction of each scale)
typedef struct {
    uint64_t seed;
    uint64_t step;        // the RNG counter: the perturbation id (step * queries + query)
    uint64_t index_base;  // global index of this layer's first scale
    float eps;
    int sign;             // -1, 0 (no perturbation) or +1
    int relative;         // 0: absolute perturbation and update, 1: scale-relative
} sq_perturb;

// The perturbation a layer sees in a pass under p (NULL: none): p with the layer's
// index_base, and none at all for a frozen layer.
static inline sq_perturb sq_layer_perturbation(const sq_perturb *p, uint64_t index_base, bool frozen) {
    sq_perturb lp = {0, 0, 0, 0.0f, 0, 0};
    if (p) lp = *p;
    lp.index_base = index_base;
    if (frozen) lp.sign = 0;
    return lp;
}

// The per-scale arithmetic, shared by the CPU reference and the CUDA kernels so
// both round identically: explicit fmaf, and in the relative form the product
// sign·eps·z (or coeff·z) formed first, so no compiler contraction changes the bits.
#ifdef __CUDACC__
#define SQ_QUANT_HD __host__ __device__ __forceinline__
#else
#define SQ_QUANT_HD static inline
#endif
SQ_QUANT_HD float sq_perturbed_scale(float s, float z, float sign_eps, int relative) {
    if (!relative) return fmaf(sign_eps, z, s);
    float a = sign_eps * z;
    return fmaf(a, s, s);
}
// s <- s - coeff·z, or for the relative update s·(1 - coeff·z), held on its side of 0:
// a scale never changes sign (it stops at 0). Scales are non-negative except where a
// base came with negative ones (a Q4_0 GGUF: ggml's quantiser gives about half its
// blocks a negative scale, carried over exactly; mmdit/gguf_base.h).
SQ_QUANT_HD float sq_scale_same_side(float r, float s) {
    if (s < 0.0f) return r < 0.0f ? r : 0.0f;
    return r > 0.0f ? r : 0.0f;
}
SQ_QUANT_HD float sq_updated_scale(float s, float z, float coeff, int relative) {
    float r;
    if (relative) {
        float a = coeff * z;
        r = fmaf(-a, s, s);
    } else {
        r = fmaf(-coeff, z, s);
    }
    return sq_scale_same_side(r, s);
}
// The inverse of sq_updated_scale (a discarded step undoing the step before it):
// s + coeff·z, or for the relative update s / (1 - coeff·z), since s·(1 - a)·(1 + a)
// is s·(1 - a²), not s. Exact up to rounding unless the update clamped s to 0 (a
// scale clamped to 0 from below comes back on the non-negative side).
// coeff·z is rounded on its own before the subtraction (sq_mul_rn): nvcc would
// otherwise contract 1 - coeff·z into one fma (its -fmad=true default), which C11
// on the CPU does not, and the two undos would differ in the last bit.
SQ_QUANT_HD float sq_mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
SQ_QUANT_HD float sq_restored_scale(float s, float z, float coeff, int relative) {
    if (!relative) return sq_scale_same_side(fmaf(coeff, z, s), s);
    float f = 1.0f - sq_mul_rn(coeff, z);
    return f > 0.0f ? s / f : s;   // f <= 0: the update clamped s to 0, which stays
}
// One step of the exponential moving average of a scale (--ema beta):
// e <- beta·e + (1 - beta)·s, written s + beta·(e - s) in one fmaf, so an EMA equal
// to its scale stays bit-identical to it (no drift from rounding 1 - beta) and the
// result lies between e and s. No bias correction: the EMA starts at the scales
// (docs/QZO.md, "EMA of the scales").
SQ_QUANT_HD float sq_ema_scale(float e, float s, float beta) { return fmaf(beta, e - s, s); }

// ---- host-side quantiser (runs once per checkpoint, CPU) ----
// Quantises W (Nout, K) f32 row-major into codes (Nout*K/2 bytes) and scales
// (Nout * K/G floats): per group, round-to-nearest at the clipping ratio in
// {1.00, 0.98, ..., 0.50} of the group's absmax that minimises the squared error.
// Returns the total squared error. All-zero groups get scale 0 and codes 0.
// Threaded (OpenMP, over groups); the results do not depend on the thread count.
double sq_quantize_q4(const float *w, int64_t nout, int64_t k, int group, uint8_t *codes, float *scales);
#define SQ_Q4_RATIOS 26        // clipping ratios tried: 1.00, 0.98, ..., 0.50
#define SQ_Q4_MAX_GROUP 128    // the largest group size the quantiser takes
// The same, reading W in its stored dtype (F32, BF16 or F16: widening is exact),
// and *energy (may be NULL) = the sum of the squared weights (per group, then over
// groups in order), for the relative error.
double sq_quantize_q4_src(const void *w, sq_dtype dtype, int64_t nout, int64_t k, int group, uint8_t *codes,
                          float *scales, double *energy);
// Threads the CPU quantiser runs on (OpenMP's count; 1 without OpenMP).
int sq_quantize_q4_threads(void);
// The same quantiser on the CUDA device: w in host memory (F32/BF16/F16), codes and
// scales back in host memory, bit-identical to sq_quantize_q4_src (tests/gpu/
// test_gpu_quantize.c). SQ_FAIL with a message on a CUDA error; aborts in a build
// without CUDA (callers check sq_cuda_device_count first).
int sq_quantize_q4_cuda(const void *w, sq_dtype dtype, int64_t nout, int64_t k, int group, uint8_t *codes,
                        float *scales, double *err, double *energy);

// ---- ops (dispatch on device like kernels/ops.h) ----
// out (Nout, K) f32 on CPU / bf16 on CUDA = sq_perturbed_scale(scales, z, p) ⊙ codes. p may be NULL.
void sq_dequant_q4(sq_tensor *out, const sq_tensor *codes, const sq_tensor *scales, int group, const sq_perturb *p);
// y (N, Nout) = x (N, K) · dequant(codes, scales, p)ᵀ + b; w_scratch is an (Nout, K)
// tensor of the activation dtype the dequantised weight is written to. On CUDA,
// with N ≤ SQ_QGEMV_MAX_ROWS (the adaLN linears: one row per sample) the product is
// taken straight from the codes (kernels/cuda/qgemv.cu) and w_scratch is not used.
// gelu: y = gelu_tanh(...), in the GEMM's epilogue where sq_matmul_gelu has one.
enum { SQ_QGEMV_MAX_ROWS = 8 };
void sq_qlinear(sq_tensor *out, const sq_tensor *x, const sq_tensor *codes, const sq_tensor *scales,
                const sq_tensor *b, int group, const sq_perturb *p, sq_tensor *w_scratch, bool gelu);
// Whether sq_qlinear takes this call by the int4 GEMV (no dequantised weight), and
// the layer checks it makes, for kernels/weight_prefetch.c, which runs the other path.
bool sq_qlinear_uses_gemv(const sq_tensor *out, const sq_tensor *x, const sq_tensor *codes, const sq_tensor *b,
                          int group);
void sq_qlinear_check_layer(const char *op, const sq_tensor *codes, const sq_tensor *scales, int group);
// The QZO update of one layer's scales, regenerating z:
//   s[j] = max(s[j] - coeff * z(seed, step, index_base + j), 0), or with p->relative
//   s[j] = max(s[j] * (1 - coeff * z), 0)
// where coeff = lr · clipped directional derivative (already averaged over queries
// by the caller, which calls this once per query). p->eps is ignored; p->sign < 0
// undoes the update with coeff instead (sq_restored_scale).
void sq_qzo_update(sq_tensor *scales, const sq_perturb *p, float coeff);
// Several updates of many layers at once: the same result, bit for bit, as
//   for t in 0..n_terms-1: for l in 0..n_layers-1:
//       p = terms[t] with index_base = index_base[l]; sq_qzo_update(scales[l], &p, coeffs[t])
// but on CUDA in one kernel launch (per SQ_QZO_UPDATE_TERMS_PER_LAUNCH terms) rather
// than n_layers·n_terms. Each term's seed, step, sign (< 0: undo) and relative flag
// are used; its eps and index_base are not. All layers F32, on one device, not
// overlapping one another. The layer list (pointers, sizes, index bases) is cached
// on the device while it stays the same, so a training run uploads it once.
void sq_qzo_update_terms(sq_tensor *const *scales, const uint64_t *index_base, int n_layers, const sq_perturb *terms,
                         const float *coeffs, int n_terms);
enum { SQ_QZO_UPDATE_TERMS_PER_LAUNCH = 64 };   // a step's terms fit one launch (qzo/qzo.h: SQ_QZO_MOMENTUM_TERMS)
// ema[j] = sq_ema_scale(ema[j], scales[j], beta) for every scale of one layer: the EMA
// copy (F32, same shape and device as the scales) after an accepted step.
void sq_ema_update(sq_tensor *ema, const sq_tensor *scales, float beta);

#ifdef __cplusplus
}
#endif

#endif
