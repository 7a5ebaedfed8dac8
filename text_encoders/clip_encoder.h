// text_encoders/clip_encoder.h: the CLIP text tower as transformers'
// CLIPTextModelWithProjection runs it: SD3's CLIP-L (12 layers x 768, quick_gelu)
// and CLIP-G (OpenCLIP bigG in the HF layout, 32 layers x 1280, gelu). Written
// once against kernels/ops.h: f32 on the CPU, bf16 (or f32) on CUDA.
//
// Forward: token + position embedding, pre-LN blocks with causal self-attention
// (SD3 passes no padding mask: every one of the 77 positions attends to all earlier
// ones, pads included), final_layer_norm; pooled = the final-normed state at the
// EOS position, projected by text_projection (no bias).
//
// Loads:
// - a folder with config.json + model.safetensors (diffusers' text_encoder/ or
//   text_encoder_2/), or a pipeline folder, where `kind` picks text_encoder/ (L) or
//   text_encoder_2/ (G);
// - a single file (SD3.5's text_encoders/clip_l.safetensors, clip_g.safetensors):
//   keys "text_model.*" + "text_projection.weight", config inferred from shapes:
//   width, vocab, positions, layers, MLP width and projection from the tensors;
//   heads = width / 64 (every CLIP text tower uses 64-wide heads) unless the file's
//   __metadata__ has "num_attention_heads"; hidden_act from `kind` (L: quick_gelu,
//   G: gelu; SD_CLIP_AUTO: width 1280 is G, 768 is L, anything else is refused);
//   layer_norm_eps 1e-5; EOS found by the argmax rule below (as SD3's configs,
//   whose eos_token_id is 2, do).
//
// Offload (sd_clip_load_ex, offload = true, CUDA only): the layers' weights stay in
// host memory and each is uploaded into one device staging layer right before it
// runs (text_encoders/offload.h); embeddings, final norm and projection stay on the
// device. CLIP-G bf16 then keeps ~50 MB of layer weights on the GPU instead of 1.4 GB.
#ifndef SD_CLIP_ENCODER_H
#define SD_CLIP_ENCODER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/tensor.h"
#include "text_encoders/offload.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { SD_CLIP_AUTO = 0, SD_CLIP_L, SD_CLIP_G } sd_clip_kind;

typedef struct {
    int vocab_size, hidden, intermediate, layers, heads, max_positions, projection_dim;
    bool quick_gelu;      // hidden_act "quick_gelu" (CLIP-L) or "gelu" (exact erf, CLIP-G)
    float eps;            // layer_norm_eps
    // transformers' pooling rule: eos_token_id == 2 (the value of configs written
    // before the fix, SD3's included) takes the position of the largest id in each
    // row (first one on ties); any other value the first position holding that id
    // (position 0 when the row has none).
    int32_t eos_token_id;
} sd_clip_config;

typedef struct {
    sq_tensor ln1_w, ln1_b, ln2_w, ln2_b;
    sq_tensor q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b;   // (C,C), (C)
    sq_tensor fc1_w, fc1_b, fc2_w, fc2_b;               // (I,C), (I), (C,I), (C)
} sd_clip_layer;

typedef struct {
    sd_clip_config cfg;
    sq_device device;
    sq_dtype dtype;
    sq_tensor tok_emb, pos_emb;     // (V,C), (P,C)
    sd_clip_layer *layers;          // cfg.layers; with offload, views into offload's host store
    sq_tensor final_w, final_b;     // final_layer_norm
    sq_tensor proj;                 // text_projection.weight (proj, C)
    sd_offload offload;             // offload.host NULL: every layer lives on the device
} sd_clip;

// The tensors of a layer in a fixed order (the offload store's layout, and freeing).
#define SD_CLIP_LAYER_TENSORS 16
int sd_clip_layer_tensors(sd_clip_layer *l, sq_tensor *out[SD_CLIP_LAYER_TENSORS]);

// SQ_FAIL with one line naming the file and the problem (missing/corrupt config or
// weights, missing tensor, wrong shape, unknown hidden_act). dtype: SQ_F32 on the
// CPU; SQ_BF16 or SQ_F32 on CUDA. On failure *m is left empty.
int sd_clip_load(sd_clip *m, const char *path, sd_clip_kind kind, sq_device device, sq_dtype dtype);
// The same, with the layers offloaded to host memory when offload is set and device
// is CUDA (see above); on the CPU offload is ignored (the weights are host memory).
int sd_clip_load_ex(sd_clip *m, const char *path, sd_clip_kind kind, sq_device device, sq_dtype dtype, bool offload);
void sd_clip_free(sd_clip *m);

// What one forward writes; any pointer may be NULL. All on the model's device and
// dtype, preallocated: penultimate and last (B,T,C), pooled (B,projection_dim).
typedef struct {
    sq_tensor *penultimate;   // hidden_states[-2]: the second-to-last block's output, not final-normed
    sq_tensor *last;          // last_hidden_state: final_layer_norm of the last block's output
    sq_tensor *pooled;        // text_embeds: text_projection(last[EOS position])
} sd_clip_outputs;

// ids: B*T host int32 token ids (T <= max_positions, each in [0, vocab_size); a bad
// id is an error, not an abort). Scratch comes from `scratch` and is rewound.
int sd_clip_encode(const sd_clip *m, sq_arena *scratch, const int32_t *ids, int B, int T, const sd_clip_outputs *out);
// Scratch bytes sd_clip_encode needs at this size (in the model's dtype).
size_t sd_clip_scratch_bytes(const sd_clip *m, int B, int T);
// The EOS position of one row of T ids under cfg's rule (see eos_token_id).
int sd_clip_eos_position(const sd_clip_config *c, const int32_t *ids, int T);

#ifdef __cplusplus
}
#endif

#endif
