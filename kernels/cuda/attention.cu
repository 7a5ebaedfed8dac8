// kernels/cuda/attention.cu: scaled dot-product attention, the simple reference
// version: one block per (batch, head, query row); the row's scores live in shared
// memory (fp32), softmax is max-subtracted in fp32, then each thread accumulates
// output features over all keys (consecutive threads read consecutive features of
// v, so loads coalesce). Correct for any Tq/Tk/HS, masks and bias; O(T²) work with
// no tiling. cuda_attention sends bf16 calls without bias or causal mask first to
// cuDNN's fused SDPA (attention_cudnn.cu; no key mask either), then to the tiled
// tensor-core kernel of attention_flash.cu (head size 64/128); fp32 single-head
// calls over 256 keys or more (the VAE's) to the GEMMs of attention_gemm.cu; and only
// the rest here; SQ_ATTENTION=flash skips cuDNN, SQ_ATTENTION=reference or
// SQ_ATTENTION_REFERENCE=1 forces this kernel; cuda_attention_reference always
// runs this one.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/common.cuh"

// attention_flash.cu: true when it handled the call (bf16, no bias, not causal).
extern "C" bool cuda_attention_flash(void *out, const void *q, const void *k, const void *v, const void *key_mask,
                                     float scale, int64_t B, int64_t Tq, int64_t Tk, int64_t NH, int64_t HS);

template <typename E>
__global__ void attention_kernel(E *out, const E *q, const E *k, const E *v, const E *bias,
                                 const uint8_t *key_mask, bool causal, float scale, int64_t Tq, int64_t Tk, int64_t NH,
                                 int64_t HS) {
    extern __shared__ float smem[];
    __shared__ float red[32];
    float *qs = smem, *s = smem + HS;
    int64_t r = blockIdx.x;
    int64_t b = r / (NH * Tq), h = (r / Tq) % NH, i = r % Tq;
    const E *qi = q + ((b * Tq + i) * NH + h) * HS;
    for (int64_t d = threadIdx.x; d < HS; d += blockDim.x) qs[d] = ld(qi, d);
    __syncthreads();
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < Tk; j += blockDim.x) {
        bool masked = (causal && j > i) || (key_mask && !key_mask[b * Tk + j]);
        float sc = -INFINITY;
        if (!masked) {
            const E *kj = k + ((b * Tk + j) * NH + h) * HS;
            float acc = 0;
            for (int64_t d = 0; d < HS; d++) acc += qs[d] * ld(kj, d);
            sc = acc * scale;
            if (bias) sc += ld(bias, (h * Tq + i) * Tk + j);
        }
        s[j] = sc;
        mx = fmaxf(mx, sc);
    }
    mx = block_max(mx, red);
    E *o = out + ((b * Tq + i) * NH + h) * HS;
    if (mx == -INFINITY) {   // every key masked: zeros, as the CPU reference
        for (int64_t d = threadIdx.x; d < HS; d += blockDim.x) st(o, d, 0.0f);
        return;
    }
    float sum = 0;
    for (int64_t j = threadIdx.x; j < Tk; j += blockDim.x) {
        float e = s[j] == -INFINITY ? 0.0f : expf(s[j] - mx);
        s[j] = e;
        sum += e;
    }
    float inv = 1.0f / block_sum(sum, red);   // block_sum's barriers also publish s[]
    for (int64_t d = threadIdx.x; d < HS; d += blockDim.x) {
        float acc = 0;
        for (int64_t j = 0; j < Tk; j++) {
            float p = s[j];
            if (p != 0.0f) acc += p * ld(v, ((b * Tk + j) * NH + h) * HS + d);
        }
        st(o, d, acc * inv);
    }
}

