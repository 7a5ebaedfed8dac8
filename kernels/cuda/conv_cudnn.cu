// kernels/cuda/conv_cudnn.cu: the fast path of cuda_conv2d through cuDNN's classic
// API (NCHW, cross-correlation, fp32 accumulation). The handle, the workspace and the
// plan cache are the ones all cuDNN ops share (cudnn_context.cuh): per shape the
// descriptors and a deterministic algorithm (from cudnnGetConvolutionForwardAlgorithm_v7,
// non-deterministic ones rejected) are kept there, and the workspace grows only on a
// shape's first call, never in the hot loop. bf16 runs with tensor-op math (conversion math
// only if no plain tensor-op/default algorithm is found); f32 runs with FMA math, so
// no TF32 rounding creeps into the full-precision models (the VAE). cuDNN pads
// symmetrically only, so calls with pad_top != pad_bottom or pad_left != pad_right
// (the VAE down-sampler's (0,1,0,1)) are left to the reference kernel: the function
// returns false for them, and for anything else it does not handle. Without cuDNN
// (SQ_HAVE_CUDNN unset) it always returns false. Not thread-safe: like every op here
// it assumes one host thread driving the default stream.
#include <stdio.h>
#include <stdlib.h>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cudnn_context.cuh"

#ifdef SQ_HAVE_CUDNN   // check.h then includes <cudnn.h> and defines SQ_CUDNN_CHECK

namespace {

struct conv_key {   // the plan cache's key: compared as bytes, so no padding
    int dt, n, c, h, w, k, kh, kw, stride, ph, pw;
};

struct conv_plan {
    bool ok;   // false: cuDNN has no deterministic algorithm for it; use the reference kernel
    conv_key key;
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    cudnnConvolutionFwdAlgo_t algo;
    size_t ws_bytes;
};

cudnnHandle_t g_handle = nullptr;   // the shared one (cudnn_context.cuh), once started

// The plan cache's destroy callback.
void plan_destroy(void *plan) {
    conv_plan *p = (conv_plan *)plan;
    SQ_CUDNN_CHECK(cudnnDestroyTensorDescriptor(p->xd));
    SQ_CUDNN_CHECK(cudnnDestroyTensorDescriptor(p->yd));
    SQ_CUDNN_CHECK(cudnnDestroyFilterDescriptor(p->wd));
    SQ_CUDNN_CHECK(cudnnDestroyConvolutionDescriptor(p->cd));
    free(p);
}

// Picks the first deterministic algorithm of the _v7 list (ordered by expected speed)
// whose math type is acceptable, under the given descriptor math type. True when found.
bool pick_algo(conv_plan *p, cudnnMathType_t math, bool bf16) {
    SQ_CUDNN_CHECK(cudnnSetConvolutionMathType(p->cd, math));
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int count = 0;
    SQ_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(g_handle, p->xd, p->wd, p->cd, p->yd,
                                                          CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &count, perf));
    for (int i = 0; i < count; i++) {
        const cudnnConvolutionFwdAlgoPerf_t &r = perf[i];
        if (r.status != CUDNN_STATUS_SUCCESS || r.determinism != CUDNN_DETERMINISTIC) continue;
        if (bf16) {
            if (r.mathType != math && r.mathType != CUDNN_DEFAULT_MATH && r.mathType != CUDNN_TENSOR_OP_MATH) continue;
        } else if (r.mathType != CUDNN_FMA_MATH) {
            continue;   // f32: no TF32
        }
        SQ_CUDNN_CHECK(cudnnSetConvolutionMathType(p->cd, r.mathType));
        size_t ws = 0;
        // Not fatal: an algorithm the heuristics list may still refuse this exact
        // configuration; that status just moves on to the next candidate.
        cudnnStatus_t st = cudnnGetConvolutionForwardWorkspaceSize(g_handle, p->xd, p->wd, p->cd, p->yd, r.algo, &ws);
        if (st == CUDNN_STATUS_NOT_SUPPORTED || st == CUDNN_STATUS_BAD_PARAM) continue;
        SQ_CUDNN_CHECK(st);
        p->algo = r.algo;
        p->ws_bytes = ws;
        return true;
    }
    return false;
}

