// text_encoders/t5_tokenizer.h: SD3.5's T5 tokenizer (text_encoder_3's tokenizer_3),
// a SentencePiece unigram model read from spiece.model through libsentencepiece.
// Ids match transformers' T5Tokenizer with padding="max_length", truncation=True,
// add_special_tokens=True: the pieces, then </s> (id 1) last, then <pad> (id 0).
#ifndef SD_T5_TOKENIZER_H
#define SD_T5_TOKENIZER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sd_t5_tokenizer sd_t5_tokenizer;

// path: a folder holding spiece.model, or the .model file itself. SQ_OK or SQ_FAIL
// (a one-line message naming the file; *out is then NULL).
int sd_t5_tokenizer_load(sd_t5_tokenizer **out, const char *path);
// Writes exactly max_len (>= 1) ids: the pieces of text (truncated to max_len-1),
// eos, then pad. *n_real (may be NULL) gets the count before padding, eos included.
int sd_t5_tokenize(const sd_t5_tokenizer *t, const char *text, int max_len, int32_t *ids, int *n_real);
void sd_t5_tokenizer_free(sd_t5_tokenizer *t);

#ifdef __cplusplus
}
#endif

#endif
