// text_encoders/conditioning.h: SD3's text conditioning, built exactly as diffusers'
// StableDiffusion3Pipeline.encode_prompt builds it (clip_skip None, one image per
// prompt):
//
//   context (B, 77 + T5len, D) = concat over tokens of
//       [ CLIP-L hidden_states[-2] (B,77,CL) | CLIP-G hidden_states[-2] (B,77,CG) | zeros ]
//           (features concatenated, zero-padded to D)
//       T5 last_hidden_state (B,T5len,D), or zeros when T5 is not used
//   pooled (B, PL + PG) = [ CLIP-L text_embeds | CLIP-G text_embeds ]
//
// SD3.5: CL 768, CG 1280, D 4096, T5len 256 (333 tokens), pooled 2048. D is T5's
// d_model; without T5 the pipeline uses the transformer's joint_attention_dim, read
// from transformer/config.json beside the encoders when there is one (else 4096).
// The unconditional branch is the empty prompt "" through the same path.
#ifndef SD_CONDITIONING_H
#define SD_CONDITIONING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/tensor.h"
#include "text_encoders/clip_encoder.h"
#include "text_encoders/clip_tokenizer.h"
#include "text_encoders/t5_encoder.h"
#include "text_encoders/t5_tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SD_CLIP_TOKENS 77   // SD3's CLIP tokenizers' model_max_length
#define SD_T5_MAX_TOKENS 512 // the most T5 tokens SD3's pipeline takes (diffusers refuses a longer max_sequence_length)

typedef struct {
    int t5_max_length;   // T5 tokens (diffusers' max_sequence_length), default 256
    bool use_t5;         // false: no T5 loaded, its part of the context is zeros; default true
    bool t5_int8;        // T5 linears in int8 (kernels/int8.h); default false
    // the encoders' blocks in host memory, each uploaded into one device staging block
    // right before it runs (text_encoders/offload.h): far less GPU memory, slower
    // encoding, identical numbers. CUDA only; on the CPU it is a no-op. Default false.
    bool offload;
} sd_text_options;

typedef struct {
    sd_clip clip_l, clip_g;
    sd_t5 t5;
    bool has_t5;
    sd_clip_tokenizer *tok_l, *tok_g;
    sd_t5_tokenizer *tok_t5;
    sd_text_options opt;
    sq_device device;
    sq_dtype dtype;
    int context_dim;     // D above
    char **files;        // every encoder and tokenizer file read, in a fixed order (for the hash)
    int n_files;
} sd_text_encoders;

void sd_text_options_defaults(sd_text_options *o);

// model: an SD3/SD3.5 diffusers pipeline folder: text_encoder/ + tokenizer/ (CLIP-L),
// text_encoder_2/ + tokenizer_2/ (CLIP-G), and with opt->use_t5 text_encoder_3/ +
// tokenizer_3/ (T5, possibly sharded). opt NULL = defaults. dtype: F32 on the CPU;
// BF16 (or F32) on CUDA. SQ_FAIL with one line naming the missing or broken file;
// *te is then empty.
int sd_text_encoders_load(sd_text_encoders *te, const char *model, sq_device device, sq_dtype dtype,
                          const sd_text_options *opt);
// The single files people download: clip_l / clip_g (.safetensors, HF keys), t5 (a
// t5xxl_*.safetensors or a T5 folder; NULL = no T5, as use_t5 false), and
// tokenizers: a folder holding tokenizer/, tokenizer_2/ and tokenizer_3/ (an SD3.5
// diffusers repo without its weights is enough).
int sd_text_encoders_load_files(sd_text_encoders *te, const char *clip_l, const char *clip_g, const char *t5,
                                const char *tokenizers, sq_device device, sq_dtype dtype, const sd_text_options *opt);
void sd_text_encoders_free(sd_text_encoders *te);

int sd_text_context_tokens(const sd_text_encoders *te);   // 77 + t5_max_length
int sd_text_context_dim(const sd_text_encoders *te);      // D
int sd_text_pooled_dim(const sd_text_encoders *te);       // PL + PG (2048)

// context (B, tokens, dim) and pooled (B, pooled_dim) on te's device and dtype,
// preallocated. prompts: B UTF-8 strings, the same text for all three encoders.
int sd_encode_prompts(const sd_text_encoders *te, sq_arena *scratch, const char *const *prompts, int B,
                      sq_tensor *context, sq_tensor *pooled);
// Separate prompts per encoder (diffusers' prompt / prompt_2 / prompt_3); a NULL
// array means "the same as prompts_l".
int sd_encode_prompts3(const sd_text_encoders *te, sq_arena *scratch, const char *const *prompts_l,
                       const char *const *prompts_g, const char *const *prompts_t5, int B, sq_tensor *context,
                       sq_tensor *pooled);
size_t sd_text_scratch_bytes(const sd_text_encoders *te, int B);

// SHA-256 (hex) of the content of every encoder and tokenizer file, plus the options
// and dtype that change the numbers: the dataset cache key. Reads every file (T5-XXL
// is ~10 GB, so this takes a while; call it once). SQ_FAIL if a file cannot be read.
int sd_text_encoders_hash(const sd_text_encoders *te, char hex[65]);

#ifdef __cplusplus
}
#endif

#endif
