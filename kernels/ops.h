// kernels/ops.h: the backend-neutral op layer. Model code (mmdit/, vae/,
// text_encoders/) is written once against these functions and never asks which
// device it runs on: each op looks at its tensors' device and calls the CPU
// reference (kernels/cpu/, fp32) or the CUDA implementation (kernels/cuda/, bf16
// activations, fp32 accumulation and statistics).
//
// Conventions:
// - Outputs come first and are preallocated by the caller (usually from an arena)
//   with the exact shape documented here; ops never allocate device memory.
// - All tensors of one call live on the same device and are contiguous. On the CPU
//   every float tensor is F32; on CUDA activations are BF16 and weights BF16
//   unless stated.
// - Shapes: B batch, T tokens, C channels, NH heads, HS head size, N rows,
//   H/W image height/width. "x is (N,C)" means any leading dims flattened to N.
// - A shape mismatch is a programming bug and aborts through SQ_CHECK with the op's
//   name and the shapes; ops do not return errors.
// - out may alias an input only where an op says "in place allowed".
#ifndef SQ_OPS_H
#define SQ_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---- linear algebra ----
// out (N,Nout) = x (N,K) · w (Nout,K)ᵀ + b (Nout) ; b may be NULL.
// w is in PyTorch nn.Linear layout. x may have any leading dims (flattened to N).
void sq_matmul(sq_tensor *out, const sq_tensor *x, const sq_tensor *w, const sq_tensor *b);
// out = gelu_tanh(x · wᵀ + b): the MLPs' first layer. On CUDA (bf16) the GELU runs in
// the GEMM's epilogue on the fp32 result, saving a pass over the widest activation;
// elsewhere it is sq_matmul followed by sq_gelu.
void sq_matmul_gelu(sq_tensor *out, const sq_tensor *x, const sq_tensor *w, const sq_tensor *b);
// G products of one input, as one strided-batched GEMM on CUDA (a stream's q, k and v
// projections: three GEMMs of a few hundred rows each left most of the GPU idle):
// out_g (N,M) = x (N,K) · w_g (M,K)ᵀ + b_g for g < G. w (G,M,K) and b (G,M) (or NULL)
// are contiguous; out (N,M) is out_0, and out_g starts g·out_stride elements after it
// (the joint Q, K and V tensors, whose rows the projections write, are that far apart).
void sq_matmul_shared_input(sq_tensor *out, int64_t out_stride, const sq_tensor *x, const sq_tensor *w,
                            const sq_tensor *b);

// ---- normalisation (statistics in fp32) ----
// Over the last dim C of x (N,C): (x - mean) / sqrt(var + eps) [* w + b].
// w and b may be NULL (elementwise_affine=False). In place allowed.
void sq_layernorm(sq_tensor *out, const sq_tensor *x, const sq_tensor *w, const sq_tensor *b, float eps);
// x / sqrt(mean(x²) + eps) [* w] over the last dim. w may be NULL. In place allowed.
void sq_rmsnorm(sq_tensor *out, const sq_tensor *x, const sq_tensor *w, float eps);
// x is (B,C,H,W); C split into `groups` groups, each normalised over (C/groups,H,W);
// then per-channel w (C), b (C) (may be NULL). In place allowed.
void sq_groupnorm(sq_tensor *out, const sq_tensor *x, const sq_tensor *w, const sq_tensor *b, int groups, float eps);

// ---- activations (elementwise, in place allowed) ----
// GELU: exact erf form (approx=false, nn.GELU()) or tanh form (approx=true,
// nn.GELU(approximate="tanh"), also T5's "gelu_new").
void sq_gelu(sq_tensor *out, const sq_tensor *x, bool tanh_approx);
void sq_silu(sq_tensor *out, const sq_tensor *x);
// CLIP's quick_gelu: x * sigmoid(1.702 x).
void sq_quick_gelu(sq_tensor *out, const sq_tensor *x);

// ---- attention ----
// q is (B,Tq,NH,HS); k and v are (B,Tk,NH,HS) (the token-major layout a linear layer
// produces, so no permute is needed); out is (B,Tq,NH,HS).
// scores = scale · q·kᵀ (+ bias) per (batch, head), softmax over keys, then · v.
// bias: NULL or (NH,Tq,Tk) added to the scores of every batch (T5's relative
//       position bias). key_mask: NULL or U8 (B,Tk), 0 = padding key (never
//       attended). causal: query i attends keys j <= i (requires Tq == Tk).
// A row whose keys are all masked produces zeros.
void sq_attention(sq_tensor *out, const sq_tensor *q, const sq_tensor *k, const sq_tensor *v,
                  const sq_tensor *bias, const sq_tensor *key_mask, bool causal, float scale);

