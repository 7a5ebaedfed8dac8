// kernels/cuda/layout.cu: the strided 4-D copy behind concat / slice / permute,
// plain device copies, and f32 <-> bf16 conversion.
#include "kernels/cuda/common.cuh"

template <typename T>
__global__ void strided_copy_kernel(T *dst, const T *src, int64_t s1, int64_t s2, int64_t s3, int64_t st0, int64_t st1,
                                    int64_t st2, int64_t st3, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t i3 = i % s3, i2 = (i / s3) % s2, i1 = (i / (s3 * s2)) % s1, i0 = i / (s3 * s2 * s1);
        dst[i] = src[i0 * st0 + i1 * st1 + i2 * st2 + i3 * st3];
    }
}

extern "C" void cuda_strided_copy(void *dst, const void *src, const int64_t shape[4], const int64_t st[4], size_t es) {
    int64_t n = shape[0] * shape[1] * shape[2] * shape[3];
    if (!n) return;
    unsigned g = grid_for(n, 256);
    if (es == 2)
        strided_copy_kernel<uint16_t><<<g, 256, 0, SQ_STREAM>>>((uint16_t *)dst, (const uint16_t *)src, shape[1], shape[2], shape[3], st[0], st[1], st[2], st[3], n);
    else if (es == 4)
        strided_copy_kernel<uint32_t><<<g, 256, 0, SQ_STREAM>>>((uint32_t *)dst, (const uint32_t *)src, shape[1], shape[2], shape[3], st[0], st[1], st[2], st[3], n);
    else if (es == 1)
        strided_copy_kernel<uint8_t><<<g, 256, 0, SQ_STREAM>>>((uint8_t *)dst, (const uint8_t *)src, shape[1], shape[2], shape[3], st[0], st[1], st[2], st[3], n);
    else
        SQ_CHECK(0, "cuda_strided_copy: element size %zu not supported", es);
    SQ_LAUNCH_CHECK();
}

// height rows of width bytes, each at its own pitch in dst and src: concat and slice
// along a middle dimension (kernels/ops.c). With every size and pointer a multiple of
// 16 bytes, one thread moves 16 bytes and the index arithmetic is once per vector:
// the element-wise kernel above, with four 64-bit divisions per 2-byte element, took
// 31 % of an SD3.5 Large forward at batch 16 in the joint attention's concats.
template <typename V>
__global__ void copy_2d_kernel(char *dst, int64_t dst_pitch, const char *src, int64_t src_pitch, int64_t row_vecs,
                               int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / row_vecs, c = i - r * row_vecs;
        ((V *)(dst + r * dst_pitch))[c] = ((const V *)(src + r * src_pitch))[c];
    }
}

extern "C" void cuda_copy_2d(void *dst, int64_t dst_pitch, const void *src, int64_t src_pitch, int64_t width,
                             int64_t height) {
    if (width == 0 || height == 0) return;
    uintptr_t all = (uintptr_t)dst | (uintptr_t)src | (uintptr_t)dst_pitch | (uintptr_t)src_pitch | (uintptr_t)width;
    if (all % 16 == 0) {
        int64_t n = width / 16 * height;
        copy_2d_kernel<uint4><<<grid_for(n, 256), 256, 0, SQ_STREAM>>>((char *)dst, dst_pitch, (const char *)src, src_pitch, width / 16, n);
    } else if (all % 4 == 0) {
        int64_t n = width / 4 * height;
        copy_2d_kernel<uint32_t><<<grid_for(n, 256), 256, 0, SQ_STREAM>>>((char *)dst, dst_pitch, (const char *)src, src_pitch, width / 4, n);
    } else {
        int64_t n = width * height;
        copy_2d_kernel<char><<<grid_for(n, 256), 256, 0, SQ_STREAM>>>((char *)dst, dst_pitch, (const char *)src, src_pitch, width, n);
    }
    SQ_LAUNCH_CHECK();
}

extern "C" void cuda_copy(void *dst, const void *src, size_t bytes) {
    SQ_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, SQ_STREAM));
}

__global__ void f32_to_bf16_kernel(bf16 *dst, const float *src, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}
__global__ void bf16_to_f32_kernel(float *dst, const bf16 *src, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = __bfloat162float(src[i]);
}

extern "C" void cuda_convert(void *dst, sq_dtype dt, const void *src, sq_dtype sdt, int64_t n) {
    if (!n) return;
    if (dt == SQ_BF16 && sdt == SQ_F32) f32_to_bf16_kernel<<<grid_for(n, 256), 256, 0, SQ_STREAM>>>((bf16 *)dst, (const float *)src, n);
    else if (dt == SQ_F32 && sdt == SQ_BF16) bf16_to_f32_kernel<<<grid_for(n, 256), 256, 0, SQ_STREAM>>>((float *)dst, (const bf16 *)src, n);
    else SQ_CHECK(0, "cuda_convert: %s -> %s not supported", sq_dtype_name(sdt), sq_dtype_name(dt));
    SQ_LAUNCH_CHECK();
}
