// kernels/cuda/activation.cu: GELU (erf, tanh), SiLU, quick GELU and row softmax,
// in fp32 per element (softmax: max-subtracted, fp32 sum, one block per row).
#include "kernels/cuda/common.cuh"

template <typename E>
__global__ void act_kernel(E *out, const E *x, int64_t n, int kind) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float v = ld(x, i), y;
        if (kind == 0) y = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
        else if (kind == 1) y = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
        else if (kind == 2) y = v / (1.0f + expf(-v));
        else y = v / (1.0f + expf(-1.702f * v));
        st(out, i, y);
    }
}

template <typename E>
__global__ void softmax_kernel(E *out, const E *x, int64_t C) {
    __shared__ float sh[32];
    const E *xr = x + blockIdx.x * C;
    E *o = out + blockIdx.x * C;
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) m = fmaxf(m, ld(xr, i));
    m = block_max(m, sh);
    float s = 0;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) s += expf(ld(xr, i) - m);
    float inv = 1.0f / block_sum(s, sh);
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) st(o, i, expf(ld(xr, i) - m) * inv);
}

static void act(sq_dtype dt, void *out, const void *x, int64_t n, int kind) {
    if (!n) return;
    SQ_DISPATCH_FLOAT(dt, act_kernel<E><<<grid_for(n, 256), 256>>>((E *)out, (const E *)x, n, kind));
    SQ_LAUNCH_CHECK();
}

extern "C" void cuda_gelu(sq_dtype dt, void *out, const void *x, int64_t n, bool tanh_approx) { act(dt, out, x, n, tanh_approx ? 1 : 0); }
extern "C" void cuda_silu(sq_dtype dt, void *out, const void *x, int64_t n) { act(dt, out, x, n, 2); }
extern "C" void cuda_quick_gelu(sq_dtype dt, void *out, const void *x, int64_t n) { act(dt, out, x, n, 3); }

extern "C" void cuda_softmax(sq_dtype dt, void *out, const void *x, int64_t rows, int64_t C) {
    if (!rows) return;
    SQ_DISPATCH_FLOAT(dt, softmax_kernel<E><<<(unsigned)rows, 256>>>((E *)out, (const E *)x, C));
    SQ_LAUNCH_CHECK();
}
