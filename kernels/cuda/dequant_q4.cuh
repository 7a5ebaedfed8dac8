// kernels/cuda/dequant_q4.cuh: the per-element arithmetic of the perturbed int4
// dequantisation, shared by the dequantise-to-bf16 kernels (quant.cu) and the fused
// int4 GEMV (qgemv.cu), so every CUDA path produces the same weight bits as the CPU
// reference kernels/cpu/quant.c (s·q is exact in fp32, then rounded once to bf16).
#ifndef SQ_CUDA_DEQUANT_Q4_CUH
#define SQ_CUDA_DEQUANT_Q4_CUH

#include <cuda_bf16.h>
#include <stdint.h>

#include "kernels/quant.h"
#include "kernels/rng.h"

// The scale of group j under perturbation p: sq_perturbed_scale (kernels/quant.h),
// the CPU's expression, so both devices dequantise to the same bits.
__device__ __forceinline__ float perturbed_scale(const float *scales, int64_t j, const sq_perturb &p) {
    float s = scales[j];
    if (p.sign != 0)
        s = sq_perturbed_scale(s, sq_rng_normal(p.seed, p.step, p.index_base + (uint64_t)j), (float)p.sign * p.eps,
                               p.relative);
    return s;
}

// Why integer tricks below: I2F and F2F conversions run at an eighth of the FP32
// rate on sm_90, and two per weight made the dequantisation compute-bound.

// The 4-bit two's-complement code in the low nibble of `bits`, as an exact float:
// 2^23 (0x4B000000) has ulp 1, so OR-ing c ^ 8 = c + 8 into its mantissa gives
// 2^23 + c + 8, and one subtraction leaves c. No int-to-float conversion.
__device__ __forceinline__ float code_to_float(uint32_t bits) {
    return __uint_as_float(((bits & 0xfu) ^ 8u) | 0x4B000000u) - 8388616.0f;
}

// v's bits plus the round-to-nearest-even increment: the top 16 bits are then
// bf16(v), the same bits __float2bfloat16_rn gives for every finite v.
__device__ __forceinline__ uint32_t bf16_rounded_bits(float v) {
    uint32_t u = __float_as_uint(v);
    return u + 0x7fffu + ((u >> 16) & 1u);
}

// One code byte (two codes, low nibble first) times s, as two bf16 packed low-first.
__device__ __forceinline__ uint32_t dequant_pair(uint32_t byte, float s) {
    uint32_t lo = bf16_rounded_bits(s * code_to_float(byte)), hi = bf16_rounded_bits(s * code_to_float(byte >> 4));
    return __byte_perm(lo, hi, 0x7632);   // the high halves of lo and hi
}

// The same, stored through a bf16 pointer (any 2-byte alignment).
__device__ __forceinline__ void dequant_byte(uint32_t byte, float s, __nv_bfloat16 *o) {
    uint32_t pair = dequant_pair(byte, s);
    o[0] = __ushort_as_bfloat16((unsigned short)(pair & 0xffffu));
    o[1] = __ushort_as_bfloat16((unsigned short)(pair >> 16));
}

// Eight codes (one little-endian 32-bit word: byte b holds codes 2b, 2b+1) times s,
// as eight bf16 in one 16-byte vector.
__device__ __forceinline__ uint4 dequant_word(uint32_t word, float s) {
    return make_uint4(dequant_pair(word, s), dequant_pair(word >> 8, s), dequant_pair(word >> 16, s),
                      dequant_pair(word >> 24, s));
}

#endif
