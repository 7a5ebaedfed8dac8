// tests/tensorboard_reader.h: reads a TensorBoard event file back for the tests
// (tests/unit/test_tensorboard.c, tests/e2e/test_train_tensorboard.c): splits the
// TFRecords, checks both masked CRC32Cs of each, and decodes the Event fields the
// training run writes with a protobuf decoder of its own (wire types 0, 1, 2, 5;
// unknown fields skipped), so it shares no encoding code with core/tensorboard.c.
#ifndef SQ_TESTS_TENSORBOARD_READER_H
#define SQ_TESTS_TENSORBOARD_READER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/tensorboard.h"

typedef struct {
    double wall_time;
    int64_t step;
    char file_version[32];
    char writer[128];
    bool has_summary;
    char tag[128];             // the first (only) summary value's
    bool has_simple;
    float simple_value;
    bool has_image;
    int width, height, colorspace;
    size_t png_len;
    const uint8_t *png;        // into the file's buffer
    int session_status;        // 0: no session_log
} tbr_event;

typedef struct {
    uint8_t *buf;
    size_t len;
    tbr_event *ev;
    int count;
    bool bad;                  // a CRC mismatch, a torn record or a malformed message
    char why[128];
} tbr_file;

typedef struct {
    const uint8_t *p, *end;
    bool bad;
} tbr_cur;

static inline uint64_t tbr_varint(tbr_cur *c) {
    uint64_t v = 0;
    for (int s = 0; s < 70; s += 7) {
        if (c->p >= c->end) { c->bad = true; return 0; }
        uint8_t b = *c->p++;
        v |= (uint64_t)(b & 0x7F) << s;
        if (!(b & 0x80)) return v;
    }
    c->bad = true;
    return 0;
}

static inline uint64_t tbr_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

// The next field of a message: its number and wire type; for wire type 2 *sub is
// the payload, else *num holds the value (fixed32/fixed64 raw bits). false at the end.
static inline bool tbr_field(tbr_cur *c, int *field, int *wire, uint64_t *num, tbr_cur *sub) {
    *num = 0;
    *sub = (tbr_cur){c->p, c->p, false};
    if (c->bad || c->p >= c->end) return false;
    uint64_t k = tbr_varint(c);
    *field = (int)(k >> 3);
    *wire = (int)(k & 7);
    if (*wire == 0) *num = tbr_varint(c);
    else if (*wire == 1 || *wire == 5) {
        int n = *wire == 1 ? 8 : 4;
        if (c->end - c->p < n) { c->bad = true; return false; }
        *num = tbr_le(c->p, n);
        c->p += n;
    } else if (*wire == 2) {
        uint64_t n = tbr_varint(c);
        if (c->bad || (uint64_t)(c->end - c->p) < n) { c->bad = true; return false; }
        sub->p = c->p;
        sub->end = c->p + n;
        sub->bad = false;
        c->p += n;
    } else {
        c->bad = true;
        return false;
    }
    return !c->bad;
}

static inline void tbr_str(const tbr_cur *s, char *dst, size_t size) {
    size_t n = (size_t)(s->end - s->p);
    if (n >= size) n = size - 1;
    memcpy(dst, s->p, n);
    dst[n] = 0;
}

static inline bool tbr_value(tbr_cur v, tbr_event *e) {
    int f, w;
    uint64_t num;
    tbr_cur sub;
    while (tbr_field(&v, &f, &w, &num, &sub)) {
        if (f == 1 && w == 2) tbr_str(&sub, e->tag, sizeof e->tag);
        else if (f == 2 && w == 5) {
            uint32_t bits = (uint32_t)num;
            memcpy(&e->simple_value, &bits, 4);
            e->has_simple = true;
        } else if (f == 4 && w == 2) {
            e->has_image = true;
            tbr_cur im = sub, pl;
            while (tbr_field(&im, &f, &w, &num, &pl)) {
                if (f == 1 && w == 0) e->height = (int)num;
                else if (f == 2 && w == 0) e->width = (int)num;
                else if (f == 3 && w == 0) e->colorspace = (int)num;
                else if (f == 4 && w == 2) { e->png = pl.p; e->png_len = (size_t)(pl.end - pl.p); }
            }
            if (im.bad) return false;
        }
    }
    return !v.bad;
}

