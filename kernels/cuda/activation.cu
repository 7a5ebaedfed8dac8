// kernels/cuda/activation.cu: GELU (erf, tanh), SiLU and quick GELU, in fp32 per
// element, 8 elements per 16-byte access where aligned.
#include "kernels/cuda/common.cuh"

__device__ __forceinline__ float act(float v, int kind) {
    if (kind == 0) return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    if (kind == 1) return 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    if (kind == 2) return v / (1.0f + expf(-v));
    return v / (1.0f + expf(-1.702f * v));
}

// V elements per thread and step: 8 (16-byte accesses) when n % 8 == 0 and both
// pointers are aligned, else 1.
template <typename E, int V>
__global__ void act_kernel(E *out, const E *x, int64_t n, int kind) {
    for (int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * V; i < n; i += (int64_t)gridDim.x * blockDim.x * V) {
        float v[V];
        ldv<V>(x, i, v);
#pragma unroll
        for (int e = 0; e < V; e++) v[e] = act(v[e], kind);
        stv<V>(out, i, v);
    }
}

static void act(sq_dtype dt, void *out, const void *x, int64_t n, int kind) {
    if (!n) return;
    if (n % 8 == 0 && aligned16(out) && aligned16(x))
        SQ_DISPATCH_FLOAT(dt, act_kernel<E, 8><<<grid_for(n / 8, 256), 256, 0, SQ_STREAM>>>((E *)out, (const E *)x, n, kind));
    else SQ_DISPATCH_FLOAT(dt, act_kernel<E, 1><<<grid_for(n, 256), 256, 0, SQ_STREAM>>>((E *)out, (const E *)x, n, kind));
    SQ_LAUNCH_CHECK();
}

extern "C" void cuda_gelu(sq_dtype dt, void *out, const void *x, int64_t n, bool tanh_approx) { act(dt, out, x, n, tanh_approx ? 1 : 0); }
extern "C" void cuda_silu(sq_dtype dt, void *out, const void *x, int64_t n) { act(dt, out, x, n, 2); }
extern "C" void cuda_quick_gelu(sq_dtype dt, void *out, const void *x, int64_t n) { act(dt, out, x, n, 3); }
