// kernels/cuda/attention_flash.cu: tiled flash-attention forward for bf16 q,k,v,out
// in (B,T,NH,HS) token-major layout, HS 64 or 128, no bias, not causal, optional
// key mask (U8 (B,Tk), 0 = masked; a row with every key masked gives zeros).
// One block of 4 warps handles 64 query rows of one (b,h); each warp owns 16 rows.
// Key/value tiles of 64 tokens are staged in shared memory with cp.async, double
// buffered; S = Q·Kᵀ and O += P·V run on tensor cores (mma.sync m16n8k16 bf16 with
// fp32 accumulation); the softmax is online in fp32 (running max and sum per row,
// in the exp2 domain), P is rounded to bf16 for the P·V product. Out-of-range keys
// are zero-filled and masked, out-of-range query rows are computed on zeros and not
// stored. No atomics: every output element is written once by one thread, in a fixed
// order, so results are bit-reproducible.
#include <math.h>

#include "kernels/cuda/common.cuh"

namespace {

constexpr int FA_BM = 64;        // query rows per block
constexpr int FA_BN = 64;        // keys per tile
constexpr int FA_THREADS = 128;  // 4 warps, 16 query rows each

__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool pred) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    int n = pred ? 16 : 0;   // src-size 0: nothing is read, the 16 bytes are zero-filled
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// D = A·B + D, A 16x16 (row), B 16x8 (col), bf16 in, fp32 accumulate.
__device__ __forceinline__ void mma_bf16(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);   // .x (lo) in the low 16 bits
    return *reinterpret_cast<uint32_t *>(&v);
}
__device__ __forceinline__ uint32_t pack_raw(bf16 lo, bf16 hi) {
    return (uint32_t)__bfloat16_as_ushort(lo) | ((uint32_t)__bfloat16_as_ushort(hi) << 16);
}

template <int HS> constexpr size_t fa_smem_bytes() {
    // Q tile + 2 stages of (K tile, V tile), rows padded by 8 elements (16 bytes) so
    // the fragment loads of one warp hit 32 distinct banks; + 2 stages of key flags.
    return (size_t)(FA_BM + 4 * FA_BN) * (HS + 8) * sizeof(bf16) + 2 * FA_BN;
}

