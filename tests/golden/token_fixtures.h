// tests/golden/token_fixtures.h: what the tokenizer golden tests share: loading the
// expected-ids JSON made by tools/make_*tokenizer_fixtures.py, comparing one prompt's
// padded ids and real-token count against it, and writing small bad-input files.
#ifndef SQ_TEST_TOKEN_FIXTURES_H
#define SQ_TEST_TOKEN_FIXTURES_H

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/config.h"
#include "core/error.h"
#include "tests/test_util.h"

// Parses the fixture file at path (aborts with the path on a missing or bad file).
static inline cJSON *tk_load_expected(const char *path) {
    char *text;
    SQ_CHECK(sq_read_file(path, &text, NULL) == SQ_OK, "%s", sq_error_message());
    cJSON *root = cJSON_Parse(text);
    free(text);
    SQ_CHECK(root, "%s: bad JSON", path);
    return root;
}

// ids (len) and n_real from the C tokenizer against want (a JSON array of len ids)
// and want_n; label names the tokenizer / length in failure messages.
static inline void tk_check_ids(const char *label, const char *prompt, const int32_t *ids, int n_real, int len,
                                const cJSON *want, int want_n) {
    TU_CHECK(cJSON_GetArraySize(want) == len, "%s: fixture length", label);
    int first_bad = -1;
    for (int i = 0; i < len && first_bad < 0; i++)
        if (ids[i] != cJSON_GetArrayItem(want, i)->valueint) first_bad = i;
    TU_CHECK(first_bad < 0, "%s: '%.40s': id %d is %d, want %d", label, prompt, first_bad,
             first_bad < 0 ? 0 : ids[first_bad], first_bad < 0 ? 0 : cJSON_GetArrayItem(want, first_bad)->valueint);
    TU_CHECK(n_real == want_n, "%s: '%.40s': %d real tokens, want %d", label, prompt, n_real, want_n);
}

static inline void tk_write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    SQ_CHECK(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

#endif
