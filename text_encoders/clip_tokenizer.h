// text_encoders/clip_tokenizer.h: CLIP's byte-level BPE tokenizer (SD3.5's
// tokenizer/ for CLIP-L and tokenizer_2/ for CLIP-G), matching transformers'
// fast CLIPTokenizer (tokenizers), as diffusers uses it. See clip_tokenizer.c.
#ifndef SD_CLIP_TOKENIZER_H
#define SD_CLIP_TOKENIZER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sd_clip_tokenizer sd_clip_tokenizer;

// Loads vocab.json + merges.txt from dir, and the special tokens (bos/eos/unk/pad,
// added tokens) from tokenizer_config.json / special_tokens_map.json when present.
// Returns SQ_OK or SQ_FAIL with a message naming the file.
int sd_clip_tokenizer_load(sd_clip_tokenizer **out, const char *dir);

// Tokenizes text into exactly max_len ids (max_len >= 2): bos, the first
// max_len-2 tokens, eos, then the pad id. *n_real (may be NULL) receives the
// number of ids before padding (bos and eos included): the attention mask length.
int sd_clip_tokenize(const sd_clip_tokenizer *t, const char *text, int max_len, int32_t *ids, int *n_real);

int32_t sd_clip_tokenizer_bos(const sd_clip_tokenizer *t);
int32_t sd_clip_tokenizer_eos(const sd_clip_tokenizer *t);
int32_t sd_clip_tokenizer_pad(const sd_clip_tokenizer *t);

void sd_clip_tokenizer_free(sd_clip_tokenizer *t);

#ifdef __cplusplus
}
#endif

#endif
