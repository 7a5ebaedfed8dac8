// kernels/cuda/elementwise.cu: bf16 elementwise ops, biases, fill, and the adaLN
// helpers (modulate, gated residual), computed in fp32 per element.
#include "kernels/cuda/common.cuh"

template <typename E>
__global__ void axpby_kernel(E *out, float alpha, const E *a, float beta, const E *b, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        st(out, i, alpha * ld(a, i) + beta * ld(b, i));
}
template <typename E>
__global__ void mul_kernel(E *out, const E *a, const E *b, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        st(out, i, ld(a, i) * ld(b, i));
}
template <typename E>
__global__ void scale_kernel(E *out, const E *x, float alpha, float beta, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        st(out, i, alpha * ld(x, i) + beta);
}
template <typename E>
__global__ void fill_kernel(E *out, float v, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        st(out, i, v);
}
template <typename E>
__global__ void row_bias_kernel(E *x, const E *b, int64_t n, int64_t C) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        st(x, i, ld(x, i) + ld(b, i % C));
}
template <typename E>
__global__ void channel_bias_kernel(E *x, const E *b, int64_t n, int64_t HW) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        st(x, i, ld(x, i) + ld(b, i / HW));
}
template <typename E>
__global__ void modulate_kernel(E *out, const E *x, const E *shift, const E *scale, int64_t n, int64_t T,
                                int64_t C) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t c = i % C, bc = (i / (T * C)) * C + c;
        st(out, i, ld(x, i) * (1.0f + ld(scale, bc)) + ld(shift, bc));
    }
}
template <typename E>
__global__ void gated_add_kernel(E *x, const E *gate, const E *y, int64_t n, int64_t T, int64_t C) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float g = gate ? ld(gate, (i / (T * C)) * C + i % C) : 1.0f;
        st(x, i, ld(x, i) + g * ld(y, i));
    }
}

extern "C" void cuda_axpby(sq_dtype dt, void *out, float alpha, const void *a, float beta, const void *b, int64_t n) {
    if (!n) return;
    SQ_DISPATCH_FLOAT(dt, axpby_kernel<E><<<grid_for(n, 256), 256>>>((E *)out, alpha, (const E *)a, beta, (const E *)b, n));
    SQ_LAUNCH_CHECK();
}
extern "C" void cuda_mul(sq_dtype dt, void *out, const void *a, const void *b, int64_t n) {
    if (!n) return;
    SQ_DISPATCH_FLOAT(dt, mul_kernel<E><<<grid_for(n, 256), 256>>>((E *)out, (const E *)a, (const E *)b, n));
    SQ_LAUNCH_CHECK();
}
extern "C" void cuda_scale(sq_dtype dt, void *out, const void *x, float alpha, float beta, int64_t n) {
    if (!n) return;
    SQ_DISPATCH_FLOAT(dt, scale_kernel<E><<<grid_for(n, 256), 256>>>((E *)out, (const E *)x, alpha, beta, n));
    SQ_LAUNCH_CHECK();
}
extern "C" void cuda_fill(sq_dtype dt, void *out, float v, int64_t n) {
    if (!n) return;
    SQ_DISPATCH_FLOAT(dt, fill_kernel<E><<<grid_for(n, 256), 256>>>((E *)out, v, n));
    SQ_LAUNCH_CHECK();
}
extern "C" void cuda_add_row_bias(sq_dtype dt, void *x, const void *b, int64_t rows, int64_t C) {
    if (!rows || !C) return;
    SQ_DISPATCH_FLOAT(dt, row_bias_kernel<E><<<grid_for(rows * C, 256), 256>>>((E *)x, (const E *)b, rows * C, C));
    SQ_LAUNCH_CHECK();
}
extern "C" void cuda_add_channel_bias(sq_dtype dt, void *x, const void *b, int64_t BC, int64_t HW) {
    if (!BC || !HW) return;
    SQ_DISPATCH_FLOAT(dt, channel_bias_kernel<E><<<grid_for(BC * HW, 256), 256>>>((E *)x, (const E *)b, BC * HW, HW));
    SQ_LAUNCH_CHECK();
}
extern "C" void cuda_modulate(sq_dtype dt, void *out, const void *x, const void *shift, const void *scale, int64_t B, int64_t T,
                              int64_t C) {
    int64_t n = B * T * C;
    if (!n) return;
    SQ_DISPATCH_FLOAT(dt, modulate_kernel<E><<<grid_for(n, 256), 256>>>((E *)out, (const E *)x, (const E *)shift, (const E *)scale, n, T, C));
    SQ_LAUNCH_CHECK();
}
extern "C" void cuda_gated_add(sq_dtype dt, void *x, const void *gate, const void *y, int64_t B, int64_t T, int64_t C) {
    int64_t n = B * T * C;
    if (!n) return;
    SQ_DISPATCH_FLOAT(dt, gated_add_kernel<E><<<grid_for(n, 256), 256>>>((E *)x, (const E *)gate, (const E *)y, n, T, C));
    SQ_LAUNCH_CHECK();
}
