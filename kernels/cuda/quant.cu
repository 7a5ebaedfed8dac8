// kernels/cuda/quant.cu: CUDA versions of kernels/quant.h: the perturbed int4
// dequantisation (bf16 out, for dequantise-then-cuBLAS), the QZO scale update (one
// layer, or every layer and term in one launch) and the EMA of the scales.
// Both evaluate exactly the expressions of kernels/cpu/quant.c through the shared
// kernels/rng.h, so their results are bit-identical to the CPU reference (the
// dequantised value s·q is exact in fp32, then rounded once to bf16).
#include <cuda_bf16.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/dequant_q4.cuh"
#include "kernels/cuda/live_perturb.cuh"
#include "kernels/cuda/quant_launch.cuh"

// The fallback, for an output that is not 16-byte aligned: one thread per (row,
// group, 8-element chunk), reads 4 code bytes, writes 8 bf16.
__global__ void dequant_q4_kernel(__nv_bfloat16 *out, const uint8_t *codes, const float *scales, int64_t nout,
                                  int64_t k, int group, cuda_perturb cp) {
    const sq_perturb p = cuda_perturb_resolve(cp);
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

// The fast version: with K % G == 0 the group of flat (row-major) element e is just
// e / G, so the matrix is one long run of 8-code words. A block of DQ_THREADS
// threads takes DQ_WORDS_PER_THREAD·DQ_THREADS consecutive words: each thread
// loads its code words, then the perturbed scales of the groups the tile touches go
// to shared memory, each computed once (Philox + Box-Muller is the costly part; the
// code loads are in flight meanwhile), then every thread turns one word into 8 bf16
// per step, so a warp reads 128 and writes 512 contiguous bytes.
// Per element the arithmetic is the one above, so the result is bit-identical.
#define DQ_THREADS 256
#define DQ_WORDS_PER_THREAD 4

static int dequant_tile_groups(int group) { return DQ_THREADS * DQ_WORDS_PER_THREAD * 8 / group + 2; }

__global__ void dequant_q4_tiled_kernel(__nv_bfloat16 *out, const uint32_t *words, const float *scales,
                                        int64_t n_words, int group, cuda_perturb cp) {
    extern __shared__ float tile_scales[];
    const int64_t tile_words = DQ_THREADS * DQ_WORDS_PER_THREAD;
    int64_t w0 = (int64_t)blockIdx.x * tile_words;
    int64_t w_end = w0 + tile_words < n_words ? w0 + tile_words : n_words;
    int64_t g0 = w0 * 8 / group, g_end = (w_end * 8 - 1) / group + 1;
    // the code words are loaded first, so their memory latency overlaps the RNG
    uint32_t cw[DQ_WORDS_PER_THREAD];
    for (int i = 0; i < DQ_WORDS_PER_THREAD; i++) {
        int64_t w = w0 + i * DQ_THREADS + threadIdx.x;
        cw[i] = w < w_end ? words[w] : 0u;
    }
    const sq_perturb p = cuda_perturb_resolve(cp);
    for (int64_t g = g0 + threadIdx.x; g < g_end; g += blockDim.x) tile_scales[g - g0] = perturbed_scale(scales, g, p);
    __syncthreads();
    int e_base = (int)(w0 * 8 - g0 * group);   // offset of the tile's first element in group g0
    for (int i = 0; i < DQ_WORDS_PER_THREAD; i++) {
        int local = i * DQ_THREADS + (int)threadIdx.x;
        if (w0 + local >= w_end) break;
        ((uint4 *)out)[w0 + local] = dequant_word(cw[i], tile_scales[(e_base + 8 * local) / group]);
    }
}

__global__ void qzo_update_kernel(float *scales, int64_t count, sq_perturb p, float coeff) {
    int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= count) return;
    float z = sq_rng_normal(p.seed, p.step, p.index_base + (uint64_t)j);
    scales[j] = p.sign < 0 ? sq_restored_scale(scales[j], z, coeff, p.relative)
                           : sq_updated_scale(scales[j], z, coeff, p.relative);
}

// The batched update (sq_qzo_update_terms). The layers are laid end to end: layer
// l's scales are elements [begin, begin + count) of that concatenation. Empty layers
// are left out, so the begins strictly increase.
typedef struct {
    float *scales;
    int64_t begin, count;
    uint64_t index_base;
} qzo_layer;

