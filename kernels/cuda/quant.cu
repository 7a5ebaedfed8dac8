// kernels/cuda/quant.cu: CUDA versions of kernels/quant.h: the perturbed int4
// dequantisation (bf16 out, for dequantise-then-cuBLAS) and the QZO scale update.
// Both evaluate exactly the expressions of kernels/cpu/quant.c through the shared
// kernels/rng.h, so their results are bit-identical to the CPU reference (the
// dequantised value s·q is exact in fp32, then rounded once to bf16).
#include <cuda_bf16.h>
#include <stdint.h>

#include "kernels/cuda/check.h"
#include "kernels/quant.h"
#include "kernels/rng.h"

// The scale of group j under perturbation p: s + sign·eps·z_j, the same fmaf as the
// CPU's, so both devices dequantise to the same bits.
__device__ __forceinline__ float perturbed_scale(const float *scales, int64_t j, const sq_perturb &p) {
    float s = scales[j];
    if (p.sign != 0) s = fmaf((float)p.sign * p.eps, sq_rng_normal(p.seed, p.step, p.index_base + (uint64_t)j), s);
    return s;
}

// One code byte (two signed 4-bit codes, low nibble first) times s, as two bf16.
__device__ __forceinline__ void dequant_byte(uint32_t byte, float s, __nv_bfloat16 *o) {
    int lo = (int)(byte & 0xf), hi = (int)((byte >> 4) & 0xf);
    lo = lo >= 8 ? lo - 16 : lo;
    hi = hi >= 8 ? hi - 16 : hi;
    o[0] = __float2bfloat16_rn(s * (float)lo);
    o[1] = __float2bfloat16_rn(s * (float)hi);
}

// One thread per (row, group, 8-element chunk): reads 4 code bytes, writes 8 bf16.
__global__ void dequant_q4_kernel(__nv_bfloat16 *out, const uint8_t *codes, const float *scales, int64_t nout,
                                  int64_t k, int group, sq_perturb p) {
    int64_t chunks_per_row = k / 8;
    int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= nout * chunks_per_row) return;
    int64_t n = t / chunks_per_row;
    int64_t col = (t % chunks_per_row) * 8;
    float s = perturbed_scale(scales, n * (k / group) + col / group, p);
    const uint8_t *c = codes + (n * k + col) / 2;
    __nv_bfloat16 *o = out + n * k + col;
    for (int b = 0; b < 4; b++) dequant_byte(c[b], s, o + 2 * b);
}

// The wide version for K and group multiples of 32 (every SD3.5 layer): one thread
// per 32 elements of a row, so the scale and its perturbation (Philox + Box-Muller,
// the costly part) are computed once per 32 weights instead of once per 8, codes
// arrive in one 16-byte load and the 64 output bytes leave in four 16-byte stores.
// The arithmetic per element is the same as above, so the result is bit-identical.
__global__ void dequant_q4_x32_kernel(__nv_bfloat16 *out, const uint8_t *codes, const float *scales, int64_t nout,
                                      int64_t k, int group, sq_perturb p) {
    int64_t chunks_per_row = k / 32;
    int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= nout * chunks_per_row) return;
    int64_t n = t / chunks_per_row;
    int64_t col = (t % chunks_per_row) * 32;
    float s = perturbed_scale(scales, n * (k / group) + col / group, p);
    uint4 c = *(const uint4 *)(codes + (n * k + col) / 2);
    uint32_t words[4] = {c.x, c.y, c.z, c.w};
    uint4 *o = (uint4 *)(out + n * k + col);
    for (int w = 0; w < 4; w++) {
        __align__(16) __nv_bfloat16 v[8];
        // little-endian: byte b of the word is code byte 4w + b
        for (int b = 0; b < 4; b++) dequant_byte(words[w] >> (8 * b), s, v + 2 * b);
        o[w] = *(const uint4 *)v;
    }
}

__global__ void qzo_update_kernel(float *scales, int64_t count, sq_perturb p, float coeff) {
    int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= count) return;
    float z = sq_rng_normal(p.seed, p.step, p.index_base + (uint64_t)j);
    float s = fmaf(-coeff, z, scales[j]);
    scales[j] = s > 0.0f ? s : 0.0f;
}

__global__ void rng_normal_kernel(float *out, int64_t n, uint64_t seed, uint64_t step, uint64_t index_base) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = sq_rng_normal(seed, step, index_base + (uint64_t)i);
}

static unsigned blocks_for(int64_t n, int threads) { return (unsigned)((n + threads - 1) / threads); }

extern "C" void cuda_dequant_q4(void *out_bf16, const uint8_t *codes, const float *scales, int64_t nout, int64_t k,
                                int group, const sq_perturb *p) {
    SQ_CHECK(k % 8 == 0 && group % 8 == 0, "cuda dequant_q4: K (%lld) and group (%d) must be multiples of 8",
             (long long)k, group);
    sq_perturb none = {0, 0, 0, 0.0f, 0};
    if (nout * k == 0) return;
    bool aligned16 = ((uintptr_t)codes % 16 == 0) && ((uintptr_t)out_bf16 % 16 == 0);
    if (k % 32 == 0 && group % 32 == 0 && aligned16) {
        int64_t threads_needed = nout * (k / 32);
        dequant_q4_x32_kernel<<<blocks_for(threads_needed, 256), 256>>>((__nv_bfloat16 *)out_bf16, codes, scales, nout,
                                                                         k, group, p ? *p : none);
    } else {
        int64_t threads_needed = nout * (k / 8);
        dequant_q4_kernel<<<blocks_for(threads_needed, 256), 256>>>((__nv_bfloat16 *)out_bf16, codes, scales, nout, k,
                                                                     group, p ? *p : none);
    }
    SQ_CUDA_CHECK(cudaGetLastError());
}

extern "C" void cuda_qzo_update(float *scales, int64_t count, const sq_perturb *p, float coeff) {
    if (count == 0) return;
    qzo_update_kernel<<<blocks_for(count, 256), 256>>>(scales, count, *p, coeff);
    SQ_CUDA_CHECK(cudaGetLastError());
}

// For the host/device bit-identity test of kernels/rng.h.
extern "C" int cuda_rng_normals(float *host_out, int64_t n, uint64_t seed, uint64_t step, uint64_t index_base) {
    float *d = NULL;
    SQ_CUDA_TRY(cudaMalloc(&d, (size_t)n * sizeof(float)));
    rng_normal_kernel<<<blocks_for(n, 256), 256>>>(d, n, seed, step, index_base);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) e = cudaMemcpy(host_out, d, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost);
    cudaFree(d);
    if (e != cudaSuccess) return sq_errorf("cuda_rng_normals: %s", cudaGetErrorString(e));
    return SQ_OK;
}
