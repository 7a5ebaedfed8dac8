// kernels/cuda/norm.cu: LayerNorm, RMSNorm (one block per row) and GroupNorm (one
// block per (sample, group)), statistics in fp32 with a two-pass mean / centred
// variance so large offsets do not cancel.
#include "kernels/cuda/common.cuh"

template <typename E>
__global__ void layernorm_kernel(E *out, const E *x, const E *w, const E *b, int64_t C, float eps) {
    __shared__ float sh[32];
    const E *xr = x + blockIdx.x * C;
    E *o = out + blockIdx.x * C;
    float s = 0;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) s += ld(xr, i);
    float mean = block_sum(s, sh) / (float)C;
    float v = 0;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
        float d = ld(xr, i) - mean;
        v += d * d;
    }
    float rstd = rsqrtf(block_sum(v, sh) / (float)C + eps);
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
        float y = (ld(xr, i) - mean) * rstd;
        if (w) y *= ld(w, i);
        if (b) y += ld(b, i);
        st(o, i, y);
    }
}

template <typename E>
__global__ void rmsnorm_kernel(E *out, const E *x, const E *w, int64_t C, float eps) {
    __shared__ float sh[32];
    const E *xr = x + blockIdx.x * C;
    E *o = out + blockIdx.x * C;
    float s = 0;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
        float v = ld(xr, i);
        s += v * v;
    }
    float r = rsqrtf(block_sum(s, sh) / (float)C + eps);
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) st(o, i, w ? ld(xr, i) * r * ld(w, i) : ld(xr, i) * r);
}

template <typename E>
__global__ void groupnorm_kernel(E *out, const E *x, const E *w, const E *b, int64_t C, int64_t HW,
                                 int groups, float eps) {
    __shared__ float sh[32];
    int64_t bi = blockIdx.x / groups, g = blockIdx.x % groups, cpg = C / groups, n = cpg * HW;
    int64_t base = (bi * C + g * cpg) * HW;
    float s = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += ld(x, base + i);
    float mean = block_sum(s, sh) / (float)n;
    float v = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        float d = ld(x, base + i) - mean;
        v += d * d;
    }
    float rstd = rsqrtf(block_sum(v, sh) / (float)n + eps);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        int64_t ch = g * cpg + i / HW;
        float y = (ld(x, base + i) - mean) * rstd;
        if (w) y *= ld(w, ch);
        if (b) y += ld(b, ch);
        st(out, base + i, y);
    }
}

static int threads_for(int64_t C) { return C >= 1024 ? 1024 : C >= 256 ? 256 : 64; }

extern "C" void cuda_layernorm(sq_dtype dt, void *out, const void *x, const void *w, const void *b, int64_t rows, int64_t C, float eps) {
    if (!rows) return;
    SQ_DISPATCH_FLOAT(dt, layernorm_kernel<E><<<(unsigned)rows, threads_for(C)>>>((E *)out, (const E *)x, (const E *)w, (const E *)b, C, eps));
    SQ_LAUNCH_CHECK();
}
extern "C" void cuda_rmsnorm(sq_dtype dt, void *out, const void *x, const void *w, int64_t rows, int64_t C, float eps) {
    if (!rows) return;
    SQ_DISPATCH_FLOAT(dt, rmsnorm_kernel<E><<<(unsigned)rows, threads_for(C)>>>((E *)out, (const E *)x, (const E *)w, C, eps));
    SQ_LAUNCH_CHECK();
}
extern "C" void cuda_groupnorm(sq_dtype dt, void *out, const void *x, const void *w, const void *b, int64_t B, int64_t C, int64_t HW,
                               int groups, float eps) {
    if (!B) return;
    SQ_DISPATCH_FLOAT(dt, groupnorm_kernel<E><<<(unsigned)(B * groups), 1024>>>((E *)out, (const E *)x, (const E *)w, (const E *)b, C,
                                                      HW, groups, eps));
    SQ_LAUNCH_CHECK();
}