// A term as the kernel takes it: small, so that SQ_QZO_UPDATE_TERMS_PER_LAUNCH of them
// travel in the kernel's parameters (24 bytes each, well under the 4 KB limit).
typedef struct {
    uint64_t seed, step;
    float coeff;
    int8_t undo, relative;
} qzo_term;

typedef struct {
    qzo_term t[SQ_QZO_UPDATE_TERMS_PER_LAUNCH];
    int n;
} qzo_terms;

// Thread i of the grid-stride loop takes element i of the concatenation, finds its
// layer by binary search over the begins, and applies every term to it in order
// before storing it. A scale's result depends only on that scale, so this is the
// order of one cuda_qzo_update per (term, layer) bit for bit; the one launch replaces
// n_layers·n_terms (SD3.5 Large: ~900 layers, launch-bound at one launch each).
__global__ void qzo_update_terms_kernel(const qzo_layer *__restrict__ layers, int n_layers, int64_t total,
                                        qzo_terms terms) {
    int l = 0;   // i only grows, so the layer found last is a lower bound for the next
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        int hi = n_layers - 1;   // the last layer whose begin is <= i
        while (l < hi) {
            int mid = (l + hi + 1) / 2;
            if (layers[mid].begin <= i) l = mid;
            else hi = mid - 1;
        }
        float *scales = layers[l].scales;
        int64_t j = i - layers[l].begin;
        uint64_t index = layers[l].index_base + (uint64_t)j;
        float s = scales[j];
        for (int t = 0; t < terms.n; t++) {
            const qzo_term &q = terms.t[t];
            float z = sq_rng_normal(q.seed, q.step, index);
            s = q.undo ? sq_restored_scale(s, z, q.coeff, q.relative) : sq_updated_scale(s, z, q.coeff, q.relative);
        }
        scales[j] = s;
    }
}

__global__ void ema_update_kernel(float *ema, const float *scales, int64_t count, float beta) {
    int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j < count) ema[j] = sq_ema_scale(ema[j], scales[j], beta);
}

__global__ void rng_normal_kernel(float *out, int64_t n, uint64_t seed, uint64_t step, uint64_t index_base) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = sq_rng_normal(seed, step, index_base + (uint64_t)i);
}

static unsigned blocks_for(int64_t n, int threads) { return (unsigned)((n + threads - 1) / threads); }

void cuda_dequant_q4_on(cudaStream_t stream, void *out_bf16, const uint8_t *codes, const float *scales, int64_t nout,
                        int64_t k, int group, const sq_perturb *p) {
    SQ_CHECK(k % 8 == 0 && group % 8 == 0, "cuda dequant_q4: K (%lld) and group (%d) must be multiples of 8",
             (long long)k, group);
    if (nout * k == 0) return;
    cuda_perturb cp = cuda_perturb_of(p);
    bool aligned = ((uintptr_t)codes % 4 == 0) && ((uintptr_t)out_bf16 % 16 == 0);
    if (aligned) {
        int64_t n_words = nout * k / 8, tile_words = DQ_THREADS * DQ_WORDS_PER_THREAD;
        size_t smem = (size_t)dequant_tile_groups(group) * sizeof(float);
        dequant_q4_tiled_kernel<<<blocks_for(n_words, (int)tile_words), DQ_THREADS, smem, stream>>>(
            (__nv_bfloat16 *)out_bf16, (const uint32_t *)codes, scales, n_words, group, cp);
    } else {
        int64_t threads_needed = nout * (k / 8);
        dequant_q4_kernel<<<blocks_for(threads_needed, 256), 256, 0, stream>>>((__nv_bfloat16 *)out_bf16, codes, scales,
                                                                               nout, k, group, cp);
    }
    SQ_CUDA_CHECK(cudaGetLastError());
}

extern "C" void cuda_dequant_q4(void *out_bf16, const uint8_t *codes, const float *scales, int64_t nout, int64_t k,
                                int group, const sq_perturb *p) {
    cuda_dequant_q4_on(SQ_STREAM, out_bf16, codes, scales, nout, k, group, p);
}

extern "C" void cuda_qzo_update(float *scales, int64_t count, const sq_perturb *p, float coeff) {
    if (count == 0) return;
    qzo_update_kernel<<<blocks_for(count, 256), 256, 0, SQ_STREAM>>>(scales, count, *p, coeff);
    SQ_CUDA_CHECK(cudaGetLastError());
}

