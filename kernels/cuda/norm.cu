// kernels/cuda/norm.cu: LayerNorm, RMSNorm, the adaLN fusions (LayerNorm + modulate,
// optionally after a gated residual) and GroupNorm, statistics in fp32 with a
// two-pass mean / centred variance so large offsets do not cancel.
//
// Rows up to 8192 elements (2048 when C % 8 != 0 or a pointer is not 16-byte aligned)
// go through norm_rows_kernel: the MMDiT's C = 2432 rows, its per-head C = 64 QK
// RMSNorm, T5's 4096. A team of threads per row holds the row in registers (one read,
// one write of global memory), with 16-byte accesses when the row allows. Short rows
// take a sub-warp or warp team, several rows to a block, and reduce with shuffles
// only: the per-head RMSNorm has 168k rows of 64 per SD3.5 Large forward, which a
// block per row left latency-bound. Longer rows keep the block-per-row kernels,
// which re-read the row from cache.
#include "kernels/cuda/common.cuh"

// Each thread of a row's team (at most kMaxTeam threads) holds kChunks chunks of V
// elements: 4 x 8 when vectorised (rows up to 8192), 8 x 1 on the scalar path (rows
// up to 2048). Longer rows take the block-per-row kernels.
static const int kMaxTeam = 256;
template <int V> constexpr int kChunks = V == 8 ? 4 : 8;

// What norm_rows_kernel computes for each row of C elements; the parts a call does
// not use are NULL.
struct norm_job {
    void *out;                   // (rows, C); may alias x except with the residual
    void *x;                     // (rows, C); written only by the gated residual
    const void *w, *b;           // affine weight and bias (C)
    const void *shift, *scale;   // adaLN vectors (B,C): y * (1 + scale) + shift
    const void *gate, *y;        // x += gate * y before the norm (y NULL: none; gate NULL: 1)
    int64_t rows, T, C;          // row r belongs to sample r / T (for shift, scale, gate)
    int lanes;                   // threads per row (a power of two <= 32, or a whole block)
    float eps;
    bool rms;                    // RMSNorm (no mean) instead of LayerNorm
};

// V elements from src to dst in their stored type: 16-byte accesses when V = 8 (both
// 16-byte aligned), so a bf16 row sits in registers two elements to a register.
template <int V, typename E>
__device__ __forceinline__ void copyv(E *dst, const E *src) {
    if constexpr (V * sizeof(E) % 16 == 0) {
#pragma unroll
        for (int q = 0; q < V * (int)sizeof(E) / 16; q++)
            reinterpret_cast<uint4 *>(dst)[q] = reinterpret_cast<const uint4 *>(src)[q];
    } else {
#pragma unroll
        for (int e = 0; e < V; e++) dst[e] = src[e];
    }
}

// ldv for the kernel's read-only inputs (weights, adaLN vectors, the residual's y),
// through the read-only cache: the compiler may then issue them ahead of the row's
// stores rather than after each one (it cannot prove plain pointers do not alias).
template <int V, typename E>
__device__ __forceinline__ void ldv_ro(const E *p, int64_t i, float *v) {
    if constexpr (V * sizeof(E) % 16 == 0) {
        alignas(16) E t[V];
#pragma unroll
        for (int q = 0; q < V * (int)sizeof(E) / 16; q++)
            reinterpret_cast<uint4 *>(t)[q] = __ldg(reinterpret_cast<const uint4 *>(p + i) + q);
#pragma unroll
        for (int e = 0; e < V; e++) v[e] = ld(t, e);
    } else {
#pragma unroll
        for (int e = 0; e < V; e++) v[e] = ld(p, i + e);
    }
}

