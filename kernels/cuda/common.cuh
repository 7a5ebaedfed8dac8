// kernels/cuda/common.cuh: what every CUDA op file shares: bf16 load/store as
// float (one element, or 8 in one 16-byte access), launch sizing, and the
// grid-stride loop bound.
#ifndef SQ_CUDA_COMMON_CUH
#define SQ_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/cuda/check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/stream.cuh"

typedef __nv_bfloat16 bf16;

// Activations are bf16 (the default) or f32 (frozen models run at full precision,
// e.g. the VAE); kernels are templates over the element type E and compute in fp32.
__device__ __forceinline__ float ld(const bf16 *p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void st(bf16 *p, int64_t i, float v) { p[i] = __float2bfloat16_rn(v); }
__device__ __forceinline__ float ld(const float *p, int64_t i) { return p[i]; }
__device__ __forceinline__ void st(float *p, int64_t i, float v) { p[i] = v; }

// V consecutive elements p[i..i+V) as floats (ldv) or from floats (stv). V = 8 is one
// 16-byte access for bf16 (two for f32) and needs p + i 16-byte aligned: launchers
// take it only when the row length is a multiple of 8 and aligned16() holds for every
// pointer. Any other V is the scalar fallback.
template <int V>
__device__ __forceinline__ void ldv(const bf16 *p, int64_t i, float *v) {
    if constexpr (V == 8) {
        alignas(16) bf16 h[8];
        *reinterpret_cast<uint4 *>(h) = *reinterpret_cast<const uint4 *>(p + i);
#pragma unroll
        for (int k = 0; k < 8; k++) v[k] = __bfloat162float(h[k]);
    } else {
#pragma unroll
        for (int k = 0; k < V; k++) v[k] = ld(p, i + k);
    }
}
template <int V>
__device__ __forceinline__ void stv(bf16 *p, int64_t i, const float *v) {
    if constexpr (V == 8) {
        alignas(16) bf16 h[8];
#pragma unroll
        for (int k = 0; k < 8; k++) h[k] = __float2bfloat16_rn(v[k]);
        *reinterpret_cast<uint4 *>(p + i) = *reinterpret_cast<const uint4 *>(h);
    } else {
#pragma unroll
        for (int k = 0; k < V; k++) st(p, i + k, v[k]);
    }
}
template <int V>
__device__ __forceinline__ void ldv(const float *p, int64_t i, float *v) {
    if constexpr (V == 8) {
        float4 a = reinterpret_cast<const float4 *>(p + i)[0], b = reinterpret_cast<const float4 *>(p + i)[1];
        v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
        v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
    } else {
#pragma unroll
        for (int k = 0; k < V; k++) v[k] = p[i + k];
    }
}
template <int V>
__device__ __forceinline__ void stv(float *p, int64_t i, const float *v) {
    if constexpr (V == 8) {
        reinterpret_cast<float4 *>(p + i)[0] = make_float4(v[0], v[1], v[2], v[3]);
        reinterpret_cast<float4 *>(p + i)[1] = make_float4(v[4], v[5], v[6], v[7]);
    } else {
#pragma unroll
        for (int k = 0; k < V; k++) p[i + k] = v[k];
    }
}
// NULL counts as aligned (an absent optional tensor).
static inline bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

// Runs a launch statement with E = float for f32 tensors, E = bf16 otherwise.
// Variadic because a launch's <<<grid, block>>> holds commas.
#define SQ_DISPATCH_FLOAT(dtype, ...)                                                                   \
    do {                                                                                                \
        if ((dtype) == SQ_F32) { typedef float E; __VA_ARGS__; }                                        \
        else { SQ_CHECK((dtype) == SQ_BF16, "CUDA ops take bf16 or f32"); typedef bf16 E; __VA_ARGS__; } \
    } while (0)

// Blocks for a grid-stride elementwise kernel over n items (capped; the loop covers the rest).
static inline unsigned grid_for(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b > 65535 * 8) b = 65535 * 8;
    return (unsigned)(b > 0 ? b : 1);
}

#define SQ_LAUNCH_CHECK() SQ_CUDA_CHECK(cudaGetLastError())

// Block-wide sum of one float per thread (blockDim.x a multiple of 32, ≤ 1024).
__device__ __forceinline__ float block_sum(float v, float *shared32) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) shared32[warp] = v;
    __syncthreads();
    int nw = blockDim.x >> 5;
    v = lane < nw ? shared32[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;   // every thread gets the total
}

__device__ __forceinline__ float block_max(float v, float *shared32) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) shared32[warp] = v;
    __syncthreads();
    int nw = blockDim.x >> 5;
    v = lane < nw ? shared32[lane] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

#endif