// The device copy of the last layer table, and the host table it was made from: a
// training run passes the same layers every step, so the table goes up once (a
// changed list, e.g. another test's layers, is uploaded again). The default stream
// orders the upload after the kernels that read the previous table.
static qzo_layer *g_layers_host, *g_layers_dev;
static int g_layers_n, g_layers_cap;

// The table for these layers on the device; returns the number of non-empty layers.
static int layer_table(float *const *scales, const int64_t *counts, const uint64_t *index_base, int n_layers,
                       int64_t *total, const qzo_layer **dev) {
    qzo_layer *tab = (qzo_layer *)calloc((size_t)n_layers, sizeof *tab);   // zeroed: the cache compares bytes
    SQ_CHECK(tab != NULL, "cuda qzo_update_terms: out of memory for a table of %d layers", n_layers);
    int n = 0;
    int64_t begin = 0;
    for (int l = 0; l < n_layers; l++) {
        if (counts[l] == 0) continue;
        tab[n].scales = scales[l];
        tab[n].begin = begin;
        tab[n].count = counts[l];
        tab[n].index_base = index_base[l];
        begin += counts[l];
        n++;
    }
    *total = begin;
    if (n > 0 && !(n == g_layers_n && !memcmp(tab, g_layers_host, (size_t)n * sizeof *tab))) {
        if (n > g_layers_cap) {
            SQ_CUDA_CHECK(cudaFree(g_layers_dev));
            g_layers_dev = NULL;
            g_layers_n = g_layers_cap = 0;
            SQ_CUDA_CHECK(cudaMalloc((void **)&g_layers_dev, (size_t)n * sizeof *tab));
            g_layers_cap = n;
        }
        SQ_CUDA_CHECK(cudaMemcpy(g_layers_dev, tab, (size_t)n * sizeof *tab, cudaMemcpyHostToDevice));
        free(g_layers_host);
        g_layers_host = tab;
        g_layers_n = n;
        tab = NULL;
    }
    free(tab);
    *dev = g_layers_dev;
    return n;
}

extern "C" void cuda_qzo_update_terms(float *const *scales, const int64_t *counts, const uint64_t *index_base,
                                      int n_layers, const sq_perturb *terms, const float *coeffs, int n_terms) {
    int64_t total = 0;
    const qzo_layer *layers = NULL;
    int n = layer_table(scales, counts, index_base, n_layers, &total, &layers);
    if (n == 0) return;
    // More terms than one launch takes go in order, a launch each: per scale that is
    // still every term in order.
    for (int t0 = 0; t0 < n_terms; t0 += SQ_QZO_UPDATE_TERMS_PER_LAUNCH) {
        qzo_terms k;
        memset(&k, 0, sizeof k);
        k.n = n_terms - t0 < SQ_QZO_UPDATE_TERMS_PER_LAUNCH ? n_terms - t0 : SQ_QZO_UPDATE_TERMS_PER_LAUNCH;
        for (int t = 0; t < k.n; t++) {
            const sq_perturb *p = &terms[t0 + t];
            k.t[t].seed = p->seed;
            k.t[t].step = p->step;
            k.t[t].coeff = coeffs[t0 + t];
            k.t[t].undo = p->sign < 0;
            k.t[t].relative = p->relative != 0;
        }
        qzo_update_terms_kernel<<<grid_for(total, 256), 256, 0, SQ_STREAM>>>(layers, n, total, k);
        SQ_CUDA_CHECK(cudaGetLastError());
    }
}

extern "C" void cuda_ema_update(float *ema, const float *scales, int64_t count, float beta) {
    if (count == 0) return;
    ema_update_kernel<<<blocks_for(count, 256), 256, 0, SQ_STREAM>>>(ema, scales, count, beta);
    SQ_CUDA_CHECK(cudaGetLastError());
}

// For the host/device bit-identity test of kernels/rng.h.
extern "C" int cuda_rng_normals(float *host_out, int64_t n, uint64_t seed, uint64_t step, uint64_t index_base) {
    float *d = NULL;
    SQ_CUDA_TRY(cudaMalloc(&d, (size_t)n * sizeof(float)));
    rng_normal_kernel<<<blocks_for(n, 256), 256, 0, SQ_STREAM>>>(d, n, seed, step, index_base);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) e = cudaMemcpy(host_out, d, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost);
    cudaFree(d);
    if (e != cudaSuccess) return sq_errorf("cuda_rng_normals: %s", cudaGetErrorString(e));
    return SQ_OK;
}