static inline bool tbr_event_parse(tbr_cur c, tbr_event *e) {
    memset(e, 0, sizeof *e);
    int f, w;
    uint64_t num;
    tbr_cur sub;
    while (tbr_field(&c, &f, &w, &num, &sub)) {
        if (f == 1 && w == 1) memcpy(&e->wall_time, &num, 8);
        else if (f == 2 && w == 0) e->step = (int64_t)num;
        else if (f == 3 && w == 2) tbr_str(&sub, e->file_version, sizeof e->file_version);
        else if (f == 5 && w == 2) {
            e->has_summary = true;
            tbr_cur vv;
            int f2, w2;
            uint64_t n2;
            while (tbr_field(&sub, &f2, &w2, &n2, &vv))
                if (f2 == 1 && w2 == 2 && !tbr_value(vv, e)) return false;
            if (sub.bad) return false;
        } else if (f == 7 && w == 2) {
            tbr_cur x;
            int f2, w2;
            uint64_t n2;
            e->session_status = -1;
            while (tbr_field(&sub, &f2, &w2, &n2, &x))
                if (f2 == 1 && w2 == 0) e->session_status = (int)n2;
        } else if (f == 10 && w == 2) {
            tbr_cur x;
            int f2, w2;
            uint64_t n2;
            while (tbr_field(&sub, &f2, &w2, &n2, &x))
                if (f2 == 1 && w2 == 2) tbr_str(&x, e->writer, sizeof e->writer);
        }
    }
    return !c.bad;
}

static inline void tbr_free(tbr_file *t) {
    free(t->buf);
    free(t->ev);
    memset(t, 0, sizeof *t);
}

// Reads path whole and parses every record; false when it cannot be read.
static inline bool tbr_read(const char *path, tbr_file *t) {
    memset(t, 0, sizeof *t);
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    t->buf = malloc((size_t)n + 1);
    if (!t->buf || fread(t->buf, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        tbr_free(t);
        return false;
    }
    fclose(f);
    t->len = (size_t)n;
    size_t off = 0;
    while (off < t->len) {
        if (t->len - off < 12) { t->bad = true; snprintf(t->why, sizeof t->why, "torn header at %zu", off); break; }
        const uint8_t *h = t->buf + off;
        uint64_t len = tbr_le(h, 8);
        if ((uint32_t)tbr_le(h + 8, 4) != sq_crc32c_mask(sq_crc32c(0, h, 8))) {
            t->bad = true;
            snprintf(t->why, sizeof t->why, "length CRC of the record at %zu", off);
            break;
        }
        if (t->len - off - 12 < len + 4) { t->bad = true; snprintf(t->why, sizeof t->why, "torn record at %zu", off); break; }
        const uint8_t *d = h + 12;
        if ((uint32_t)tbr_le(d + len, 4) != sq_crc32c_mask(sq_crc32c(0, d, (size_t)len))) {
            t->bad = true;
            snprintf(t->why, sizeof t->why, "data CRC of the record at %zu", off);
            break;
        }
        tbr_event *ne = realloc(t->ev, (size_t)(t->count + 1) * sizeof *ne);
        if (!ne) { t->bad = true; break; }
        t->ev = ne;
        tbr_cur c = {d, d + len, false};
        if (!tbr_event_parse(c, &t->ev[t->count])) {
            t->bad = true;
            snprintf(t->why, sizeof t->why, "malformed Event in the record at %zu", off);
            break;
        }
        t->count++;
        off += 12 + (size_t)len + 4;
    }
    return true;
}

#endif
