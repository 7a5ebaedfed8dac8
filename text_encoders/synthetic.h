// text_encoders/synthetic.h: SD3.5's three text encoders at their real shapes
// (CLIP-L 12 x 768, CLIP-G 32 x 1280, T5-XXL 24 x 4096) with random weights and no
// checkpoint, so a whole training run of the real sizes (memory, time) can be
// measured on a machine that has no SD3.5 download. The embeddings mean nothing;
// the shapes, memory and compute are those of the real encoders.
#ifndef SD_TEXT_SYNTHETIC_H
#define SD_TEXT_SYNTHETIC_H

#include <stdint.h>

#include "text_encoders/conditioning.h"

#ifdef __cplusplus
extern "C" {
#endif

// tokenizers: a folder with tokenizer/, tokenizer_2/, tokenizer_3/ (any vocabulary
// that fits the real embedding tables, e.g. tests/fixtures/pipeline/tiny). Honours
// opt->use_t5, opt->t5_int8 and opt->offload. No files, so sd_text_encoders_hash covers only the
// options: callers keying a cache add the seed themselves.
int sd_text_encoders_init_synthetic(sd_text_encoders *te, const char *tokenizers, sq_device device, sq_dtype dtype,
                                    const sd_text_options *opt, uint64_t seed);

#ifdef __cplusplus
}
#endif

#endif