// Fills a new plan's descriptors and picks its algorithm; p->ok says whether it can run.
void build_plan(conv_plan *p, const conv_key &key, int64_t Ho, int64_t Wo) {
    SQ_CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->xd));
    SQ_CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->yd));
    SQ_CUDNN_CHECK(cudnnCreateFilterDescriptor(&p->wd));
    SQ_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&p->cd));
    bool bf16 = key.dt == (int)SQ_BF16;
    cudnnDataType_t ddt = bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    SQ_CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->xd, CUDNN_TENSOR_NCHW, ddt, key.n, key.c, key.h, key.w));
    SQ_CUDNN_CHECK(cudnnSetFilter4dDescriptor(p->wd, ddt, CUDNN_TENSOR_NCHW, key.k, key.c, key.kh, key.kw));
    SQ_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(p->cd, key.ph, key.pw, key.stride, key.stride, 1, 1,
                                                   CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    int on = 0, oc = 0, oh = 0, ow = 0;
    SQ_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(p->cd, p->xd, p->wd, &on, &oc, &oh, &ow));
    if (on != key.n || oc != key.k || oh != Ho || ow != Wo) return;   // not the shape the caller expects
    SQ_CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->yd, CUDNN_TENSOR_NCHW, ddt, on, oc, oh, ow));
    if (bf16)
        p->ok = pick_algo(p, CUDNN_TENSOR_OP_MATH, true) || pick_algo(p, CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION, true);
    else
        p->ok = pick_algo(p, CUDNN_FMA_MATH, false);
}

conv_plan *plan_for(const conv_key &key, int64_t Ho, int64_t Wo) {
    conv_plan *p = (conv_plan *)sq_cudnn_plan_find(SQ_CUDNN_OP_CONV, &key, sizeof key);
    if (p) return p;
    p = (conv_plan *)calloc(1, sizeof *p);
    SQ_CHECK(p, "cuDNN convolution: out of host memory for a plan");
    p->key = key;
    build_plan(p, key, Ho, Wo);   // a failed shape is cached too, with ok false
    sq_cudnn_plan_put(SQ_CUDNN_OP_CONV, &key, sizeof key, p, plan_destroy);
    return p;
}

bool fits_int(int64_t v) { return v > 0 && v <= INT32_MAX; }

}   // namespace

extern "C" bool cuda_conv2d_cudnn(sq_dtype dt, void *out, const void *x, const void *w, const void *b, int64_t B,
                                  int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t KH, int64_t KW, int stride,
                                  int pad_top, int pad_bottom, int pad_left, int pad_right, int64_t Ho, int64_t Wo) {
    if (dt != SQ_BF16 && dt != SQ_F32) return false;
    if (pad_top != pad_bottom || pad_left != pad_right) return false;   // asymmetric: reference kernel
    if (pad_top < 0 || pad_left < 0 || stride < 1) return false;
    if (!fits_int(B) || !fits_int(Cin) || !fits_int(H) || !fits_int(W) || !fits_int(Cout) || !fits_int(KH) ||
        !fits_int(KW) || !fits_int(Ho) || !fits_int(Wo))
        return false;
    // cuDNN's 4-d descriptors take int strides: keep every tensor under 2^31 elements
    if (B * Cin * H * W > INT32_MAX || B * Cout * Ho * Wo > INT32_MAX || Cout * Cin * KH * KW > INT32_MAX) return false;
    g_handle = sq_cudnn_handle("convolutions use the reference kernel");
    if (!g_handle) return false;
    conv_key key = {(int)dt, (int)B, (int)Cin, (int)H, (int)W, (int)Cout, (int)KH, (int)KW, stride, pad_top, pad_left};
    conv_plan *p = plan_for(key, Ho, Wo);
    if (!p->ok) return false;
    // the shared workspace may have been released between phases; without device
    // memory for it the reference kernel, which needs none, does the convolution (as
    // attention does), rather than a near-full GPU aborting the run mid-step
    if (!sq_cudnn_workspace_reserve(p->ws_bytes)) return false;
    float alpha = 1.0f, beta = 0.0f;   // scaling parameters are float for bf16 and f32 data
    SQ_CUDNN_CHECK(cudnnSetStream(g_handle, SQ_STREAM));
    SQ_CUDNN_CHECK(cudnnConvolutionForward(g_handle, &alpha, p->xd, x, p->wd, w, p->cd, p->algo,
                                           p->ws_bytes ? sq_cudnn_workspace() : nullptr, p->ws_bytes, &beta, p->yd, out));
    if (b) {
        // cuda_add_channel_bias indexes the bias by (batch·C + channel): one call per image
        size_t esz = dt == SQ_F32 ? sizeof(float) : sizeof(bf16);
        size_t img = (size_t)(Cout * Ho * Wo) * esz;
        for (int64_t bi = 0; bi < B; bi++) cuda_add_channel_bias(dt, (char *)out + (size_t)bi * img, b, Cout, Ho * Wo);
    }
    return true;
}

#else   // no cuDNN: never handles a call

extern "C" bool cuda_conv2d_cudnn(sq_dtype dt, void *out, const void *x, const void *w, const void *b, int64_t B,
                                  int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t KH, int64_t KW, int stride,
                                  int pad_top, int pad_bottom, int pad_left, int pad_right, int64_t Ho, int64_t Wo) {
    (void)dt; (void)out; (void)x; (void)w; (void)b; (void)B; (void)Cin; (void)H; (void)W; (void)Cout; (void)KH;
    (void)KW; (void)stride; (void)pad_top; (void)pad_bottom; (void)pad_left; (void)pad_right; (void)Ho; (void)Wo;
    return false;
}

#endif
