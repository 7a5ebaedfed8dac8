// kernels/cpu/cpu_ops.h: the fp32 CPU reference behind kernels/ops.h, as raw
// pointer functions (llm.c style). Simple, obviously right, multi-threaded with
// OpenMP where the work is large; every CUDA kernel is tested against these.
// All arrays are contiguous row-major float32.
#ifndef SQ_CPU_OPS_H
#define SQ_CPU_OPS_H

#include <stdbool.h>
#include <stdint.h>

// out (N,M) = x (N,K) · w (M,K)ᵀ + b (M), b may be NULL
void cpu_matmul(float *out, const float *x, const float *w, const float *b, int64_t N, int64_t K, int64_t M);

// rows of length C
void cpu_layernorm(float *out, const float *x, const float *w, const float *b, int64_t rows, int64_t C, float eps);
void cpu_rmsnorm(float *out, const float *x, const float *w, int64_t rows, int64_t C, float eps);
// x (B,T,C), shift and scale (B,C): cpu_layernorm (no affine) then cpu_modulate
void cpu_layernorm_modulate(float *out, const float *x, const float *shift, const float *scale, int64_t B, int64_t T,
                            int64_t C, float eps);
// x (B,C,HW)
void cpu_groupnorm(float *out, const float *x, const float *w, const float *b, int64_t B, int64_t C, int64_t HW,
                   int groups, float eps);

void cpu_gelu(float *out, const float *x, int64_t n, bool tanh_approx);
void cpu_silu(float *out, const float *x, int64_t n);
void cpu_quick_gelu(float *out, const float *x, int64_t n);

// q (B,Tq,NH,HS), k/v (B,Tk,NH,HS), out (B,Tq,NH,HS); bias (NH,Tq,Tk) or NULL;
// key_mask (B,Tk) or NULL
void cpu_attention(float *out, const float *q, const float *k, const float *v, const float *bias,
                   const uint8_t *key_mask, bool causal, float scale, int64_t B, int64_t Tq, int64_t Tk, int64_t NH,
                   int64_t HS);

// x (B,Cin,H,W), w (Cout,Cin,KH,KW), out (B,Cout,Ho,Wo)
void cpu_conv2d(float *out, const float *x, const float *w, const float *b, int64_t B, int64_t Cin, int64_t H,
                int64_t W, int64_t Cout, int64_t KH, int64_t KW, int stride, int pad_top, int pad_left, int64_t Ho,
                int64_t Wo);
void cpu_upsample_nearest2x(float *out, const float *x, int64_t BC, int64_t H, int64_t W);

void cpu_add(float *out, const float *a, const float *b, int64_t n);
void cpu_sub(float *out, const float *a, const float *b, int64_t n);
void cpu_mul(float *out, const float *a, const float *b, int64_t n);
void cpu_scale(float *out, const float *x, float alpha, float beta, int64_t n);
void cpu_axpby(float *out, float alpha, const float *a, float beta, const float *b, int64_t n);
void cpu_fill(float *out, float value, int64_t n);
// x (B,T,C); shift, scale, gate (B,C)
void cpu_modulate(float *out, const float *x, const float *shift, const float *scale, int64_t B, int64_t T, int64_t C);
void cpu_gated_add(float *x, const float *gate, const float *y, int64_t B, int64_t T, int64_t C);

// Generic strided copy for concat / slice / permute on up to 4 dims: element at
// index (i0..i3) of a dst of shape `shape` comes from src + sum(i_d * src_stride_d),
// dst is written contiguously from dst.
void cpu_strided_copy(float *dst, const float *src, const int64_t shape[4], const int64_t src_stride[4]);

// out (N,C) = rows ids[0..N) of table (V,C); ids already range-checked
void cpu_embedding(float *out, const float *table, const int32_t *ids, int64_t N, int64_t C);

double cpu_sum_sq_diff(const float *a, const float *b, int64_t n);
// sum_c sum_p w[p] (a[c*P+p] - b[c*P+p])^2 for a, b (C,P) and w (P); *wsum = sum_p w[p].
double cpu_weighted_sum_sq_diff(const float *a, const float *b, const float *w, int64_t C, int64_t P, double *wsum);

void cpu_set_num_threads(int n);

#endif