// Fragment layout of mma.m16n8k16 (g = lane/4, t = lane%4):
//   A: a0 (row g, k 2t..2t+1), a1 (row g+8, k 2t..), a2 (row g, k 2t+8..), a3 (row g+8, k 2t+8..)
//   B: b0 (k 2t..2t+1, col g), b1 (k 2t+8..2t+9, col g)
//   C: c0,c1 (row g, cols 2t, 2t+1), c2,c3 (row g+8, cols 2t, 2t+1)
template <int HS>
__global__ void __launch_bounds__(FA_THREADS)
flash_attention_kernel(bf16 *__restrict__ out, const bf16 *__restrict__ q, const bf16 *__restrict__ k,
                       const bf16 *__restrict__ v, const uint8_t *__restrict__ key_mask, float scale_log2,
                       int64_t Tq, int64_t Tk, int64_t NH) {
    constexpr int LD = HS + 8;            // padded row length in elements
    constexpr int CH = HS / 8;            // 16-byte chunks per row
    constexpr int KC = HS / 16;           // k-steps of Q·Kᵀ
    constexpr int NT_S = FA_BN / 8;       // n-tiles of S (8 keys each)
    constexpr int NT_O = HS / 8;          // n-tiles of O (8 features each)
    extern __shared__ __align__(16) unsigned char fa_smem[];
    bf16 *Qs = reinterpret_cast<bf16 *>(fa_smem);
    bf16 *Ks0 = Qs + FA_BM * LD;           // stage s: K at Ks0 + s*2*FA_BN*LD, V right after
    uint8_t *kvalid0 = reinterpret_cast<uint8_t *>(Ks0 + 4 * FA_BN * LD);   // [2][FA_BN]

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int64_t bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int64_t q0 = (int64_t)blockIdx.x * FA_BM;
    const int64_t tok_stride = NH * HS;   // elements between consecutive tokens
    const bf16 *qb = q + (b * Tq * NH + h) * HS;
    const bf16 *kb = k + (b * Tk * NH + h) * HS;
    const bf16 *vb = v + (b * Tk * NH + h) * HS;
    const uint8_t *mb = key_mask ? key_mask + b * Tk : nullptr;
    const int ntiles = (int)((Tk + FA_BN - 1) / FA_BN);

    // Q tile (rows past Tq zero-filled).
    for (int i = tid; i < FA_BM * CH; i += FA_THREADS) {
        int r = i / CH, c = i % CH;
        int64_t row = q0 + r;
        bool ok = row < Tq;
        cp_async16(Qs + r * LD + c * 8, ok ? qb + row * tok_stride + c * 8 : q, ok);
    }
    auto load_kv = [&](int tile, int stage) {
        bf16 *Ks = Ks0 + stage * 2 * FA_BN * LD, *Vs = Ks + FA_BN * LD;
        int64_t k0 = (int64_t)tile * FA_BN;
        for (int i = tid; i < FA_BN * CH; i += FA_THREADS) {
            int r = i / CH, c = i % CH;
            int64_t key = k0 + r;
            bool ok = key < Tk;
            cp_async16(Ks + r * LD + c * 8, ok ? kb + key * tok_stride + c * 8 : k, ok);
            cp_async16(Vs + r * LD + c * 8, ok ? vb + key * tok_stride + c * 8 : v, ok);
        }
        if (tid < FA_BN) {
            int64_t key = k0 + tid;
            kvalid0[stage * FA_BN + tid] = (uint8_t)(key < Tk && (!mb || mb[key]));
        }
    };
    load_kv(0, 0);
    cp_async_commit();

    uint32_t qa[KC][4];
    float o[NT_O][4];
#pragma unroll
    for (int n = 0; n < NT_O; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m_run[2] = {-INFINITY, -INFINITY};   // running max (log2 domain) of rows g and g+8
    float l_run[2] = {0.0f, 0.0f};             // this thread's partial running sums

    for (int tile = 0; tile < ntiles; tile++) {
        const int stage = tile & 1;
        if (tile + 1 < ntiles) {
            load_kv(tile + 1, stage ^ 1);   // that stage was released by the barrier ending tile-1
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if (tile == 0) {
            const bf16 *qw = Qs + (warp * 16) * LD;
#pragma unroll
            for (int kc = 0; kc < KC; kc++) {
                qa[kc][0] = *reinterpret_cast<const uint32_t *>(qw + g * LD + kc * 16 + 2 * t);
                qa[kc][1] = *reinterpret_cast<const uint32_t *>(qw + (g + 8) * LD + kc * 16 + 2 * t);
                qa[kc][2] = *reinterpret_cast<const uint32_t *>(qw + g * LD + kc * 16 + 2 * t + 8);
                qa[kc][3] = *reinterpret_cast<const uint32_t *>(qw + (g + 8) * LD + kc * 16 + 2 * t + 8);
            }
        }
        const bf16 *Ks = Ks0 + stage * 2 * FA_BN * LD, *Vs = Ks + FA_BN * LD;
        const uint8_t *kvalid = kvalid0 + stage * FA_BN;

        // S = Q·Kᵀ for this warp's 16 rows x 64 keys.
        float s[NT_S][4];
#pragma unroll
        for (int n = 0; n < NT_S; n++) {
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
            const bf16 *kr = Ks + (n * 8 + g) * LD + 2 * t;
#pragma unroll
            for (int kc = 0; kc < KC; kc++) {
                uint32_t b0 = *reinterpret_cast<const uint32_t *>(kr + kc * 16);
                uint32_t b1 = *reinterpret_cast<const uint32_t *>(kr + kc * 16 + 8);
                mma_bf16(s[n], qa[kc], b0, b1);
            }
        }
        // Scale into the log2 domain, mask, and take the tile's row maxima.
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int n = 0; n < NT_S; n++) {
            bool v0 = kvalid[n * 8 + 2 * t] != 0, v1 = kvalid[n * 8 + 2 * t + 1] != 0;
            s[n][0] = v0 ? s[n][0] * scale_log2 : -INFINITY;
            s[n][1] = v1 ? s[n][1] * scale_log2 : -INFINITY;
            s[n][2] = v0 ? s[n][2] * scale_log2 : -INFINITY;
            s[n][3] = v1 ? s[n][3] * scale_log2 : -INFINITY;
            mx[0] = fmaxf(mx[0], fmaxf(s[n][0], s[n][1]));
            mx[1] = fmaxf(mx[1], fmaxf(s[n][2], s[n][3]));
        }
        float m_use[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            // the 4 threads of a quad hold the same row
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            float m_new = fmaxf(m_run[r], mx[r]);
            m_use[r] = m_new == -INFINITY ? 0.0f : m_new;   // all masked so far: keep exp2 NaN-free
            float alpha = exp2f(m_run[r] - m_use[r]);       // m_run = -inf gives 0
            m_run[r] = m_new;
            l_run[r] *= alpha;
#pragma unroll
            for (int n = 0; n < NT_O; n++) {
                o[n][2 * r] *= alpha;
                o[n][2 * r + 1] *= alpha;
            }
        }
        // P = exp2(S - m), summed in fp32, packed to bf16 A fragments for P·V.
        uint32_t pa[FA_BN / 16][4];
#pragma unroll
        for (int n = 0; n < NT_S; n++) {
            float p0 = exp2f(s[n][0] - m_use[0]), p1 = exp2f(s[n][1] - m_use[0]);
            float p2 = exp2f(s[n][2] - m_use[1]), p3 = exp2f(s[n][3] - m_use[1]);
            l_run[0] += p0 + p1;
            l_run[1] += p2 + p3;
            pa[n >> 1][(n & 1) * 2 + 0] = pack_bf16(p0, p1);   // row g
            pa[n >> 1][(n & 1) * 2 + 1] = pack_bf16(p2, p3);   // row g+8
        }
        // O += P·V: k = 64 keys in 4 steps, n = HS features.
#pragma unroll
        for (int kc = 0; kc < FA_BN / 16; kc++) {
            const bf16 *vr = Vs + (kc * 16 + 2 * t) * LD + g;
#pragma unroll
            for (int n = 0; n < NT_O; n++) {
                const bf16 *vp = vr + n * 8;
                uint32_t b0 = pack_raw(vp[0], vp[LD]);
                uint32_t b1 = pack_raw(vp[8 * LD], vp[9 * LD]);
                mma_bf16(o[n], pa[kc], b0, b1);
            }
        }
        __syncthreads();   // everyone is done with this stage before it is refilled
    }

    cp_async_wait<0>();   // Tk == 0: the Q copy was never waited for

    // Finish: full row sums across the quad, normalise, store (rows past Tq skipped).
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
        l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int64_t row = q0 + warp * 16 + g + r * 8;
        if (row >= Tq) continue;
        float inv = l_run[r] > 0.0f ? 1.0f / l_run[r] : 0.0f;   // every key masked: zeros
        bf16 *orow = out + ((b * Tq + row) * NH + h) * HS + 2 * t;
#pragma unroll
        for (int n = 0; n < NT_O; n++) {
            __nv_bfloat162 val = __floats2bfloat162_rn(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
            *reinterpret_cast<__nv_bfloat162 *>(orow + n * 8) = val;
        }
    }
}

template <int HS>
void launch_flash(void *out, const void *q, const void *k, const void *v, const void *key_mask, float scale, int64_t B,
                  int64_t Tq, int64_t Tk, int64_t NH) {
    constexpr size_t shared = fa_smem_bytes<HS>();
    static bool attr_set = false;   // the opt-in is per function and device; set once (single device)
    if (shared > 48 * 1024 && !attr_set) {
        SQ_CUDA_CHECK(cudaFuncSetAttribute((const void *)flash_attention_kernel<HS>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared));
        attr_set = true;
    }
    dim3 grid((unsigned)((Tq + FA_BM - 1) / FA_BM), (unsigned)(B * NH));
    const float log2e = 1.4426950408889634f;
    flash_attention_kernel<HS><<<grid, FA_THREADS, shared, SQ_STREAM>>>((bf16 *)out, (const bf16 *)q, (const bf16 *)k,
                                                             (const bf16 *)v, (const uint8_t *)key_mask,
                                                             scale * log2e, Tq, Tk, NH);
    SQ_LAUNCH_CHECK();
}

}   // namespace

// Runs the flash kernel when it supports the call (bf16, HS 64/128, 16-byte aligned
// pointers, grid within limits) and returns true; false leaves it to the caller.
extern "C" bool cuda_attention_flash(void *out, const void *q, const void *k, const void *v, const void *key_mask,
                                     float scale, int64_t B, int64_t Tq, int64_t Tk, int64_t NH, int64_t HS) {
    if (HS != 64 && HS != 128) return false;
    if (((uintptr_t)out | (uintptr_t)q | (uintptr_t)k | (uintptr_t)v) & 15) return false;
    if (B * NH > 65535 || (Tq + FA_BM - 1) / FA_BM > 0x7fffffffLL || Tk > 0x7fffffffLL * (int64_t)FA_BN) return false;
    if (B * Tq * NH * HS == 0) return true;   // nothing to write
    if (HS == 64) launch_flash<64>(out, q, k, v, key_mask, scale, B, Tq, Tk, NH);
    else launch_flash<128>(out, q, k, v, key_mask, scale, B, Tq, Tk, NH);
    return true;
}
