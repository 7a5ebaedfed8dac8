// tests/gpu/test_gpu_attention_cudnn.c: cuda_attention with the cuDNN path forced
// (cuda_attention_set_path(CUDA_ATTN_CUDNN)) against the CPU op on the same bf16-rounded
// inputs, NaN-poisoned device outputs, tolerance 2e-2 (max relative error): shapes of
// CLIP (T=77), odd token counts (333) and the SD3.5 1024² joint sequence (4429), 2 and
// 24 heads, HS 64. Each case prints which kernel ran (cuda_attention_last_path); in a
// build with cuDNN, a no-bias/no-mask case that did not run on cuDNN is a failure.
// Calls cuDNN does not handle (bias, key mask, causal) must fall back and still match.
// Finally times flash vs cuDNN (median of 10 calls after warm-up, each bracketed by
// device synchronisations and timed on the host monotonic clock: a few µs of launch and
// sync overhead on calls of milliseconds) on the SD3.5 Large 1024² shape (B=1, T=4429, NH=38, HS=64) so the
// default can be chosen on measurements. Skips (exit 77) without a GPU or in a CPU build.
#include <math.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "kernels/backend.h"
#include "kernels/ops.h"
#ifdef SQ_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif
#include "tests/gpu/gpu_start.h"
#include "tests/test_util.h"

#ifdef SQ_HAVE_CUDA
static uint64_t rs = 0xA77E;
static sq_device g_dev;

typedef struct {
    sq_tensor h, d;   // host f32 and device bf16 twins
} pair;

static pair make(int ndim, const int64_t *shape, bool poison) {
    pair p;
    SQ_CHECK(sq_tensor_alloc(&p.h, SQ_F32, SQ_CPU, ndim, shape) == SQ_OK, "alloc");
    SQ_CHECK(sq_tensor_alloc(&p.d, SQ_BF16, SQ_CUDA, ndim, shape) == SQ_OK, "%s", sq_error_message());
    float *h = p.h.data;
    int64_t n = sq_tensor_numel(&p.h);
    if (poison) tu_poison(h, n);
    else
        for (int64_t i = 0; i < n; i++) h[i] = sq_bf16_to_f32(sq_f32_to_bf16(tu_uniform(&rs, -1, 1)));
    SQ_CHECK(sq_tensor_from_host_f32(&p.d, h) == SQ_OK, "%s", sq_error_message());
    return p;
}
static void drop(pair *p) { sq_tensor_free(&p->h); sq_tensor_free(&p->d); }

static const char *path_name(cuda_attention_path p) {
    return p == CUDA_ATTN_CUDNN ? "cudnn" : p == CUDA_ATTN_FLASH ? "flash" : "reference";
}

