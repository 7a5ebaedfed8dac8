// kernels/cuda/qgemv.cu: y (R, Nout) = x (R, K) · dequant(codes, scales, p)ᵀ + b for
// a handful of rows R (≤ SQ_QGEMV_MAX_ROWS), straight from the int4 codes.
//
// Why: the adaLN modulation linears of every MMDiT block take one row per sample
// (silu of the timestep embedding) but hold a third of SD3.5's weights. Dequantising
// them to bf16 and calling cuBLAS writes and reads 2 bytes per weight for 2 FLOPs;
// reading the 4-bit codes once is about 8x less memory traffic.
//
// Numerics: as the CPU reference, the weights are not rounded to bf16: per 32-code
// chunk Σ x·q is accumulated in fp32 (q exact, kernels/cuda/dequant_q4.cuh) and
// scaled by the chunk's perturbed scale s_eff in fp32; the bias is added in fp32
// and the sum rounded once to bf16. The + and − passes take this same path.
#include <cuda_bf16.h>
#include <stdint.h>

#include "kernels/cuda/check.h"
#include "kernels/cuda/stream.cuh"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/dequant_q4.cuh"
#include "kernels/cuda/live_perturb.cuh"

#define QGEMV_WARPS 8   // output rows per block, one warp each

// One warp per output feature n. Each lane first issues the loads of its 32-code
// chunks of the row (one 16 bytes each, QGEMV_CHUNKS of them at a time), then the
// warp computes the row's perturbed scales, one per group (Philox + Box-Muller, the
// costly part), into its slice of shared memory while those loads are in flight;
// then each lane dots its chunks with the same columns of every input row, and a
// shuffle reduction finishes each output. (Computing the scales before issuing the
// loads left the kernel latency-bound: 23 µs for an 8 MB Large adaLN layer.)
// Every lane adds its chunks in column order as before, so the sums are the same bits.
#define QGEMV_CHUNKS 4

template <int R>
__device__ __forceinline__ void dot_chunk(float (&acc)[R], const __nv_bfloat16 *x, int64_t k, int64_t col, uint4 c,
                                          float s) {
    uint32_t words[4] = {c.x, c.y, c.z, c.w};
    float part[R];
    for (int r = 0; r < R; r++) part[r] = 0.0f;
    for (int w = 0; w < 4; w++) {
        float q[8];
        for (int e = 0; e < 8; e++) q[e] = code_to_float(words[w] >> (4 * e));
        for (int r = 0; r < R; r++) {
            uint4 xv = *(const uint4 *)(x + r * k + col + 8 * w);
            const __nv_bfloat16 *xe = (const __nv_bfloat16 *)&xv;
            for (int e = 0; e < 8; e++) part[r] = fmaf(__bfloat162float(xe[e]), q[e], part[r]);
        }
    }
    for (int r = 0; r < R; r++) acc[r] = fmaf(s, part[r], acc[r]);
}

template <int R>
__global__ void qgemv_q4_kernel(__nv_bfloat16 *y, const __nv_bfloat16 *x, const uint8_t *codes, const float *scales,
                                const __nv_bfloat16 *bias, int64_t nout, int64_t k, int group, cuda_perturb cp) {
    extern __shared__ float row_scales[];   // QGEMV_WARPS x (k / group)
    int64_t n = (int64_t)blockIdx.x * QGEMV_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (n >= nout) return;
    int groups_per_row = (int)(k / group);
    const uint8_t *row = codes + n * k / 2;
    // the first QGEMV_CHUNKS chunks of this lane, loaded before the RNG
    uint4 c[QGEMV_CHUNKS];
    for (int i = 0; i < QGEMV_CHUNKS; i++) {
        int64_t col = ((int64_t)lane + 32 * i) * 32;
        c[i] = col < k ? *(const uint4 *)(row + col / 2) : make_uint4(0, 0, 0, 0);
    }
    float *sc = row_scales + (threadIdx.x / 32) * groups_per_row;
    const sq_perturb p = cuda_perturb_resolve(cp);
    for (int g = lane; g < groups_per_row; g += 32) sc[g] = perturbed_scale(scales, n * groups_per_row + g, p);
    __syncwarp();
    float acc[R];
    for (int r = 0; r < R; r++) acc[r] = 0.0f;
    for (int i = 0; i < QGEMV_CHUNKS; i++) {
        int64_t col = ((int64_t)lane + 32 * i) * 32;
        if (col < k) dot_chunk<R>(acc, x, k, col, c[i], sc[col / group]);
    }
    // rows longer than QGEMV_CHUNKS·1024 codes: the rest, one chunk at a time
    for (int64_t col = ((int64_t)lane + 32 * QGEMV_CHUNKS) * 32; col < k; col += 32 * 32)
        dot_chunk<R>(acc, x, k, col, *(const uint4 *)(row + col / 2), sc[col / group]);
    for (int r = 0; r < R; r++) {
        float v = acc[r];
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) y[r * nout + n] = __float2bfloat16_rn(bias ? v + __bfloat162float(bias[n]) : v);
    }
}

template <int R>
static void launch(void *y, const void *x, const uint8_t *codes, const float *scales, const void *bias, int64_t nout,
                   int64_t k, int group, const cuda_perturb &p) {
    unsigned blocks = (unsigned)((nout + QGEMV_WARPS - 1) / QGEMV_WARPS);
    size_t smem = (size_t)QGEMV_WARPS * (size_t)(k / group) * sizeof(float);
    qgemv_q4_kernel<R><<<blocks, QGEMV_WARPS * 32, smem, SQ_STREAM>>>((__nv_bfloat16 *)y, (const __nv_bfloat16 *)x, codes, scales,
                                                     (const __nv_bfloat16 *)bias, nout, k, group, p);
}

extern "C" bool cuda_qgemv_q4_supported(const void *x, const uint8_t *codes, int64_t rows, int64_t k, int group) {
    // the row scales of 8 warps must fit the 48 KiB of shared memory a launch gets by default
    return rows >= 1 && rows <= SQ_QGEMV_MAX_ROWS && k % 32 == 0 && group % 32 == 0 && (uintptr_t)x % 16 == 0 &&
           (uintptr_t)codes % 16 == 0 && (k / group) * QGEMV_WARPS * (int64_t)sizeof(float) <= 48 * 1024;
}

extern "C" void cuda_qgemv_q4(void *y_bf16, const void *x_bf16, const uint8_t *codes, const float *scales,
                              const void *bias_bf16, int64_t rows, int64_t nout, int64_t k, int group,
                              const sq_perturb *p) {
    SQ_CHECK(cuda_qgemv_q4_supported(x_bf16, codes, rows, k, group),
             "cuda qgemv_q4: %lld rows, K %lld, group %d not supported", (long long)rows, (long long)k, group);
    if (nout == 0) return;
    const cuda_perturb pp = cuda_perturb_of(p);
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
