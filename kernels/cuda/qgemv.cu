// kernels/cuda/qgemv.cu: y (R, Nout) = x (R, K) · dequant(codes, scales, p)ᵀ + b for
// a handful of rows R (≤ SQ_QGEMV_MAX_ROWS), straight from the int4 codes.
//
// Why: the adaLN modulation linears of every MMDiT block take one row per sample
// (silu of the timestep embedding) but hold a third of SD3.5's weights. Dequantising
// them to bf16 and calling cuBLAS writes and reads 2 bytes per weight for 2 FLOPs;
// reading the 4-bit codes once is about 8x less memory traffic.
//
// Numerics: as the CPU reference, the weights are not rounded to bf16: per 32-code
// chunk Σ x·q is accumulated in fp32 (q exact) and scaled by the chunk's perturbed
// scale s_eff in fp32; the bias is added in fp32 and the sum rounded once to bf16.
// The + and − passes take this same path.
//
// Speed: the kernel is bound by instructions per weight, not memory. The block
// stages x as fp32 in shared memory with each 32-column chunk's sum; a code c
// (two's complement) becomes the float f = 1 + (c ^ 8)/16 = 1 + (q + 8)/16 by
// placing c ^ 8 in the mantissa (a shift and a logic op, no conversion), and
// Σ x·q = 16·Σ x·f − 24·Σ x per chunk. That is three instructions per weight.
#include <cuda_bf16.h>
#include <stdint.h>

#include "kernels/cuda/check.h"
#include "kernels/cuda/dequant_q4.cuh"

#define QGEMV_WARPS 16   // output rows per block, one warp each (more rows share the staged x)

// Shared memory of one block: x (R x K fp32), its chunk sums (R x K/32), and the
// perturbed scales of each warp's row (QGEMV_WARPS x K/G).
static size_t qgemv_smem(int64_t rows, int64_t k, int group) {
    return (size_t)(rows * k + rows * (k / 32) + QGEMV_WARPS * (k / group)) * sizeof(float);
}
static const size_t QGEMV_SMEM_MAX = 200 * 1024;   // below sm_80/sm_90's 227 KiB opt-in

// Nibble e (0..7) of a code word whose nibbles were XOR-ed with 8, as 1 + c/16.
__device__ __forceinline__ float nibble_as_f(uint32_t word_x8, int e) {
    uint32_t m = 4 * e <= 19 ? word_x8 << (19 - 4 * e) : word_x8 >> (4 * e - 19);
    return __uint_as_float((m & (0xfu << 19)) | 0x3F800000u);
}

template <int R>
__global__ void qgemv_q4_kernel(__nv_bfloat16 *y, const __nv_bfloat16 *x, const uint8_t *codes, const float *scales,
                                const __nv_bfloat16 *bias, int64_t nout, int64_t k, int group, sq_perturb p) {
    extern __shared__ float smem[];
    float *xs = smem, *xsum = xs + R * k, *row_scales = xsum + R * (k / 32);
    int chunks = (int)(k / 32);
    for (int64_t i = threadIdx.x; i < R * k; i += blockDim.x) xs[i] = __bfloat162float(x[i]);
    __syncthreads();
    for (int i = threadIdx.x; i < R * chunks; i += blockDim.x) {
        const float *c = xs + (int64_t)(i / chunks) * k + (int64_t)(i % chunks) * 32;
        float t = 0;
        for (int e = 0; e < 32; e++) t += c[e];
        xsum[i] = t;
    }
    int64_t n = (int64_t)blockIdx.x * QGEMV_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    int groups_per_row = (int)(k / group);
    float *sc = row_scales + (threadIdx.x / 32) * groups_per_row;
    if (n < nout)
        for (int g = lane; g < groups_per_row; g += 32) sc[g] = perturbed_scale(scales, n * groups_per_row + g, p);
    __syncthreads();
    if (n >= nout) return;
    float acc[R];
    for (int r = 0; r < R; r++) acc[r] = 0.0f;
    for (int chunk = lane; chunk < chunks; chunk += 32) {
        int64_t col = (int64_t)chunk * 32;
        uint4 c = *(const uint4 *)(codes + (n * k + col) / 2);
        uint32_t words[4] = {c.x ^ 0x88888888u, c.y ^ 0x88888888u, c.z ^ 0x88888888u, c.w ^ 0x88888888u};
        float part[R];
        for (int r = 0; r < R; r++) part[r] = 0.0f;
        for (int w = 0; w < 4; w++) {
            float f[8];
            for (int e = 0; e < 8; e++) f[e] = nibble_as_f(words[w], e);
            for (int r = 0; r < R; r++) {
                const float4 *xv = (const float4 *)(xs + r * k + col + 8 * w);
                float4 a = xv[0], b = xv[1];
                part[r] = fmaf(a.x, f[0], part[r]); part[r] = fmaf(a.y, f[1], part[r]);
                part[r] = fmaf(a.z, f[2], part[r]); part[r] = fmaf(a.w, f[3], part[r]);
                part[r] = fmaf(b.x, f[4], part[r]); part[r] = fmaf(b.y, f[5], part[r]);
                part[r] = fmaf(b.z, f[6], part[r]); part[r] = fmaf(b.w, f[7], part[r]);
            }
        }
        float s = sc[col / group];
        for (int r = 0; r < R; r++) acc[r] = fmaf(s, 16.0f * part[r] - 24.0f * xsum[r * chunks + chunk], acc[r]);
    }
    for (int r = 0; r < R; r++) {
        float v = acc[r];
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) y[r * nout + n] = __float2bfloat16_rn(bias ? v + __bfloat162float(bias[n]) : v);
    }
}