// kind: 0 plain (cuDNN must run it when available), 1 bias, 2 key mask, 3 causal (fallbacks)
static void cudnn_case(int64_t B, int64_t Tq, int64_t Tk, int64_t NH, int64_t HS, int kind) {
    pair q = make(4, SQ_SHAPE(B, Tq, NH, HS), false), k = make(4, SQ_SHAPE(B, Tk, NH, HS), false);
    pair v = make(4, SQ_SHAPE(B, Tk, NH, HS), false), o = make(4, SQ_SHAPE(B, Tq, NH, HS), true);
    pair bias = make(3, SQ_SHAPE(NH, Tq, Tk), false);
    sq_tensor mh = {0}, md = {0};
    if (kind == 2) {   // every fifth key masked; batch 1 fully masked (zeros expected)
        sq_tensor_alloc(&mh, SQ_U8, SQ_CPU, 2, SQ_SHAPE(B, Tk));
        sq_tensor_alloc(&md, SQ_U8, SQ_CUDA, 2, SQ_SHAPE(B, Tk));
        uint8_t *m = mh.data;
        for (int64_t i = 0; i < B * Tk; i++) m[i] = (uint8_t)((i * 7 + 3) % 5 != 0);
        if (B > 1) memset(m + Tk, 0, (size_t)Tk);
        sq_tensor_copy(&md, &mh);
    }
    float scale = 1.0f / sqrtf((float)HS);
    // The CPU op on f32 host twins is the reference; its bias must be F32, the device's bf16.
    sq_attention(&o.h, &q.h, &k.h, &v.h, kind == 1 ? &bias.h : NULL, kind == 2 ? &mh : NULL, kind == 3, scale);
    sq_attention(&o.d, &q.d, &k.d, &v.d, kind == 1 ? &bias.d : NULL, kind == 2 ? &md : NULL, kind == 3, scale);
    cuda_attention_path ran = cuda_attention_last_path();
    int64_t n = sq_tensor_numel(&o.h);
    float *got = malloc((size_t)n * sizeof(float));
    SQ_CHECK(sq_tensor_to_host_f32(got, &o.d) == SQ_OK, "%s", sq_error_message());
    double e = tu_rel_err(got, o.h.data, n);
    static const char *kinds[] = {"plain", "bias", "mask", "causal"};
    char what[96];
    snprintf(what, sizeof what, "B%lld Tq%lld Tk%lld NH%lld HS%lld %s", (long long)B, (long long)Tq, (long long)Tk,
             (long long)NH, (long long)HS, kinds[kind]);
    printf("  %-40s ran %-9s rel err %.2e\n", what, path_name(ran), e);
    TU_CHECK(e <= 2e-2, "%s (%s): relative error %.3g > 2e-2", what, path_name(ran), e);
    if (kind == 0 && HS <= 128 && cuda_attention_cudnn_available())   // HS 64/128: every fused engine's sizes
        TU_CHECK(ran == CUDA_ATTN_CUDNN, "%s: cuDNN is in the build but the call ran on %s", what, path_name(ran));
    if (kind != 0) TU_CHECK(ran != CUDA_ATTN_CUDNN, "%s: cuDNN claimed a call it does not handle", what);
    if (kind == 0 && ran == CUDA_ATTN_CUDNN) {   // a second run: same plan from the cache, same result
        tu_poison(o.h.data, n);
        SQ_CHECK(sq_tensor_from_host_f32(&o.d, o.h.data) == SQ_OK, "%s", sq_error_message());
        sq_attention(&o.d, &q.d, &k.d, &v.d, NULL, NULL, false, scale);
        float *again = malloc((size_t)n * sizeof(float));
        SQ_CHECK(sq_tensor_to_host_f32(again, &o.d) == SQ_OK, "%s", sq_error_message());
        TU_CHECK(memcmp(got, again, (size_t)n * sizeof(float)) == 0, "%s: cached plan's repeat differs", what);
        free(again);
    }
    free(got);
    drop(&q); drop(&k); drop(&v); drop(&o); drop(&bias);
    if (kind == 2) { sq_tensor_free(&mh); sq_tensor_free(&md); }
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static float time_path(cuda_attention_path path, sq_tensor *o, const sq_tensor *q, const sq_tensor *k, const sq_tensor *v,
                       float scale, cuda_attention_path *ran) {
    cuda_attention_set_path(path);
    for (int i = 0; i < 3; i++) sq_attention(o, q, k, v, NULL, NULL, false, scale);   // plan build, warm-up
    *ran = cuda_attention_last_path();
    float ms[10];
    for (int i = 0; i < 10; i++) {
        sq_device_synchronize(g_dev);
        double t0 = now_ms();
        sq_attention(o, q, k, v, NULL, NULL, false, scale);
        sq_device_synchronize(g_dev);
        ms[i] = (float)(now_ms() - t0);
    }
    for (int i = 1; i < 10; i++)   // insertion sort: median of 10
        for (int j = i; j > 0 && ms[j] < ms[j - 1]; j--) { float t = ms[j]; ms[j] = ms[j - 1]; ms[j - 1] = t; }
    return 0.5f * (ms[4] + ms[5]);
}

// SD3.5 Large at 1024²: 4096 image + 333 text tokens, 38 heads of 64.
static void time_sd35_large(void) {
    const int64_t B = 1, T = 4429, NH = 38, HS = 64;
    pair q = make(4, SQ_SHAPE(B, T, NH, HS), false), k = make(4, SQ_SHAPE(B, T, NH, HS), false);
    pair v = make(4, SQ_SHAPE(B, T, NH, HS), false);
    sq_tensor of, oc;
    SQ_CHECK(sq_tensor_alloc(&of, SQ_BF16, SQ_CUDA, 4, SQ_SHAPE(B, T, NH, HS)) == SQ_OK, "%s", sq_error_message());
    SQ_CHECK(sq_tensor_alloc(&oc, SQ_BF16, SQ_CUDA, 4, SQ_SHAPE(B, T, NH, HS)) == SQ_OK, "%s", sq_error_message());
    float scale = 1.0f / sqrtf((float)HS);
    cuda_attention_path rf, rc;
    float tf = time_path(CUDA_ATTN_FLASH, &of, &q.d, &k.d, &v.d, scale, &rf);
    float tc = time_path(CUDA_ATTN_CUDNN, &oc, &q.d, &k.d, &v.d, scale, &rc);
    double flops = 4.0 * B * NH * (double)T * T * HS;   // two matmuls
    printf("SD3.5 Large 1024² attention (B=1 T=4429 NH=38 HS=64), median of 10:\n");
    printf("  %-9s %.3f ms  %.1f TFLOP/s\n", path_name(rf), tf, flops / (tf * 1e-3) / 1e12);
    printf("  %-9s %.3f ms  %.1f TFLOP/s\n", path_name(rc), tc, flops / (tc * 1e-3) / 1e12);
    // Both outputs on the same inputs: they must agree within bf16 tolerance.
    int64_t n = B * T * NH * HS;
    float *a = malloc((size_t)n * sizeof(float)), *b = malloc((size_t)n * sizeof(float));
    SQ_CHECK(sq_tensor_to_host_f32(a, &of) == SQ_OK && sq_tensor_to_host_f32(b, &oc) == SQ_OK, "%s", sq_error_message());
    double e = tu_rel_err(b, a, n);
    printf("  %s vs %s rel err %.2e\n", path_name(rc), path_name(rf), e);
    TU_CHECK(e <= 2e-2, "SD3.5 shape: %s vs %s relative error %.3g", path_name(rc), path_name(rf), e);
    free(a); free(b);
    drop(&q); drop(&k); drop(&v);
    sq_tensor_free(&of); sq_tensor_free(&oc);
}

#endif

int main(void) {
#ifndef SQ_HAVE_CUDA
    printf("SKIP: CPU-only build (no CUDA backend)\n");
    return 77;
#else
    int start = tu_gpu_start(&g_dev);
    if (start) return start;
    char gpu[256];
    sq_cuda_describe(gpu, sizeof gpu);
    printf("GPU: %s; cuDNN in the build: %s\n", gpu, cuda_attention_cudnn_available() ? "yes" : "no");
    cuda_attention_set_path(CUDA_ATTN_CUDNN);
    cudnn_case(2, 77, 77, 2, 64, 0);
    cudnn_case(2, 77, 77, 24, 64, 0);
    cudnn_case(2, 333, 333, 2, 64, 0);
    cudnn_case(2, 333, 333, 24, 64, 0);
    cudnn_case(2, 150, 333, 2, 64, 0);    // Tq != Tk
    cudnn_case(1, 4429, 4429, 2, 64, 0);  // the SD3.5 1024² sequence (CPU reference: a few seconds)
    cudnn_case(2, 77, 77, 2, 128, 0);
    cudnn_case(2, 77, 77, 2, 64, 1);      // bias: reference kernel
    cudnn_case(2, 77, 77, 2, 64, 2);      // key mask: flash kernel
    cudnn_case(2, 33, 33, 2, 64, 3);      // causal: reference kernel
    cudnn_case(1, 64, 64, 1, 512, 0);     // the VAE's single head: cuDNN or a fallback, must match
    time_sd35_large();
    return tu_finish("test_gpu_attention_cudnn");
#endif
}
