// kernels/cuda/quantize.cu: the int4 quantiser (kernels/quant.h, sq_quantize_q4_src)
// on the GPU, for `sd-qzo quantize` and the first `train` of a dense --model.
// Bit-identical to the CPU: each thread takes one group and runs the plain
// reference loops of tests/quant_ref.h in the same order, with every floating-point
// operation written as its correctly rounded intrinsic (__fmul_rn, __fdiv_rn,
// __dsub_rn, __dmul_rn, __dadd_rn), so nvcc cannot contract a multiply and an add
// into an fma or reorder anything; fminf/fmaxf return the number beside a NaN and
// rintf rounds ties to even, as in C; denormals are kept (no fast math, no -ftz).
// The CPU's division-free path equals these loops (tests/unit/test_quant_fast.c),
// and tests/gpu/test_gpu_quantize.c compares this kernel with both.
// The GPU has the arithmetic to spare: the division costs nothing against copying
// the weights over PCIe. Each group's error and energy come back, and the host adds
// them in group order, as the CPU does.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>

#include "kernels/cuda/check.h"
#include "kernels/cuda/stream.cuh"
#include "kernels/cuda/cuda_ops.h"

#define QZ_THREADS 128

template <int G>
__device__ __forceinline__ void load_group(float *x, const void *src, sq_dtype dtype, int64_t gi) {
    if (dtype == SQ_F32) {
        const float4 *p = (const float4 *)((const float *)src + gi * G);
#pragma unroll
        for (int v = 0; v < G / 4; v++) {
            float4 f = p[v];
            x[4 * v] = f.x; x[4 * v + 1] = f.y; x[4 * v + 2] = f.z; x[4 * v + 3] = f.w;
        }
    } else {
        const uint4 *p = (const uint4 *)((const uint16_t *)src + gi * G);
#pragma unroll
        for (int v = 0; v < G / 8; v++) {
            uint4 u = p[v];
            uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
            for (int h = 0; h < 8; h++) {
                uint16_t b = (uint16_t)(w[h / 2] >> (16 * (h & 1)));
                if (dtype == SQ_BF16) x[8 * v + h] = __uint_as_float((uint32_t)b << 16);   // exact
                else x[8 * v + h] = __half2float(__ushort_as_half(b));                   // exact
            }
        }
    }
}

template <int G>
__global__ void __launch_bounds__(QZ_THREADS) quantize_q4_kernel(const void *src, sq_dtype dtype, int64_t ngroups,
                                                                 uint8_t *codes, float *scales, double *gerr,
                                                                 double *genergy) {
    int64_t gi = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (gi >= ngroups) return;
    float x[G];
    load_group<G>(x, src, dtype, gi);
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < G; i++) amax = fmaxf(amax, fabsf(x[i]));
    double energy = 0.0;
#pragma unroll
    for (int i = 0; i < G; i++) energy = __dadd_rn(energy, __dmul_rn((double)x[i], (double)x[i]));
    float best_scale = 0.0f;
    double best_err = 0.0;
    if (amax > 0.0f) {
        best_err = __longlong_as_double(0x7ff0000000000000ll);   // +inf
        for (int r = 100; r >= 50; r -= 2) {
            float s = __fdiv_rn(__fdiv_rn(__fmul_rn(amax, (float)r), 100.0f), 7.0f);
            double err = 0.0;
#pragma unroll
            for (int i = 0; i < G; i++) {
                float q = fminf(fmaxf(rintf(__fdiv_rn(x[i], s)), -7.0f), 7.0f);
                double d = __dsub_rn((double)x[i], (double)__fmul_rn(q, s));
                err = __dadd_rn(err, __dmul_rn(d, d));
            }
            if (err < best_err) {
                best_err = err;
                best_scale = s;
            }
        }
    } else {
        best_err = energy;   // the reference's sum of x², the same loop
    }
    scales[gi] = best_scale;
    gerr[gi] = best_err;
    genergy[gi] = energy;
    uint32_t *out = (uint32_t *)(codes + gi * (G / 2));   // G/2 bytes, 4-byte aligned for G >= 8
