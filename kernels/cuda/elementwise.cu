// kernels/cuda/elementwise.cu: bf16 elementwise ops, biases, fill, and the adaLN
// helpers (modulate, gated residual), computed in fp32 per element. The adaLN
// helpers move 8 elements per 16-byte access when C % 8 == 0 and the pointers are
// aligned (they run on whole (B,T,C) activations every block), scalar otherwise.
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
__global__ void channel_bias_kernel(E *x, const E *b, int64_t n, int64_t HW) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        st(x, i, ld(x, i) + ld(b, i / HW));
}
// The adaLN kernels run on a grid of (units of V elements across C, tokens, samples):
// the sample is blockIdx.z, so there is no division per element, and a thread loads
// its shift / scale / gate units once for all the tokens it visits.
template <typename E, int V>
__global__ void modulate_kernel(E *out, const E *x, const E *shift, const E *scale, int64_t T, int C) {
    int c = (blockIdx.x * blockDim.x + threadIdx.x) * V;
    if (c >= C) return;
    int64_t bc = (int64_t)blockIdx.z * C + c;
    float sh[V], sc[V], v[V];
    ldv<V>(shift, bc, sh);
    ldv<V>(scale, bc, sc);
    for (int64_t t = (int64_t)blockIdx.y * blockDim.y + threadIdx.y; t < T; t += (int64_t)gridDim.y * blockDim.y) {
        int64_t i = ((int64_t)blockIdx.z * T + t) * C + c;
        ldv<V>(x, i, v);
#pragma unroll
        for (int e = 0; e < V; e++) v[e] = v[e] * (1.0f + sc[e]) + sh[e];
        stv<V>(out, i, v);
    }
}
template <typename E, int V>
__global__ void gated_add_kernel(E *x, const E *gate, const E *y, int64_t T, int C) {
    int c = (blockIdx.x * blockDim.x + threadIdx.x) * V;
    if (c >= C) return;
    float g[V], xv[V], yv[V];
    if (gate) ldv<V>(gate, (int64_t)blockIdx.z * C + c, g);
    for (int64_t t = (int64_t)blockIdx.y * blockDim.y + threadIdx.y; t < T; t += (int64_t)gridDim.y * blockDim.y) {
        int64_t i = ((int64_t)blockIdx.z * T + t) * C + c;
        ldv<V>(x, i, xv);
        ldv<V>(y, i, yv);
#pragma unroll
        for (int e = 0; e < V; e++) xv[e] += (gate ? g[e] : 1.0f) * yv[e];
        stv<V>(x, i, xv);
    }
}

// Launch shape for (B,T,C) in units of V elements: x blocks of up to 512 threads
// across a row, rows stacked in y to fill 256 threads when rows are short.
static void btc_launch_shape(int64_t B, int64_t T, int64_t C, int V, dim3 *grid, dim3 *block) {
    SQ_CHECK(B <= 65535 && C <= INT32_MAX, "adaLN op: B %lld, C %lld too large", (long long)B, (long long)C);
    int64_t units = C / V, nx = (units + 511) / 512, bx = ((units + nx - 1) / nx + 31) / 32 * 32, by = bx >= 256 ? 1 : 256 / bx;
    int64_t ny = (T + by - 1) / by;
    *block = dim3((unsigned)bx, (unsigned)by);
    *grid = dim3((unsigned)nx, (unsigned)(ny < 65535 ? ny : 65535), (unsigned)B);
}

extern "C" void cuda_axpby(sq_dtype dt, void *out, float alpha, const void *a, float beta, const void *b, int64_t n) {
    if (!n) return;
    SQ_DISPATCH_FLOAT(dt, axpby_kernel<E><<<grid_for(n, 256), 256, 0, SQ_STREAM>>>((E *)out, alpha, (const E *)a, beta, (const E *)b, n));
    SQ_LAUNCH_CHECK();
}
extern "C" void cuda_mul(sq_dtype dt, void *out, const void *a, const void *b, int64_t n) {
    if (!n) return;
    SQ_DISPATCH_FLOAT(dt, mul_kernel<E><<<grid_for(n, 256), 256, 0, SQ_STREAM>>>((E *)out, (const E *)a, (const E *)b, n));
    SQ_LAUNCH_CHECK();
}
extern "C" void cuda_scale(sq_dtype dt, void *out, const void *x, float alpha, float beta, int64_t n) {
    if (!n) return;
    SQ_DISPATCH_FLOAT(dt, scale_kernel<E><<<grid_for(n, 256), 256, 0, SQ_STREAM>>>((E *)out, (const E *)x, alpha, beta, n));
    SQ_LAUNCH_CHECK();
}
extern "C" void cuda_fill(sq_dtype dt, void *out, float v, int64_t n) {
    if (!n) return;
    SQ_DISPATCH_FLOAT(dt, fill_kernel<E><<<grid_for(n, 256), 256, 0, SQ_STREAM>>>((E *)out, v, n));
    SQ_LAUNCH_CHECK();
}
extern "C" void cuda_add_channel_bias(sq_dtype dt, void *x, const void *b, int64_t BC, int64_t HW) {
    if (!BC || !HW) return;
    SQ_DISPATCH_FLOAT(dt, channel_bias_kernel<E><<<grid_for(BC * HW, 256), 256, 0, SQ_STREAM>>>((E *)x, (const E *)b, BC * HW, HW));
    SQ_LAUNCH_CHECK();
}
extern "C" void cuda_modulate(sq_dtype dt, void *out, const void *x, const void *shift, const void *scale, int64_t B, int64_t T,
                              int64_t C) {
    if (!B || !T || !C) return;
    bool vec = C % 8 == 0 && aligned16(out) && aligned16(x) && aligned16(shift) && aligned16(scale);
    dim3 grid, block;
    btc_launch_shape(B, T, C, vec ? 8 : 1, &grid, &block);
    if (vec)
        SQ_DISPATCH_FLOAT(dt, modulate_kernel<E, 8><<<grid, block, 0, SQ_STREAM>>>((E *)out, (const E *)x, (const E *)shift,
                                                                     (const E *)scale, T, (int)C));
    else
        SQ_DISPATCH_FLOAT(dt, modulate_kernel<E, 1><<<grid, block, 0, SQ_STREAM>>>((E *)out, (const E *)x, (const E *)shift,
                                                                     (const E *)scale, T, (int)C));
    SQ_LAUNCH_CHECK();
}
extern "C" void cuda_gated_add(sq_dtype dt, void *x, const void *gate, const void *y, int64_t B, int64_t T, int64_t C) {
    if (!B || !T || !C) return;
    bool vec = C % 8 == 0 && aligned16(x) && aligned16(gate) && aligned16(y);
    dim3 grid, block;
    btc_launch_shape(B, T, C, vec ? 8 : 1, &grid, &block);
    if (vec) SQ_DISPATCH_FLOAT(dt, gated_add_kernel<E, 8><<<grid, block, 0, SQ_STREAM>>>((E *)x, (const E *)gate, (const E *)y, T, (int)C));
    else SQ_DISPATCH_FLOAT(dt, gated_add_kernel<E, 1><<<grid, block, 0, SQ_STREAM>>>((E *)x, (const E *)gate, (const E *)y, T, (int)C));
    SQ_LAUNCH_CHECK();
}