// Sum over a team: a shuffle butterfly within aligned groups of `lanes` threads of
// a warp, or the whole block when lanes > 32.
__device__ __forceinline__ float team_sum(float v, int lanes, float *shared32) {
    if (lanes > 32) return block_sum(v, shared32);
    for (int o = lanes >> 1; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Chunk k of a thread is V elements at column (lane + k * lanes) * V, so each of the
// team's accesses is contiguous across the team. The row stays in registers in its
// stored type (r), read as fp32 in each pass: for bf16 that halves the registers, so
// more rows are in flight per SM.
template <typename E, int V>
__global__ void norm_rows_kernel(norm_job j) {
    constexpr int K = kChunks<V>;
    __shared__ float sh[32];
    E *out = (E *)j.out, *x = (E *)j.x;
    const E *w = (const E *)j.w, *b = (const E *)j.b, *shift = (const E *)j.shift, *scale = (const E *)j.scale;
    const E *gate = (const E *)j.gate, *y = (const E *)j.y;
    const int L = j.lanes, lane = threadIdx.x % L;
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x / L) + threadIdx.x / L;
    // threads past the last row still join the reductions (whole-warp shuffles)
    const int n = row < j.rows ? (int)j.C : 0;
    const int64_t xo = (row < j.rows ? row : 0) * j.C, vo = (row < j.rows ? row / j.T : 0) * j.C;

    alignas(16) E r[K][V];
#pragma unroll
    for (int k = 0; k < K; k++)   // the whole row first: every load in flight at once
        if ((lane + k * L) * V < n) copyv<V>(r[k], x + xo + (lane + k * L) * V);
    float s = 0;
#pragma unroll
    for (int k = 0; k < K; k++) {
        int c = (lane + k * L) * V;
        if (c >= n) continue;
        if (y) {   // x += gate * y, stored rounded; the rounded value is what is normalised
            float g[V], yv[V];
            ldv_ro<V>(y, xo + c, yv);
            if (gate) ldv_ro<V>(gate, vo + c, g);
#pragma unroll
            for (int e = 0; e < V; e++) st(r[k], e, ld(r[k], e) + (gate ? g[e] : 1.0f) * yv[e]);
            copyv<V>(x + xo + c, r[k]);
        }
#pragma unroll
        for (int e = 0; e < V; e++) s += j.rms ? ld(r[k], e) * ld(r[k], e) : ld(r[k], e);
    }
    float mean = 0, rstd;
    if (j.rms) {
        rstd = rsqrtf(team_sum(s, L, sh) / (float)j.C + j.eps);
    } else {
        mean = team_sum(s, L, sh) / (float)j.C;
        float q = 0;
#pragma unroll
        for (int k = 0; k < K; k++) {
            if ((lane + k * L) * V >= n) continue;
#pragma unroll
            for (int e = 0; e < V; e++) q += (ld(r[k], e) - mean) * (ld(r[k], e) - mean);
        }
        rstd = rsqrtf(team_sum(q, L, sh) / (float)j.C + j.eps);
    }
#pragma unroll
    for (int k = 0; k < K; k++) {
        int c = (lane + k * L) * V;
        if (c >= n) continue;
        float o[V], p[V], q[V];
#pragma unroll
        for (int e = 0; e < V; e++) o[e] = (ld(r[k], e) - mean) * rstd;
        if (w) {
            ldv_ro<V>(w, c, p);
#pragma unroll
            for (int e = 0; e < V; e++) o[e] *= p[e];
        }
        if (b) {
            ldv_ro<V>(b, c, p);
#pragma unroll
            for (int e = 0; e < V; e++) o[e] += p[e];
        }
        if (scale) {
            ldv_ro<V>(scale, vo + c, p);
            ldv_ro<V>(shift, vo + c, q);
#pragma unroll
            for (int e = 0; e < V; e++) o[e] = o[e] * (1.0f + p[e]) + q[e];
        }
        stv<V>(out, xo + c, o);
    }
}

// Threads per row: up to 32, a power of two (sub-warp teams, several rows to a warp),
// else a block. Vectorised rows give each thread up to 4 chunks, so short rows (the
// QK norm's 64) still keep 64 bytes a thread in flight; scalar rows spread over a
// warp first so that each access stays coalesced across the team.
static int64_t team_for(int64_t C, bool vec) {
    int64_t need = vec ? (C / 8 + kChunks<8> - 1) / kChunks<8>
                   : C <= 32 * kChunks<1> ? (C < 32 ? C : 32) : (C + kChunks<1> - 1) / kChunks<1>;
    if (need > 32) return (need + 31) / 32 * 32;
    int l = 1;
    while (l < need) l <<= 1;
    return l;
}

// Runs norm_rows_kernel; false (nothing launched) when the rows are too long for it.
static bool norm_rows(sq_dtype dt, norm_job j) {
    bool vec = j.C % 8 == 0;
    const void *ptrs[] = {j.out, j.x, j.w, j.b, j.shift, j.scale, j.gate, j.y};
    for (const void *p : ptrs) vec = vec && aligned16(p);
    int64_t lanes = team_for(j.C, vec);
    if (lanes > kMaxTeam) return false;
    j.lanes = (int)lanes;
    // teams of up to a warp: 256 threads to a block, fewer when that leaves SMs idle
    // (the 333 text tokens' QK norm would be 99 blocks of 256)
    int threads = j.lanes > 32 ? j.lanes : 256;
    while (j.lanes <= 32 && threads > 32 && j.rows * j.lanes / threads < 1024) threads /= 2;
    int64_t rows_per_block = threads / j.lanes;
    unsigned grid = (unsigned)((j.rows + rows_per_block - 1) / rows_per_block);
    if (vec) SQ_DISPATCH_FLOAT(dt, norm_rows_kernel<E, 8><<<grid, threads, 0, SQ_STREAM>>>(j));
    else SQ_DISPATCH_FLOAT(dt, norm_rows_kernel<E, 1><<<grid, threads, 0, SQ_STREAM>>>(j));
    SQ_LAUNCH_CHECK();
    return true;
}

static norm_job job_for(void *out, const void *x, int64_t rows, int64_t C, float eps) {
    norm_job j = {};
    j.out = out;
    j.x = (void *)x;   // written only by the residual, which passes its own x
    j.rows = rows;
    j.T = rows;
    j.C = C;
    j.eps = eps;
    return j;
}

// Block-per-row kernels for rows too long for norm_rows_kernel.
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
    if (!rows || !C) return;
    norm_job j = job_for(out, x, rows, C, eps);
    j.w = w;
    j.b = b;
    if (norm_rows(dt, j)) return;
    SQ_DISPATCH_FLOAT(dt, layernorm_kernel<E><<<(unsigned)rows, threads_for(C), 0, SQ_STREAM>>>((E *)out, (const E *)x, (const E *)w,
                                                                                  (const E *)b, C, eps));
    SQ_LAUNCH_CHECK();
}

