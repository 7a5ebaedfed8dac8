// tests/fuzz/fuzz_clip_tokenizer.c: libFuzzer target for the CLIP tokenizer
// (text_encoders/clip_tokenizer.c): the input is vocab.json NUL merges.txt NUL
// tokenizer_config.json NUL prompt. A tokenizer that loads tokenizes the prompt
// into 77 ids (the ids must come from the vocabulary or the special tokens).
#include "core/error.h"
#include "tests/fuzz/fuzz_util.h"
#include "text_encoders/clip_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *p[4];
    size_t n[4];
    fz_split(data, size, 4, p, n);
    fz_mkdir("tok");
    fz_write("tok/vocab.json", p[0], n[0]);
    fz_write("tok/merges.txt", p[1], n[1]);
    if (n[2]) fz_write("tok/tokenizer_config.json", p[2], n[2]);
    else unlink(fz_path("tok/tokenizer_config.json"));
    sd_clip_tokenizer *t = NULL;
    if (sd_clip_tokenizer_load(&t, fz_path("tok")) != SQ_OK) return 0;
    char *prompt = fz_strndup(p[3], n[3]);
    int32_t ids[77];
    int n_real = -1;
    if (sd_clip_tokenize(t, prompt, 77, ids, &n_real) == SQ_OK && (n_real < 2 || n_real > 77)) abort();
    free(prompt);
    sd_clip_tokenizer_free(t);
    return 0;
}
