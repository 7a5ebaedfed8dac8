// tests/golden/test_t5_tokenizer.c: the T5 SentencePiece tokenizer against
// transformers' slow T5Tokenizer on the fixtures of tools/make_t5_tokenizer_fixtures.py:
// for every prompt and max_length 32 and 256, the padded ids and the real-token
// count must match exactly (the folder path and the .model path both load).
// Also: a folder without spiece.model and a garbage spiece.model are refused
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
#include "text_encoders/t5_tokenizer.h"

#define MAX_MAX_LEN 512

static void check_case(const sd_t5_tokenizer *t, int max_len, const cJSON *c) {
    const char *prompt = cJSON_GetObjectItemCaseSensitive(c, "prompt")->valuestring;
    char key[64], label[32];
    snprintf(key, sizeof key, "ids_%d", max_len);
    const cJSON *want = cJSON_GetObjectItemCaseSensitive(c, key);
    snprintf(key, sizeof key, "n_real_%d", max_len);
    int want_n = cJSON_GetObjectItemCaseSensitive(c, key)->valueint;
    int32_t ids[MAX_MAX_LEN];
    int n_real = -1;
    snprintf(label, sizeof label, "%d", max_len);
    if (sd_t5_tokenize(t, prompt, max_len, ids, &n_real) != SQ_OK) {
        TU_CHECK(0, "%s: tokenize '%.40s': %s", label, prompt, sq_error_message());
        return;
    }
    tk_check_ids(label, prompt, ids, n_real, max_len, want, want_n);
}

static void check_bad_inputs(void) {
    char dir[] = "/tmp/sq_t5_tok_XXXXXX";
    SQ_CHECK(mkdtemp(dir), "mkdtemp");
    sd_t5_tokenizer *t = NULL;
    int rc = sd_t5_tokenizer_load(&t, dir);  // empty folder
    printf("  missing spiece.model: %s\n", sq_error_message());
    TU_CHECK(rc == SQ_FAIL && !t && strstr(sq_error_message(), "spiece.model") && !strchr(sq_error_message(), '\n'),
             "missing spiece.model: %s", sq_error_message());

    char model[2048];
    snprintf(model, sizeof model, "%s/spiece.model", dir);
    tk_write_text(model, "this is not a protobuf, just some garbage text\n\x01\x02\xff\xfe");
    rc = sd_t5_tokenizer_load(&t, dir);
    printf("  garbage spiece.model: %s\n", sq_error_message());
    TU_CHECK(rc == SQ_FAIL && !t && strstr(sq_error_message(), "spiece.model") && !strchr(sq_error_message(), '\n'),
             "garbage spiece.model: %s", sq_error_message());
    rc = sd_t5_tokenizer_load(&t, model);
    TU_CHECK(rc == SQ_FAIL && !t && strstr(sq_error_message(), model), "garbage model by file: %s", sq_error_message());

    tk_write_text(model, "");
    rc = sd_t5_tokenizer_load(&t, dir);
    printf("  empty spiece.model: %s\n", sq_error_message());
    TU_CHECK(rc == SQ_FAIL && !t && strstr(sq_error_message(), "spiece.model"), "empty spiece.model: %s", sq_error_message());

    unlink(model);
    rmdir(dir);
}

int main(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer/t5_expected.json", tu_fixtures_dir());
    cJSON *root = tk_load_expected(path);
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(root, "cases");
    const cJSON *max_lens = cJSON_GetObjectItemCaseSensitive(root, "max_lens");
    for (int k = 0; k < 2; k++) {  // the folder, then the .model file itself
        snprintf(path, sizeof path, "%s/tokenizer/t5%s", tu_fixtures_dir(), k ? "/spiece.model" : "");
        sd_t5_tokenizer *t;
        if (sd_t5_tokenizer_load(&t, path) != SQ_OK) { TU_CHECK(0, "load: %s", sq_error_message()); continue; }
        printf("%s: %d prompts\n", path, cJSON_GetArraySize(cases));
        const cJSON *m, *c;
        cJSON_ArrayForEach(m, max_lens) {
            SQ_CHECK(m->valueint <= MAX_MAX_LEN, "fixture max_len %d", m->valueint);
            cJSON_ArrayForEach(c, cases) check_case(t, m->valueint, c);
        }
        int32_t one[1];
        int n = -1;
        TU_CHECK(sd_t5_tokenize(t, "a photo", 1, one, &n) == SQ_OK && one[0] == 1 && n == 1, "max_len 1: only </s>");
        TU_CHECK(sd_t5_tokenize(t, "x", 0, one, NULL) == SQ_FAIL, "max_len 0 must be refused");
        sd_t5_tokenizer_free(t);
    }
    check_bad_inputs();
    cJSON_Delete(root);
    return tu_finish("t5_tokenizer");
}