extern "C" void cuda_rmsnorm(sq_dtype dt, void *out, const void *x, const void *w, int64_t rows, int64_t C, float eps) {
    if (!rows || !C) return;
    norm_job j = job_for(out, x, rows, C, eps);
    j.w = w;
    j.rms = true;
    if (norm_rows(dt, j)) return;
    SQ_DISPATCH_FLOAT(dt, rmsnorm_kernel<E><<<(unsigned)rows, threads_for(C), 0, SQ_STREAM>>>((E *)out, (const E *)x, (const E *)w, C, eps));
    SQ_LAUNCH_CHECK();
}

// Fused: the normalised row is modulated in fp32, never rounded to bf16 in between.
extern "C" void cuda_layernorm_modulate(sq_dtype dt, void *out, const void *x, const void *shift, const void *scale,
                                        int64_t B, int64_t T, int64_t C, float eps) {
    if (!B || !T || !C) return;
    norm_job j = job_for(out, x, B * T, C, eps);
    j.T = T;
    j.shift = shift;
    j.scale = scale;
    if (norm_rows(dt, j)) return;
    cuda_layernorm(dt, out, x, NULL, NULL, B * T, C, eps);   // too long for registers: the two ops
    cuda_modulate(dt, out, out, shift, scale, B, T, C);
}

extern "C" void cuda_gated_add_layernorm_modulate(sq_dtype dt, void *x, const void *gate, const void *y, void *h,
                                                  const void *shift, const void *scale, int64_t B, int64_t T, int64_t C,
                                                  float eps) {
    if (!B || !T || !C) return;
    norm_job j = job_for(h, x, B * T, C, eps);
    j.T = T;
    j.shift = shift;
    j.scale = scale;
    j.gate = gate;
    j.y = y;
    if (norm_rows(dt, j)) return;
    cuda_gated_add(dt, x, gate, y, B, T, C);
    cuda_layernorm_modulate(dt, h, x, shift, scale, B, T, C, eps);
}

extern "C" void cuda_groupnorm(sq_dtype dt, void *out, const void *x, const void *w, const void *b, int64_t B, int64_t C, int64_t HW,
                               int groups, float eps) {
    if (!B) return;
    SQ_DISPATCH_FLOAT(dt, groupnorm_kernel<E><<<(unsigned)(B * groups), 1024, 0, SQ_STREAM>>>((E *)out, (const E *)x, (const E *)w, (const E *)b, C,
                                                      HW, groups, eps));
    SQ_LAUNCH_CHECK();
}
