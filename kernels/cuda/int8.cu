// kernels/cuda/int8.cu: int8 dequantisation (kernels/int8.h) on the device: one
// thread per 4 codes (one 32-bit load), each value the exact fp32 product
// scale · code rounded once to the output dtype, so bf16 results equal the CPU
// reference rounded to bf16.
#include "kernels/cuda/common.cuh"

template <typename E>
__global__ void dequant_i8_kernel(E *out, const int8_t *codes, const float *scales, int64_t nout, int64_t k) {
    int64_t quads = k / 4, rows_quads = nout * quads;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < rows_quads; t += (int64_t)gridDim.x * blockDim.x) {
        int64_t n = t / quads, col = (t % quads) * 4;
        float s = scales[n];
        char4 c = *(const char4 *)(codes + n * k + col);
        E *o = out + n * k + col;
        st(o, 0, s * (float)c.x);
        st(o, 1, s * (float)c.y);
        st(o, 2, s * (float)c.z);
        st(o, 3, s * (float)c.w);
    }
}

// Rows whose length is not a multiple of 4 (never in T5; kept for small tests).
template <typename E>
__global__ void dequant_i8_scalar_kernel(E *out, const int8_t *codes, const float *scales, int64_t nout, int64_t k) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < nout * k; i += (int64_t)gridDim.x * blockDim.x)
        st(out, i, scales[i / k] * (float)codes[i]);
}

extern "C" void cuda_dequant_i8(sq_dtype dt, void *out, const int8_t *codes, const float *scales, int64_t nout, int64_t k) {
    if (nout * k == 0) return;
    // char4 loads need 4-byte aligned rows: K % 4 == 0 and an aligned base (cudaMalloc / arena give 256).
    bool vec = k % 4 == 0 && ((uintptr_t)codes & 3) == 0;
    if (vec)
        SQ_DISPATCH_FLOAT(dt, dequant_i8_kernel<E><<<grid_for(nout * (k / 4), 256), 256, 0, SQ_STREAM>>>((E *)out, codes, scales, nout, k));
    else
        SQ_DISPATCH_FLOAT(dt, dequant_i8_scalar_kernel<E><<<grid_for(nout * k, 256), 256, 0, SQ_STREAM>>>((E *)out, codes, scales, nout, k));
    SQ_LAUNCH_CHECK();
}
