// text_encoders/t5_encoder.h: the T5 v1.1 encoder SD3.5 uses as text_encoder_3
// (transformers' T5EncoderModel; T5-XXL: d_model 4096, 24 layers, 64 heads of 64,
// d_ff 10240, gated-gelu FFN), written against kernels/ops.h: one code path, fp32 on
// the CPU and bf16 (or f32) on CUDA.
//
// T5's particulars, all kept here: RMS norm without mean or bias (statistics in
// fp32); no 1/sqrt(d_kv) attention scaling; a relative position bias (bidirectional
// log buckets) that only the first layer owns and every layer adds to its scores;
// a final RMS norm. SD3 runs it without an attention mask (diffusers'
// _get_t5_prompt_embeds passes input_ids only), so padding tokens are attended.
//
// Weights: dense in the model dtype, or (int8 = true) every linear of the blocks as
// int8 with one fp32 scale per output channel (kernels/int8.h), dequantised layer by
// layer into scratch before its GEMM: T5-XXL's 4.76 B parameters take 4.9 GB instead
// of 9.5 GB. The token embedding and the norms stay in the model dtype.
//
// Offload (sd_t5_load_ex, offload = true, CUDA only): the blocks' weights stay in
// host memory and each is uploaded into one device staging block right before it
// runs (text_encoders/offload.h); the embedding, relative bias and final norm stay
// on the device. T5-XXL int8 then needs ~0.2 GB of weights on the GPU instead of
// 4.9 GB, and the output is bit-for-bit the same (same kernels, same weights).
#ifndef SD_T5_ENCODER_H
#define SD_T5_ENCODER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/tensor.h"
#include "text_encoders/offload.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int d_model, d_kv, d_ff, num_layers, num_heads, num_buckets, max_distance;
    float eps;        // layer_norm_epsilon
    bool gated;       // feed_forward_proj "gated-*": gelu(wi_0 x) * (wi_1 x)
    bool tanh_gelu;   // gelu_new (tanh form, T5 v1.1); false: exact erf gelu
    int vocab;
} sd_t5_config;

// A bias-free linear layer (nn.Linear(bias=False)): dense w, or int8 codes + scales.
typedef struct {
    sq_tensor w;        // (Nout, K) model dtype; empty when int8
    sq_tensor codes;    // I8 (Nout, K) when int8
    sq_tensor scales;   // F32 (Nout) when int8
} sd_t5_linear;

typedef struct {
    sq_tensor attn_norm;           // layer.0.layer_norm (d_model)
    sd_t5_linear q, k, v, o;       // SelfAttention; q/k/v (NH*d_kv, d_model), o (d_model, NH*d_kv)
    sq_tensor ff_norm;             // layer.1.layer_norm (d_model)
    sd_t5_linear wi0, wi1, wo;     // DenseReluDense: wi_0 / wi_1 (d_ff, d_model) [wi when not gated: wi0, wi1 empty]
} sd_t5_block;

typedef struct {
    sq_tensor embed;        // shared.weight (vocab, d_model), model dtype
    float *rel_bias;        // host (num_buckets, num_heads) f32: block 0's relative_attention_bias
    sd_t5_block *blocks;    // num_layers; with offload, views into offload's host store
    sq_tensor final_norm;   // encoder.final_layer_norm (d_model)
    sd_t5_config cfg;
    sq_device device;
    sq_dtype dtype;         // F32 on the CPU; BF16 or F32 on CUDA
    bool int8;
    sd_offload offload;     // offload.host NULL: every block lives on the device
} sd_t5;

// The tensors of a block in a fixed order (the offload store's layout, and freeing).
#define SD_T5_BLOCK_TENSORS 23
int sd_t5_block_tensors(sd_t5_block *b, sq_tensor *out[SD_T5_BLOCK_TENSORS]);

// path: a diffusers pipeline folder (uses text_encoder_3/), a T5 folder with
// config.json (possibly sharded, model.safetensors.index.json), or a single file such
// as t5xxl_fp16.safetensors (HF key layout "encoder.block.N...", "shared.weight",
// optionally under a prefix such as "text_encoders.t5xxl.transformer."; the config is
// inferred from tensor shapes, with T5 v1.1's eps 1e-6 and max_distance 128).
// Weights may be F32, BF16 or F16. fp8 files (t5xxl_fp8_e4m3fn) are refused by the
// safetensors reader ("unsupported dtype 'F8_E4M3'"): F8 is not an sq dtype yet.
// int8: see above. SQ_FAIL with a one-line message naming the file on bad input.
int sd_t5_load(sd_t5 *m, const char *path, sq_device device, sq_dtype dtype, bool int8);
// The same, with the blocks offloaded to host memory when offload is set and device
// is CUDA (see above). On the CPU the weights are host memory already: offload is
// ignored there and the model is exactly sd_t5_load's.
int sd_t5_load_ex(sd_t5 *m, const char *path, sq_device device, sq_dtype dtype, bool int8, bool offload);
void sd_t5_free(sd_t5 *m);

// ids: B*T host int32 token ids (already padded by the tokenizer), each < vocab.
// out: (B,T,d_model) on the model's device and dtype (F32 on CPU, BF16 on CUDA),
// preallocated by the caller. Scratch from `scratch` (sd_t5_scratch_bytes), rewound
// before returning. No attention mask (SD3 uses none). SQ_FAIL on an id outside the
// vocabulary, a wrongly shaped out, or exhausted scratch.
int sd_t5_encode(const sd_t5 *m, sq_arena *scratch, const int32_t *ids, int B, int T, sq_tensor *out);

// Scratch bytes sd_t5_encode needs for B x T: an upper bound for every device,
// dtype and int8 setting (it counts 4-byte elements and the int8 dequant buffer).
size_t sd_t5_scratch_bytes(const sd_t5_config *c, int B, int T);

// T5's relative-position bucket (bidirectional, as the encoder uses) of
// relative_position = key position - query position; exposed for tests.
int sd_t5_relative_bucket(int relative_position, int num_buckets, int max_distance);

#ifdef __cplusplus
}
#endif

#endif
