// datasets/captions.c: tag shuffle and caption dropout (see captions.h).
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "datasets/captions.h"
#include "datasets/rng.h"

static char *dup_str(const char *s) {
    size_t n = strlen(s);
    char *d = sq_malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Splits a copy of s at commas into trimmed, non-empty tags (pointers into *buf).
static int split_tags(const char *s, char **buf, char ***tags, int *n) {
    *buf = dup_str(s);
    size_t cap = 1;
    for (const char *p = s; *p; p++) cap += *p == ',';
    *tags = sq_calloc(cap, sizeof(char *));
    if (!*buf || !*tags) {
        free(*buf), free(*tags);
        return SQ_FAIL;
    }
    *n = 0;
    char *p = *buf;
    for (;;) {
        char *end = strchr(p, ',');
        if (end) *end = '\0';
        while (is_space(*p)) p++;
        char *e = p + strlen(p);
        while (e > p && is_space(e[-1])) *--e = '\0';
        if (*p) (*tags)[(*n)++] = p;
        if (!end) break;
        p = end + 1;
    }
    return SQ_OK;
}

char *sd_caption_augment(const char *caption, const sd_caption_opts *o, uint64_t seed, int epoch, int index) {
    if (o->dropout > 0.0f && sd_rng_uniform(seed, SD_RNG_CAPTION_DROP, epoch, index, 0) < o->dropout)
        return dup_str("");
    if (!o->shuffle_tags) return dup_str(caption);
    char *buf, **tags;
    int n;
    if (split_tags(caption, &buf, &tags, &n)) return NULL;
    int keep = o->keep_tags < 0 ? 0 : o->keep_tags;
    // Fisher-Yates over tags[keep..n).
    for (int i = n - 1; i > keep; i--) {
        int j = keep + (int)sd_rng_below(seed, SD_RNG_TAG_SHUFFLE, epoch, index, (uint32_t)i, (uint32_t)(i - keep + 1));
        char *t = tags[i];
        tags[i] = tags[j];
        tags[j] = t;
    }
    size_t len = 1;
    for (int i = 0; i < n; i++) len += strlen(tags[i]) + 2;
    char *out = sq_malloc(len);
    if (out) {
        char *w = out;
        for (int i = 0; i < n; i++) {
            if (i) *w++ = ',', *w++ = ' ';
            size_t l = strlen(tags[i]);
            memcpy(w, tags[i], l);
            w += l;
        }
        *w = '\0';
    }
    free(buf);
    free(tags);
    return out;
}
