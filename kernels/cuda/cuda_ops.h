// kernels/cuda/cuda_ops.h: the CUDA implementations behind kernels/ops.h, as raw
// pointer functions with the argument order of kernels/cpu/cpu_ops.h plus the
// element type first: activations and weights are bf16 (the default) or f32 (for
// frozen models run at full precision); accumulation and statistics are fp32. Every op runs
// on the current stream (kernels/cuda/stream.cuh): the default one, or the side stream
// of kernels/streams.h between its fork and join, so calls on a stream are ordered; failures abort through
// SQ_CUDA_CHECK with the call, file and line (a kernel fault is not recoverable).
#ifndef SQ_CUDA_OPS_H
#define SQ_CUDA_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "kernels/quant.h"

#ifdef __cplusplus
extern "C" {
#endif

// streams.cu (kernels/streams.h): fork the side stream off the default stream, send
// the ops that follow to it (on) or back to the default stream (off), join it back.
void cuda_stream_fork(void);
void cuda_stream_side(bool on);
void cuda_stream_join(void);
// graph.cu (kernels/graph.h): capture the ops that follow into a CUDA graph, end the
// capture (an instantiated cudaGraphExec_t, NULL with the error set), replay one with
// the perturbation its perturbed layers read, free one. The epoch is the capture under
// way (0: none); the generation moves whenever memory a graph may point into (the
// prefetch buffers, cuDNN's and cuBLASLt's workspaces) is freed or replaced.
int cuda_graph_begin(void);
void *cuda_graph_end(void);
void cuda_graph_launch(void *exec, const sq_perturb *p);
void cuda_graph_free(void *exec);
unsigned long cuda_graph_epoch(void);
unsigned long cuda_graph_generation(void);
void cuda_graph_memory_moved(void);
// Creates the cuBLASLt handle and the fixed workspaces (called by sq_backend_init).
int cuda_ops_init(void);

void cuda_matmul(sq_dtype dt, void *out, const void *x, const void *w, const void *b, int64_t N, int64_t K, int64_t M);
void cuda_matmul_gelu(sq_dtype dt, void *out, const void *x, const void *w, const void *b, int64_t N, int64_t K, int64_t M);
void cuda_matmul_shared_input(sq_dtype dt, void *out, int64_t out_stride, const void *x, const void *w, const void *b,
                              int64_t G, int64_t N, int64_t K, int64_t M);
void cuda_layernorm(sq_dtype dt, void *out, const void *x, const void *w, const void *b, int64_t rows, int64_t C, float eps);
void cuda_rmsnorm(sq_dtype dt, void *out, const void *x, const void *w, int64_t rows, int64_t C, float eps);
void cuda_groupnorm(sq_dtype dt, void *out, const void *x, const void *w, const void *b, int64_t B, int64_t C, int64_t HW,
                    int groups, float eps);
void cuda_gelu(sq_dtype dt, void *out, const void *x, int64_t n, bool tanh_approx);
void cuda_silu(sq_dtype dt, void *out, const void *x, int64_t n);
void cuda_quick_gelu(sq_dtype dt, void *out, const void *x, int64_t n);
// Only tests/ops_ref.h calls this (attention has its own softmax); kept with its GPU test.
// bias: bf16 (NH,Tq,Tk) or NULL; key_mask: u8 (B,Tk) or NULL
void cuda_attention(sq_dtype dt, void *out, const void *q, const void *k, const void *v, const void *bias, const void *key_mask,
                    bool causal, float scale, int64_t B, int64_t Tq, int64_t Tk, int64_t NH, int64_t HS);
// Same, always with the simple reference kernel (cuda_attention takes the flash kernel
// for bf16 without bias/causal, HS 64/128, unless SQ_ATTENTION_REFERENCE=1); for tests.
void cuda_attention_reference(sq_dtype dt, void *out, const void *q, const void *k, const void *v, const void *bias,
                              const void *key_mask, bool causal, float scale, int64_t B, int64_t Tq, int64_t Tk, int64_t NH,
                              int64_t HS);
// Which kernel cuda_attention uses for the calls the fast paths handle (bf16, no bias,
// not causal; the flash kernel also takes a key mask, cuDNN does not). Chosen once from
// the environment: SQ_ATTENTION=cudnn (default: attention_cudnn.cu, falling back to
// flash, then to the reference kernel, for calls it does not handle; measured faster
// than flash on an H100), SQ_ATTENTION=flash (our own kernel), or
// SQ_ATTENTION=reference; SQ_ATTENTION_REFERENCE=1 still forces the reference kernel.
typedef enum { CUDA_ATTN_FLASH = 0, CUDA_ATTN_CUDNN = 1, CUDA_ATTN_REFERENCE = 2, CUDA_ATTN_GEMM = 3 } cuda_attention_path;
// Overrides the environment's choice (tests, benchmarks).
void cuda_attention_set_path(cuda_attention_path path);
// The kernel that ran the last cuda_attention call (after any fallback).
cuda_attention_path cuda_attention_last_path(void);
// attention_gemm.cu: fp32 attention of one head (out, q (B,Tq,HS), k, v (B,Tk,HS)), no
// bias, mask or causality, as chunked fp32 GEMMs with a row softmax (the VAE's).
void cuda_attention_gemm_f32(float *out, const float *q, const float *k, const float *v, float scale, int64_t B,
                             int64_t Tq, int64_t Tk, int64_t HS);
// attention_cudnn.cu: cuDNN's fused flash SDPA for bf16 q,k,v,out in the layout above,
// no bias, no mask, not causal. True when cuDNN ran it; false when not handled (no cuDNN
// in the build, another case, or cuDNN could not build a plan for the shape: that is
// remembered, reported once on stderr, and never aborts).
bool cuda_attention_cudnn(void *out, const void *q, const void *k, const void *v, float scale, int64_t B, int64_t Tq,
                          int64_t Tk, int64_t NH, int64_t HS);
// True when the build has cuDNN (cuda_attention_cudnn may handle calls).
bool cuda_attention_cudnn_available(void);
void cuda_conv2d(sq_dtype dt, void *out, const void *x, const void *w, const void *b, int64_t B, int64_t Cin, int64_t H, int64_t W,
                 int64_t Cout, int64_t KH, int64_t KW, int stride, int pad_top, int pad_bottom, int pad_left,
                 int pad_right, int64_t Ho, int64_t Wo);
// Same, always with the direct reference kernel (cuda_conv2d takes cuDNN when built with
// it, for symmetric padding, unless SQ_CONV_REFERENCE=1); for tests.
void cuda_conv2d_reference(sq_dtype dt, void *out, const void *x, const void *w, const void *b, int64_t B, int64_t Cin,
                           int64_t H, int64_t W, int64_t Cout, int64_t KH, int64_t KW, int stride, int pad_top,
                           int pad_bottom, int pad_left, int pad_right, int64_t Ho, int64_t Wo);
// conv_cudnn.cu: true when cuDNN ran the convolution (bias included); false when it
// was not handled (asymmetric padding, no cuDNN in the build, no deterministic algorithm).
bool cuda_conv2d_cudnn(sq_dtype dt, void *out, const void *x, const void *w, const void *b, int64_t B, int64_t Cin,
                       int64_t H, int64_t W, int64_t Cout, int64_t KH, int64_t KW, int stride, int pad_top,
                       int pad_bottom, int pad_left, int pad_right, int64_t Ho, int64_t Wo);
void cuda_upsample_nearest2x(sq_dtype dt, void *out, const void *x, int64_t BC, int64_t H, int64_t W);
void cuda_axpby(sq_dtype dt, void *out, float alpha, const void *a, float beta, const void *b, int64_t n);
void cuda_mul(sq_dtype dt, void *out, const void *a, const void *b, int64_t n);
void cuda_scale(sq_dtype dt, void *out, const void *x, float alpha, float beta, int64_t n);
// Only tests/ops_ref.h calls this (linear layers take the bias in the GEMM); kept with its GPU test.
// Per-(batch, channel) bias; conv_cudnn.cu adds the convolution bias with it.
void cuda_add_channel_bias(sq_dtype dt, void *x, const void *b, int64_t BC, int64_t HW);
void cuda_fill(sq_dtype dt, void *out, float value, int64_t n);
void cuda_modulate(sq_dtype dt, void *out, const void *x, const void *shift, const void *scale, int64_t B, int64_t T, int64_t C);
void cuda_gated_add(sq_dtype dt, void *x, const void *gate, const void *y, int64_t B, int64_t T, int64_t C);
// norm.cu: layernorm (no affine) then modulate, fused (the normalised value is not
// rounded to bf16 before the modulation); and the same after x += gate * y (x is
// stored, and normalised, rounded to its dtype as the separate ops would).
void cuda_layernorm_modulate(sq_dtype dt, void *out, const void *x, const void *shift, const void *scale, int64_t B, int64_t T,
                             int64_t C, float eps);
void cuda_gated_add_layernorm_modulate(sq_dtype dt, void *x, const void *gate, const void *y, void *h, const void *shift,
                                       const void *scale, int64_t B, int64_t T, int64_t C, float eps);
// dst (contiguous, shape) <- src with element strides; elem_size 1, 2 or 4 bytes
void cuda_strided_copy(void *dst, const void *src, const int64_t shape[4], const int64_t src_stride[4], size_t elem_size);
void cuda_copy(void *dst, const void *src, size_t bytes);
// height rows of width bytes from src (rows src_pitch bytes apart) to dst (dst_pitch apart)
void cuda_copy_2d(void *dst, int64_t dst_pitch, const void *src, int64_t src_pitch, int64_t width, int64_t height);
// f32 <-> bf16 conversion on the device
void cuda_convert(void *dst, sq_dtype dst_dtype, const void *src, sq_dtype src_dtype, int64_t n);
// out (N,C) = rows of table (V,C) picked by N host int32 ids (already range-checked)
void cuda_embedding(sq_dtype dt, void *out, const void *table, const int32_t *ids, int64_t N, int64_t C);
// ---- quantised weights (kernels/quant.h, kernels/int8.h) ----
// quant.cu: out (Nout,K) bf16 = (scales + p·eps·z) ⊙ codes (p may be NULL); and the QZO
// update s[j] = max(s[j] - coeff·z(seed, step, index_base + j), 0) of `count` scales.
void cuda_dequant_q4(void *out_bf16, const uint8_t *codes, const float *scales, int64_t nout, int64_t k, int group,
                     const sq_perturb *p);
void cuda_qzo_update(float *scales, int64_t count, const sq_perturb *p, float coeff);
// weight_prefetch.cu, the device half of kernels/weight_prefetch.h: one int4 layer
// under one perturbation, dequantised to bf16 (nout, k).
typedef struct {
    const uint8_t *codes;
    const float *scales;
    int64_t nout, k;
    int group;
    sq_perturb p;
} cuda_q4_weight;
// w's weights, ready for the work queued next on the default stream: the buffer the
// last cuda_prefetch_start filled if it was for w (same layer and perturbation),
// else dequantised now on the default stream into that buffer.
void *cuda_prefetch_take(const cuda_q4_weight *w);
// Call once the default stream's reads of the buffer `take` returned are queued.
void cuda_prefetch_taken_read(void);
// Dequantises w into the other buffer on the low-priority side stream (skipped when
// w is larger than any weight taken so far).
void cuda_prefetch_start(const cuda_q4_weight *w);
// The default stream waits for the side stream; nothing started is taken after this.
void cuda_prefetch_finish(void);
// After a CUDA graph replay (graph.cu): every event recorded again on the default stream.
void cuda_prefetch_after_graph(void);
// Weights taken so far that were dequantised ahead, and in line.
void cuda_prefetch_counts(long *ahead, long *in_line);
// Frees the two buffers (sq_device_trim); returns the bytes freed.
size_t cuda_prefetch_release(void);
// sq_qzo_update_terms on the device: layer l is scales[l][0..counts[l]) with index
// base index_base[l]; one launch per SQ_QZO_UPDATE_TERMS_PER_LAUNCH terms.
void cuda_qzo_update_terms(float *const *scales, const int64_t *counts, const uint64_t *index_base, int n_layers,
                           const sq_perturb *terms, const float *coeffs, int n_terms);
void cuda_ema_update(float *ema, const float *scales, int64_t count, float beta);
// quantize.cu: the int4 quantiser of kernels/quant.h (sq_quantize_q4_src) on the device,
// host buffers in and out: w (Nout,K) F32/BF16/F16, codes (Nout·K/2 bytes), scales
// (Nout·K/G); *err the total squared error and *energy the sum of squared weights,
// both bit-identical to the CPU's. SQ_FAIL with a message on a CUDA error.
int cuda_quantize_q4(const void *w, sq_dtype dtype, int64_t nout, int64_t k, int group, uint8_t *codes,
                     float *scales, double *err, double *energy);
// qgemv.cu: y (rows,Nout) = x (rows,K) · dequant(codes, scales, p)ᵀ + bias straight from
// the int4 codes, for rows <= SQ_QGEMV_MAX_ROWS; _supported says whether it takes the
// call (row count, alignment, group size).
bool cuda_qgemv_q4_supported(const void *x, const uint8_t *codes, int64_t rows, int64_t k, int group);
void cuda_qgemv_q4(void *y_bf16, const void *x_bf16, const uint8_t *codes, const float *scales, const void *bias_bf16,
                   int64_t rows, int64_t nout, int64_t k, int group, const sq_perturb *p);
// int8.cu: out (Nout,K) in dt = scales (Nout) ⊙ codes (Nout,K).
void cuda_dequant_i8(sq_dtype dt, void *out, const int8_t *codes, const float *scales, int64_t nout, int64_t k);
// Deterministic sums (fixed-order two-stage reduction, no atomics), in double.
// sq_mse uses cuda_sum_sq_diff; cuda_sum is the same reduction, for tests/ops_ref.h.
double cuda_sum(const void *x, sq_dtype dtype, int64_t n);
double cuda_sum_sq_diff(const void *a, sq_dtype adtype, const void *b, sq_dtype bdtype, int64_t n);
// sq_weighted_mse: sum_c sum_p w[p] (a[c,p] - b[c,p])^2 over a, b (C,P) and w (P) f32,
// with *wsum = sum_p w[p], both from the same fixed grid as the sums above.
double cuda_weighted_sum_sq_diff(const void *a, sq_dtype adtype, const void *b, sq_dtype bdtype, const float *w, int64_t C,
                                 int64_t P, double *wsum);

#ifdef __cplusplus
}
#endif

#endif