template <int R>
static void launch(void *y, const void *x, const uint8_t *codes, const float *scales, const void *bias, int64_t nout,
                   int64_t k, int group, const sq_perturb &p) {
    static bool opted_in = false;   // once per instantiation: allow more than 48 KiB of shared memory
    if (!opted_in) {
        SQ_CUDA_CHECK(cudaFuncSetAttribute(qgemv_q4_kernel<R>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           (int)QGEMV_SMEM_MAX));
        opted_in = true;
    }
    unsigned blocks = (unsigned)((nout + QGEMV_WARPS - 1) / QGEMV_WARPS);
    qgemv_q4_kernel<R><<<blocks, QGEMV_WARPS * 32, qgemv_smem(R, k, group)>>>(
        (__nv_bfloat16 *)y, (const __nv_bfloat16 *)x, codes, scales, (const __nv_bfloat16 *)bias, nout, k, group, p);
}

extern "C" bool cuda_qgemv_q4_supported(const void *x, const uint8_t *codes, int64_t rows, int64_t k, int group) {
    return rows >= 1 && rows <= SQ_QGEMV_MAX_ROWS && k % 32 == 0 && group % 32 == 0 && (uintptr_t)x % 16 == 0 &&
           (uintptr_t)codes % 16 == 0 && qgemv_smem(rows, k, group) <= QGEMV_SMEM_MAX;
}

extern "C" void cuda_qgemv_q4(void *y_bf16, const void *x_bf16, const uint8_t *codes, const float *scales,
                              const void *bias_bf16, int64_t rows, int64_t nout, int64_t k, int group,
                              const sq_perturb *p) {
    SQ_CHECK(cuda_qgemv_q4_supported(x_bf16, codes, rows, k, group),
             "cuda qgemv_q4: %lld rows, K %lld, group %d not supported", (long long)rows, (long long)k, group);
    sq_perturb none = {0, 0, 0, 0.0f, 0};
    const sq_perturb &pp = p ? *p : none;
    if (nout == 0) return;
    switch (rows) {
    case 1: launch<1>(y_bf16, x_bf16, codes, scales, bias_bf16, nout, k, group, pp); break;
    case 2: launch<2>(y_bf16, x_bf16, codes, scales, bias_bf16, nout, k, group, pp); break;
    case 3: launch<3>(y_bf16, x_bf16, codes, scales, bias_bf16, nout, k, group, pp); break;
    case 4: launch<4>(y_bf16, x_bf16, codes, scales, bias_bf16, nout, k, group, pp); break;
    case 5: launch<5>(y_bf16, x_bf16, codes, scales, bias_bf16, nout, k, group, pp); break;
    case 6: launch<6>(y_bf16, x_bf16, codes, scales, bias_bf16, nout, k, group, pp); break;
    case 7: launch<7>(y_bf16, x_bf16, codes, scales, bias_bf16, nout, k, group, pp); break;
    default: launch<8>(y_bf16, x_bf16, codes, scales, bias_bf16, nout, k, group, pp); break;
    }
    SQ_CUDA_CHECK(cudaGetLastError());
}