// ---- convolution / resampling (NCHW) ----
// x (B,Cin,H,W), w (Cout,Cin,KH,KW), b (Cout) or NULL, out (B,Cout,Ho,Wo) with
// Ho = (H + pad_top + pad_bottom - KH) / stride + 1, likewise Wo. Zero padding;
// separate pads give the asymmetric (0,1,0,1) pad of the SD3 VAE down-sampler.
void sq_conv2d(sq_tensor *out, const sq_tensor *x, const sq_tensor *w, const sq_tensor *b,
               int stride, int pad_top, int pad_bottom, int pad_left, int pad_right);
// Nearest-neighbour ×2: x (B,C,H,W) -> out (B,C,2H,2W).
void sq_upsample_nearest2x(sq_tensor *out, const sq_tensor *x);

// ---- elementwise (same numel; in place allowed) ----
void sq_add(sq_tensor *out, const sq_tensor *a, const sq_tensor *b);
void sq_sub(sq_tensor *out, const sq_tensor *a, const sq_tensor *b);
void sq_mul(sq_tensor *out, const sq_tensor *a, const sq_tensor *b);
// out = alpha * x + beta
void sq_scale(sq_tensor *out, const sq_tensor *x, float alpha, float beta);
// out = alpha * a + beta * b
void sq_axpby(sq_tensor *out, float alpha, const sq_tensor *a, float beta, const sq_tensor *b);
void sq_fill(sq_tensor *out, float value);

// ---- adaLN helpers (per-sample vectors broadcast over tokens) ----
// x (B,T,C) += gate (B,C) * y (B,T,C). gate may be NULL (plain residual add). In place.
void sq_gated_add(sq_tensor *x, const sq_tensor *gate, const sq_tensor *y);
// out (B,T,C) = layernorm(x, no affine, eps) * (1 + scale (B,C)) + shift (B,C): the
// normalise-then-modulate pair every adaLN block runs, fused on CUDA (one pass, no
// bf16 rounding in between); on the CPU exactly sq_layernorm then the modulation
// (tests/ops_ref.h tr_modulate is that second half on its own). In place allowed.
void sq_layernorm_modulate(sq_tensor *out, const sq_tensor *x, const sq_tensor *shift, const sq_tensor *scale, float eps);
// sq_gated_add(x, gate, y) then h = sq_layernorm_modulate(x, shift, scale, eps): a
// block's residual update and the next sub-layer's input in one pass on CUDA. x is
// updated in place (and normalised as stored, rounded to its dtype, as the two ops
// would); gate may be NULL; h must not alias x.
void sq_gated_add_layernorm_modulate(sq_tensor *x, const sq_tensor *gate, const sq_tensor *y, sq_tensor *h,
                                     const sq_tensor *shift, const sq_tensor *scale, float eps);

// ---- layout ----
// Copies between tensors of equal numel (and dtype conversion where dtypes differ).
void sq_copy(sq_tensor *out, const sq_tensor *x);
// Concatenate n tensors along dim; all other dims equal; out has the summed dim.
void sq_concat(sq_tensor *out, const sq_tensor *const *xs, int n, int dim);
// out = x[..., start:start+out.shape[dim], ...] along dim (a copying slice; split is
// several slices).
void sq_slice(sq_tensor *out, const sq_tensor *x, int dim, int64_t start);
// out.shape[i] = x.shape[perm[i]]; out[idx] = x[idx permuted back]. Up to 4 dims.
void sq_permute(sq_tensor *out, const sq_tensor *x, const int *perm);

// ---- embedding ----
// out (N,C) row i = table (V,C) row ids[i]: the token-embedding lookup of T5 / CLIP.
// ids: N host int32 ids (N = out's rows), each in [0, V) (an id outside aborts, so
// callers check user input first); table in out's dtype and on out's device.
void sq_embedding(sq_tensor *out, const sq_tensor *table, const int32_t *ids);

// ---- reductions (accumulated and returned in double, so a loss difference of
// two nearby values keeps its digits; synchronises on CUDA) ----
// mean((a - b)²) over all elements, accumulated in double on the CPU.
double sq_mse(const sq_tensor *a, const sq_tensor *b);
// The per-pixel weighted mean squared error of one sample (a loss mask):
//   sum_c sum_p w[p] (a[c,p] - b[c,p])^2 / (C * sum_p w[p])
// a and b: equal numel, read as (C, P) with P = numel(w) (numel(a) a multiple of P);
// w: P F32 weights >= 0 shared by every channel, on a's device (F32 on CUDA too, so
// the weights and their sum are not rounded to bf16). Accumulated in double in a
// fixed order (deterministic, as sq_mse). NaN when sum w = 0 (callers refuse
// all-zero masks before). Equals sq_mse when every w[p] is the same c > 0.
double sq_weighted_mse(const sq_tensor *a, const sq_tensor *b, const sq_tensor *w);

// ---- threading (CPU backend) ----
void sq_set_num_threads(int n);   // 0 = all cores

#ifdef __cplusplus
}
#endif

#endif