extern "C" void cuda_attention_reference(sq_dtype dt, void *out, const void *q, const void *k, const void *v, const void *bias,
                               const void *key_mask, bool causal, float scale, int64_t B, int64_t Tq, int64_t Tk,
                               int64_t NH, int64_t HS) {
    int64_t rows = B * NH * Tq;
    if (!rows) return;
    size_t shared = (size_t)(HS + Tk) * sizeof(float);
    if (shared > 48 * 1024) {
        int dev, max_optin = 0;
        SQ_CUDA_CHECK(cudaGetDevice(&dev));
        SQ_CUDA_CHECK(cudaDeviceGetAttribute(&max_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
        SQ_CHECK(shared <= (size_t)max_optin, "attention: %lld keys need %zu bytes of shared memory, the GPU has %d",
                 (long long)Tk, shared, max_optin);
        SQ_CUDA_CHECK(cudaFuncSetAttribute(dt == SQ_F32 ? (const void *)attention_kernel<float> : (const void *)attention_kernel<bf16>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared));
    }
    SQ_CHECK(rows <= 0x7fffffffLL, "attention: too many rows");
    SQ_DISPATCH_FLOAT(dt, attention_kernel<E><<<(unsigned)rows, 128, shared, SQ_STREAM>>>((E *)out, (const E *)q, (const E *)k, (const E *)v,
                                                      (const E *)bias, (const uint8_t *)key_mask, causal, scale, Tq,
                                                      Tk, NH, HS));
    SQ_LAUNCH_CHECK();
}

namespace {
int g_path = -1;   // cuda_attention_path; -1: not chosen yet (read the environment on first use)
cuda_attention_path g_last = CUDA_ATTN_REFERENCE;

int path_from_env(void) {
    const char *r = getenv("SQ_ATTENTION_REFERENCE");
    if (r && strcmp(r, "1") == 0) return CUDA_ATTN_REFERENCE;
    const char *e = getenv("SQ_ATTENTION");
    // cuDNN's fused SDPA by default: measured on an H100 at SD3.5 Large's 1024² shape
    // (B 1, T 4429, NH 38, HS 64) at 0.48 ms / 400 TFLOP/s, which took the QZO step
    // from 254 to 198 ms; shapes it does not take fall back to flash, then reference
    if (!e || !*e || strcmp(e, "cudnn") == 0) return CUDA_ATTN_CUDNN;
    if (strcmp(e, "flash") == 0) return CUDA_ATTN_FLASH;
    if (strcmp(e, "reference") == 0) return CUDA_ATTN_REFERENCE;
    fprintf(stderr, "SQ_ATTENTION=%s: expected cudnn, flash or reference; using cudnn\n", e);
    return CUDA_ATTN_CUDNN;
}
}   // namespace

extern "C" void cuda_attention_set_path(cuda_attention_path path) { g_path = (int)path; }
extern "C" cuda_attention_path cuda_attention_last_path(void) { return g_last; }

extern "C" void cuda_attention(sq_dtype dt, void *out, const void *q, const void *k, const void *v, const void *bias,
                               const void *key_mask, bool causal, float scale, int64_t B, int64_t Tq, int64_t Tk,
                               int64_t NH, int64_t HS) {
    if (g_path < 0) g_path = path_from_env();
    bool fast = g_path != CUDA_ATTN_REFERENCE && dt == SQ_BF16 && !bias && !causal;
    if (fast && g_path == CUDA_ATTN_CUDNN && !key_mask &&
        cuda_attention_cudnn(out, q, k, v, scale, B, Tq, Tk, NH, HS)) {
        g_last = CUDA_ATTN_CUDNN;
        return;
    }
    if (fast && cuda_attention_flash(out, q, k, v, key_mask, scale, B, Tq, Tk, NH, HS)) {
        g_last = CUDA_ATTN_FLASH;
        return;
    }
    if (g_path != CUDA_ATTN_REFERENCE && dt == SQ_F32 && NH == 1 && !bias && !key_mask && !causal && Tk >= 256) {
        cuda_attention_gemm_f32((float *)out, (const float *)q, (const float *)k, (const float *)v, scale, B, Tq, Tk, HS);
        g_last = CUDA_ATTN_GEMM;
        return;
    }
    g_last = CUDA_ATTN_REFERENCE;
    cuda_attention_reference(dt, out, q, k, v, bias, key_mask, causal, scale, B, Tq, Tk, NH, HS);
}
