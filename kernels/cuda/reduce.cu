// kernels/cuda/reduce.cu: deterministic sums for losses. A fixed grid of REDUCE_BLOCKS
// blocks each sums a fixed strided subset in fp64 and writes one partial; the host
// adds the partials in order. No atomics, so the same input gives the same bits on
// every call: the QZO loss difference L+ - L- sees only the perturbation.
#include "kernels/cuda/common.cuh"

#define REDUCE_BLOCKS 256
#define REDUCE_THREADS 256

static double *g_partials;   // 2 * REDUCE_BLOCKS: the weighted sum uses the second half for sum w

extern "C" int cuda_reduce_init(void) {
    if (!g_partials) SQ_CUDA_TRY(cudaMalloc(&g_partials, 2 * REDUCE_BLOCKS * sizeof(double)));
    return SQ_OK;
}

__device__ __forceinline__ float load_any(const void *p, int is_bf16, int64_t i) {
    return is_bf16 ? __bfloat162float(((const bf16 *)p)[i]) : ((const float *)p)[i];
}

__global__ void sum_kernel(double *partials, const void *a, int a_bf16, const void *b, int b_bf16, int64_t n) {
    __shared__ double sh[REDUCE_THREADS];
    double s = 0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        double va = load_any(a, a_bf16, i);
        if (b) {
            double d = va - (double)load_any(b, b_bf16, i);
            s += d * d;
        } else {
            s += va;
        }
    }
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int o = REDUCE_THREADS / 2; o > 0; o >>= 1) {
        if ((int)threadIdx.x < o) sh[threadIdx.x] += sh[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0) partials[blockIdx.x] = sh[0];
}

static double reduce(const void *a, sq_dtype at, const void *b, sq_dtype bt, int64_t n) {
    SQ_CHECK(g_partials != NULL, "cuda reduce: backend not initialised");
    SQ_CHECK((at == SQ_BF16 || at == SQ_F32) && (!b || bt == SQ_BF16 || bt == SQ_F32), "cuda reduce: f32/bf16 only");
    sum_kernel<<<REDUCE_BLOCKS, REDUCE_THREADS, 0, SQ_STREAM>>>(g_partials, a, at == SQ_BF16, b, bt == SQ_BF16, n);
    SQ_LAUNCH_CHECK();
    double host[REDUCE_BLOCKS];
    SQ_CUDA_CHECK(cudaMemcpy(host, g_partials, sizeof host, cudaMemcpyDeviceToHost));
    double s = 0;
    for (int i = 0; i < REDUCE_BLOCKS; i++) s += host[i];
    return s;
}

// a, b (C,P), w (P): thread i of the grid takes pixels p = i, i + grid, ... (coalesced
// in every channel plane), sums its channels' squares, weights them by w[p], and adds
// w[p] to a second sum. Block partials of both go to g_partials[blk] and
// g_partials[REDUCE_BLOCKS + blk].
__global__ void weighted_sum_kernel(double *partials, const void *a, int a_bf16, const void *b, int b_bf16, const float *w,
                                    int64_t C, int64_t P) {
    __shared__ double sh[REDUCE_THREADS], shw[REDUCE_THREADS];
    double s = 0, ws = 0;
    for (int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; p < P; p += (int64_t)gridDim.x * blockDim.x) {
        double sc = 0;
        for (int64_t c = 0; c < C; c++) {
            double d = (double)load_any(a, a_bf16, c * P + p) - (double)load_any(b, b_bf16, c * P + p);
            sc += d * d;
        }
        s += (double)w[p] * sc;
        ws += (double)w[p];
    }
    sh[threadIdx.x] = s;
    shw[threadIdx.x] = ws;
    __syncthreads();
    for (int o = REDUCE_THREADS / 2; o > 0; o >>= 1) {
        if ((int)threadIdx.x < o) {
            sh[threadIdx.x] += sh[threadIdx.x + o];
            shw[threadIdx.x] += shw[threadIdx.x + o];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        partials[blockIdx.x] = sh[0];
        partials[REDUCE_BLOCKS + blockIdx.x] = shw[0];
    }
}

extern "C" double cuda_weighted_sum_sq_diff(const void *a, sq_dtype at, const void *b, sq_dtype bt, const float *w, int64_t C,
                                            int64_t P, double *wsum) {
    SQ_CHECK(g_partials != NULL, "cuda reduce: backend not initialised");
    SQ_CHECK((at == SQ_BF16 || at == SQ_F32) && (bt == SQ_BF16 || bt == SQ_F32), "cuda reduce: f32/bf16 only");
    weighted_sum_kernel<<<REDUCE_BLOCKS, REDUCE_THREADS, 0, SQ_STREAM>>>(g_partials, a, at == SQ_BF16, b, bt == SQ_BF16, w, C, P);
    SQ_LAUNCH_CHECK();
    double host[2 * REDUCE_BLOCKS];
    SQ_CUDA_CHECK(cudaMemcpy(host, g_partials, sizeof host, cudaMemcpyDeviceToHost));
    double s = 0, ws = 0;
    for (int i = 0; i < REDUCE_BLOCKS; i++) s += host[i], ws += host[REDUCE_BLOCKS + i];
    *wsum = ws;
    return s;
}

extern "C" double cuda_sum(const void *x, sq_dtype dtype, int64_t n) { return reduce(x, dtype, NULL, SQ_F32, n); }
extern "C" double cuda_sum_sq_diff(const void *a, sq_dtype adtype, const void *b, sq_dtype bdtype, int64_t n) {
    return reduce(a, adtype, b, bdtype, n);
}
