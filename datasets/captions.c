// datasets/captions.c: tag shuffle and caption dropout (see captions.h).
#include <stdbool.h>
#include <stdint.h>
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

int sd_text_check_utf8(const char *path, const char *text, size_t n) {
    const unsigned char *s = (const unsigned char *)text;
    size_t line_start = 0;
    int line = 1;
    for (size_t i = 0; i < n;) {
        unsigned char b = s[i];
        if (b == '\n') { line++; line_start = ++i; continue; }
        int len = b < 0x80 ? 1 : (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : (b & 0xF8) == 0xF0 ? 4 : 0;
        bool ok = len > 0 && i + (size_t)len <= n;
        uint32_t c = len == 1 ? b : len == 2 ? (b & 0x1Fu) : len == 3 ? (b & 0x0Fu) : (b & 0x07u);
        for (int k = 1; ok && k < len; k++) {
            ok = (s[i + (size_t)k] & 0xC0) == 0x80;
            c = (c << 6) | (s[i + (size_t)k] & 0x3Fu);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (!ok || c < min_cp[len] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return sq_errorf("%s:%d: not valid UTF-8 (byte %zu of the line)", path, line, i - line_start + 1);
        i += (size_t)len;
    }
    return SQ_OK;
}
