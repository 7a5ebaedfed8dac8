// mmdit/model.h: the SD3.5 MMDiT as a plain struct of weight tensors, its loader
// (diffusers folders and Stability single files, mapped to one layout) and its
// forward pass. Written once against kernels/ops.h: the same code runs on the CPU
// (f32 weights) and on CUDA (bf16 weights).
//
// Shapes: B batch, C latent channels, H x W latent size, h = H/p, w = W/p, N = h·w
// image tokens, T context tokens, D hidden size, NH heads, HS head size.
#ifndef SD_MMDIT_MODEL_H
#define SD_MMDIT_MODEL_H

#include "core/arena.h"
#include "core/tensor.h"
#include "kernels/linear.h"
#include "kernels/weight_prefetch.h"
#include "mmdit/config.h"

typedef struct sd_forward_graphs sd_forward_graphs;

typedef struct {
    bool context_pre_only;   // last block: the context stream ends here
    bool dual;               // MMDiT-X: a second, image-only self-attention
    sq_linear norm1;         // adaLN: silu(temb) -> 6 (or 9 with dual) x D modulation
    sq_linear norm1_context; // 6 x D, or 2 x D (scale, shift) when context_pre_only
    sq_linear to_q, to_k, to_v, to_out;          // image stream
    sq_linear add_q, add_k, add_v, to_add_out;   // context stream (no to_add_out when pre-only)
    sq_tensor norm_q, norm_k, norm_added_q, norm_added_k;   // (HS) QK RMSNorm weights, if qk_norm
    sq_linear attn2_q, attn2_k, attn2_v, attn2_out;         // dual attention
    sq_tensor attn2_norm_q, attn2_norm_k;
    sq_linear ff1, ff2;              // image MLP D -> 4D -> D, GELU(tanh)
    sq_linear ff_context1, ff_context2;
} sd_mmdit_block;

typedef struct {
    sd_mmdit_config cfg;
    char source_sha256[65];  // of the original weights, when loaded from a quantised file
    sq_device device;
    sq_dtype dtype;          // weights and activations: F32 on CPU, BF16 on CUDA
    sq_tensor patch_w, patch_b;        // conv (D, C, p, p)
    sq_tensor pos_embed;               // (max*max, D) sin-cos table, cropped per input
    sq_linear t_linear1, t_linear2;    // timestep MLP 256 -> D -> D
    sq_linear y_linear1, y_linear2;    // pooled text MLP pooled -> D -> D
    sq_linear context_embedder;        // joint_attention_dim -> D
    sd_mmdit_block *blocks;
    sq_linear norm_out;                // AdaLayerNormContinuous: (scale, shift) 2D
    sq_linear proj_out;                // D -> p*p*C
    sq_linear_order *linear_order;     // learned by the forward for dequantising ahead (kernels/weight_prefetch.h)
    sd_forward_graphs *graphs;         // the forward's recorded CUDA graphs (mmdit/forward_graph.h)
} sd_mmdit;

// path: a diffusers pipeline folder (uses transformer/), a transformer folder with
// config.json, or a single-file checkpoint (model.diffusion_model.* keys). Weights
// are converted to `dtype` on `device` as they load. Errors name the file and key.
int sd_mmdit_load(sd_mmdit *m, const char *path, sq_device device, sq_dtype dtype);
// Only the config of what sd_mmdit_load(path) would load (no weights read): for
// checking settings against the model before any work.
int sd_mmdit_config_read(sd_mmdit_config *c, const char *path);
// The file that config comes from, for messages: the folder's transformer/config.json
// (or config.json), else path itself (a file carries or implies its config).
void sd_mmdit_config_origin(const char *path, char *out, size_t size);
void sd_mmdit_free(sd_mmdit *m);
// A model of the given shape with random weights, no checkpoint needed (benchmarks
// of the real SD3.5 shapes). group > 0: joint-block linears are int4 with random
// codes and scales at that group size, as a quantised model would be.
int sd_mmdit_init_synthetic(sd_mmdit *m, const sd_mmdit_config *cfg, sq_device device, sq_dtype dtype, int group,
                            uint64_t seed);

// Scratch bytes one forward of B latents with N image tokens and T context tokens
// needs, for activations of `elem_bytes` (2 bf16, 4 f32): a dozen live (B, N+T, D)
// activations at the widest point of a joint block (the MLP's 4D hidden state
// counts four times; with B > 1 the joint attention also holds per-stream q/k/v
// copies, 11 in all), the int4 weights dequantised for a GEMM (at most the MLP's
// 4D x D at a time, which also holds a stream's q, k and v side by side for their one
// GEMM; with more than SQ_QGEMV_MAX_ROWS samples the adaLN's up to 9D x D, which the
// int4 GEMV takes for fewer), and a 64 MiB margin.
// H100, B = 1: SD3.5 Large 1024² high-water 0.314 GiB against 0.34 estimated. With
// B > 1 sixteen activations are counted: on an H200, Large 1024² at batch 4 needed
// 1.25 GiB where twelve gave 1.07 (the run stopped with the arena exhausted).
// Sizing an arena from it keeps a run from dying mid-forward.
size_t sd_mmdit_scratch_estimate(const sd_mmdit_config *c, int B, int N, int T, int elem_bytes);
// Optional copies of intermediate activations (host f32, malloc'ed by the forward,
// freed by sd_mmdit_trace_free) for golden tests and debugging.
typedef struct {
    float *x_embedded;       // (B,N,D) after patch + position embedding
    float *temb;             // (B,D)
    float *context_embedded; // (B,T,D)
    float *block0_hidden;    // (B,N,D)
    float *block0_context;   // (B,T,D), NULL if block 0 is the last
    float *final_hidden;     // (B,N,D) entering norm_out
} sd_mmdit_trace;
void sd_mmdit_trace_free(sd_mmdit_trace *t);

// out (B,C,H,W) = MMDiT(latent (B,C,H,W), timestep (B) host floats (σ·1000),
// context (B,T,joint_dim), pooled (B,pooled_dim)), all on the model's device and
// dtype. p perturbs every quantised layer's scales (NULL: none). Scratch comes from
// `scratch` and is rewound before returning. SQ_FAIL (message set) when the input
// does not fit the model or the arena is too small. On CUDA, passes of a kind seen
// before are replayed as a CUDA graph (mmdit/forward_graph.h): same bits, and the
// same scratch (the arena's mark is part of the kind).
int sd_mmdit_forward(const sd_mmdit *m, sq_arena *scratch, const sq_tensor *latent, const float *timestep,
                     const sq_tensor *context, const sq_tensor *pooled, const sq_perturb *p, sq_tensor *out,
                     sd_mmdit_trace *trace);

#endif
