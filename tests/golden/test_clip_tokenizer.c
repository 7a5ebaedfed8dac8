// tests/golden/test_clip_tokenizer.c: the CLIP BPE tokenizer against transformers 5's
// (fast) CLIPTokenizer on the fixtures of tools/make_tokenizer_fixtures.py: for every
// prompt (CJK, mixed scripts, accents in both normal forms, emoji, whitespace and
// control characters), the 77 padded ids and the real-token count must match
// exactly, for the CLIP-L folder (pad <|endoftext|>), the CLIP-G one (pad "!", an
// added token) and clip_cjk (merges across the bytes of CJK words).
// Also: a folder without merges.txt and one with a corrupt vocab.json are refused
// with errors naming the file.
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/error.h"
#include "tests/golden/token_fixtures.h"
#include "tests/test_util.h"
#include "text_encoders/clip_tokenizer.h"

#define MAX_LEN 77

static void check_case(const sd_clip_tokenizer *t, const char *name, const cJSON *c) {
    const char *prompt = cJSON_GetObjectItemCaseSensitive(c, "prompt")->valuestring;
    char key[64];
    snprintf(key, sizeof key, "%s_n_real", name);
    int want_n = cJSON_GetObjectItemCaseSensitive(c, key)->valueint;
    int32_t ids[MAX_LEN];
    int n_real = -1;
    if (sd_clip_tokenize(t, prompt, MAX_LEN, ids, &n_real) != SQ_OK) {
        TU_CHECK(0, "%s: tokenize '%.40s': %s", name, prompt, sq_error_message());
        return;
    }
    tk_check_ids(name, prompt, ids, n_real, MAX_LEN, cJSON_GetObjectItemCaseSensitive(c, name), want_n);
}

static void check_bad_inputs(const char *good_dir) {
    char dir[] = "/tmp/sq_clip_tok_XXXXXX";
    SQ_CHECK(mkdtemp(dir), "mkdtemp");
    char src[2048], dst[2048], *vocab;
    snprintf(src, sizeof src, "%s/vocab.json", good_dir);
    SQ_CHECK(sq_read_file(src, &vocab, NULL) == SQ_OK, "%s", sq_error_message());
    snprintf(dst, sizeof dst, "%s/vocab.json", dir);
    tk_write_text(dst, vocab);
    free(vocab);

    sd_clip_tokenizer *t = NULL;
    int rc = sd_clip_tokenizer_load(&t, dir);  // no merges.txt
    printf("  missing merges.txt: %s\n", sq_error_message());
    TU_CHECK(rc == SQ_FAIL && !t && strstr(sq_error_message(), "merges.txt"), "missing merges.txt: %s", sq_error_message());

    char merges[2048];
    snprintf(merges, sizeof merges, "%s/merges.txt", dir);
    tk_write_text(merges, "#version: 0.2\nh e\nhe llo\n");
    tk_write_text(dst, "{\"h\": 0, \"e\": 1, \"he\": ");
    rc = sd_clip_tokenizer_load(&t, dir);
    printf("  corrupt vocab.json: %s\n", sq_error_message());
    TU_CHECK(rc == SQ_FAIL && !t && strstr(sq_error_message(), "vocab.json"), "corrupt vocab.json: %s", sq_error_message());

    tk_write_text(dst, "{\"h\": \"zero\"}");
    rc = sd_clip_tokenizer_load(&t, dir);
    printf("  vocab.json with a string id: %s\n", sq_error_message());
    TU_CHECK(rc == SQ_FAIL && !t && strstr(sq_error_message(), "vocab.json"), "string id: %s", sq_error_message());

    tk_write_text(dst, "{\"h\": 0, \"<|startoftext|>\": 1, \"<|endoftext|>\": 2}");
    tk_write_text(merges, "#version: 0.2\nh e\nthree symbols here\n");
    rc = sd_clip_tokenizer_load(&t, dir);
    printf("  corrupt merges.txt: %s\n", sq_error_message());
    TU_CHECK(rc == SQ_FAIL && !t && strstr(sq_error_message(), "merges.txt"), "corrupt merges.txt: %s", sq_error_message());

    unlink(merges);
    unlink(dst);
    rmdir(dir);
}

int main(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer/expected.json", tu_fixtures_dir());
    cJSON *root = tk_load_expected(path);
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(root, "cases");
    static const char *names[3] = {"clip_l", "clip_g", "clip_cjk"};
    for (int k = 0; k < 3; k++) {
        snprintf(path, sizeof path, "%s/tokenizer/%s", tu_fixtures_dir(), names[k]);
        sd_clip_tokenizer *t;
        if (sd_clip_tokenizer_load(&t, path) != SQ_OK) { TU_CHECK(0, "load: %s", sq_error_message()); continue; }
        printf("%s: bos %d eos %d pad %d, %d prompts\n", names[k], sd_clip_tokenizer_bos(t), sd_clip_tokenizer_eos(t),
               sd_clip_tokenizer_pad(t), cJSON_GetArraySize(cases));
        const cJSON *c;
        cJSON_ArrayForEach(c, cases) check_case(t, names[k], c);
        int32_t one[1];
        TU_CHECK(sd_clip_tokenize(t, "x", 1, one, NULL) == SQ_FAIL, "max_len 1 must be refused");
        sd_clip_tokenizer_free(t);
    }
    snprintf(path, sizeof path, "%s/tokenizer/clip_l", tu_fixtures_dir());
    check_bad_inputs(path);
    cJSON_Delete(root);
    return tu_finish("clip_tokenizer");
}