#pragma unroll
    for (int v = 0; v < G / 8; v++) {
        uint32_t word = 0;
#pragma unroll
        for (int h = 0; h < 8; h++) {
            float xi = x[8 * v + h];
            int q = best_scale > 0.0f ? (int)fminf(fmaxf(rintf(__fdiv_rn(xi, best_scale)), -7.0f), 7.0f) : 0;
            word |= (uint32_t)(q & 0xf) << (4 * h);   // element 2i low nibble, 2i+1 high
        }
        out[v] = word;
    }
}

int cuda_quantize_q4(const void *w, sq_dtype dtype, int64_t nout, int64_t k, int group, uint8_t *codes,
                     float *scales, double *err, double *energy) {
    int64_t n = nout * k, ngroups = n / group;
    size_t src_bytes = (size_t)n * (dtype == SQ_F32 ? 4 : 2);
    void *d_src = NULL;
    uint8_t *d_codes = NULL;
    float *d_scales = NULL;
    double *d_err = NULL, *h_err = NULL;   // per group: error, then energy
    int rc = SQ_FAIL;
    cudaError_t e = cudaMalloc(&d_src, src_bytes);
    if (e == cudaSuccess) e = cudaMalloc((void **)&d_codes, (size_t)n / 2);
    if (e == cudaSuccess) e = cudaMalloc((void **)&d_scales, (size_t)ngroups * sizeof(float));
    if (e == cudaSuccess) e = cudaMalloc((void **)&d_err, (size_t)ngroups * 2 * sizeof(double));
    if (e == cudaSuccess) e = cudaMemcpy(d_src, w, src_bytes, cudaMemcpyHostToDevice);
    if (e == cudaSuccess) {
        unsigned blocks = (unsigned)((ngroups + QZ_THREADS - 1) / QZ_THREADS);
        double *d_energy = d_err + ngroups;
        switch (group) {
        case 32: quantize_q4_kernel<32><<<blocks, QZ_THREADS, 0, SQ_STREAM>>>(d_src, dtype, ngroups, d_codes, d_scales, d_err, d_energy); break;
        case 64: quantize_q4_kernel<64><<<blocks, QZ_THREADS, 0, SQ_STREAM>>>(d_src, dtype, ngroups, d_codes, d_scales, d_err, d_energy); break;
        case 128: quantize_q4_kernel<128><<<blocks, QZ_THREADS, 0, SQ_STREAM>>>(d_src, dtype, ngroups, d_codes, d_scales, d_err, d_energy); break;
        default: e = cudaErrorInvalidValue; break;
        }
        if (e == cudaSuccess) e = cudaGetLastError();
    }
    if (e == cudaSuccess) e = cudaMemcpy(codes, d_codes, (size_t)n / 2, cudaMemcpyDeviceToHost);
    if (e == cudaSuccess) e = cudaMemcpy(scales, d_scales, (size_t)ngroups * sizeof(float), cudaMemcpyDeviceToHost);
    if (e == cudaSuccess) {
        h_err = (double *)malloc((size_t)ngroups * 2 * sizeof(double));
        if (!h_err) e = cudaErrorMemoryAllocation;
    }
    if (e == cudaSuccess) e = cudaMemcpy(h_err, d_err, (size_t)ngroups * 2 * sizeof(double), cudaMemcpyDeviceToHost);
    if (e == cudaSuccess) {
        double total = 0, sumsq = 0;   // in group order, as the CPU
        for (int64_t g = 0; g < ngroups; g++) {
            total += h_err[g];
            sumsq += h_err[ngroups + g];
        }
        *err = total;
        if (energy) *energy = sumsq;
        rc = SQ_OK;
    } else {
        rc = sq_errorf("CUDA error %s quantising a %lldx%lld weight (group %d)", cudaGetErrorString(e),
                       (long long)nout, (long long)k, group);
    }
    free(h_err);
    cudaFree(d_src);   // after an error these are best effort: the first error is the one reported
    cudaFree(d_codes);
    cudaFree(d_scales);
    cudaFree(d_err);
    return rc;
}
