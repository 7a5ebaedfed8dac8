// core/gguf_write.c: the streaming, atomic GGUF writer (core/gguf.h). The header
// (key/values and tensor infos, whose offsets follow from the declared sizes) is
// written first, then each tensor's bytes, each padded to the alignment, through
// core/atomic_file.h: commit replaces <path> only when everything was written, and
// any failure leaves an existing destination untouched.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/gguf.h"

struct sq_gguf_writer {
    sq_atomic_file file;
    int n;
    size_t *sizes;      // bytes each tensor must receive
    int cur;
    size_t cur_written;
    uint64_t pos;       // bytes written so far (for the padding)
};

// A growing byte buffer for the header.
typedef struct {
    uint8_t *p;
    size_t n, cap;
    bool failed;
} buf;

static void put(buf *b, const void *d, size_t n) {
    if (b->failed) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->n + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) { b->failed = true; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void put_u32(buf *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(b, x, 4);
}

static void put_u64(buf *b, uint64_t v) {
    uint8_t x[8];
    for (int i = 0; i < 8; i++) x[i] = (uint8_t)(v >> (8 * i));
    put(b, x, 8);
}

static void put_str(buf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

static int put_kv(buf *b, const sq_gguf_kv *kv, const char *path) {
    put_str(b, kv->key);
    put_u32(b, kv->type);
    switch (kv->type) {
    case SQ_GGUF_STRING: put_str(b, kv->str ? kv->str : ""); return SQ_OK;
    case SQ_GGUF_U8: case SQ_GGUF_I8: case SQ_GGUF_BOOL: { uint8_t v = (uint8_t)kv->i; put(b, &v, 1); return SQ_OK; }
    case SQ_GGUF_U32: case SQ_GGUF_I32: put_u32(b, (uint32_t)kv->i); return SQ_OK;
    case SQ_GGUF_U64: case SQ_GGUF_I64: put_u64(b, (uint64_t)kv->i); return SQ_OK;
    default: return sq_errorf("%s: key '%s': value type %u is not written by sd-qzo", path, kv->key, kv->type);
    }
}

static size_t padded(uint64_t n) {
    return (size_t)((n + SQ_GGUF_DEFAULT_ALIGNMENT - 1) / SQ_GGUF_DEFAULT_ALIGNMENT * SQ_GGUF_DEFAULT_ALIGNMENT);
}

static void writer_free(sq_gguf_writer *w) {
    if (!w) return;
    sq_atomic_file_abort(&w->file);
    free(w->sizes);
    free(w);
}

static int write_zeros(sq_gguf_writer *w, size_t n) {
    static const uint8_t zeros[SQ_GGUF_DEFAULT_ALIGNMENT];
    if (n && sq_atomic_file_write(&w->file, zeros, n) != SQ_OK) return SQ_FAIL;
    w->pos += n;
    return SQ_OK;
}

int sq_gguf_writer_begin(sq_gguf_writer **out, const char *path, const sq_gguf_tensor_desc *t, int n, const sq_gguf_kv *kvs,
                         int n_kvs) {
    *out = NULL;
    sq_gguf_writer *w = calloc(1, sizeof *w);
    if (!w) return sq_errorf("out of host memory");
    w->file.fd = -1;
    w->n = n;
    w->sizes = calloc((size_t)n + 1, sizeof *w->sizes);
    if (!w->sizes) { writer_free(w); return sq_errorf("out of host memory"); }
    buf b = {0};
    put(&b, "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, (uint64_t)n);
    put_u64(&b, (uint64_t)n_kvs);
    int rc = SQ_OK;
    for (int i = 0; i < n_kvs && rc == SQ_OK; i++) rc = put_kv(&b, &kvs[i], path);
    uint64_t off = 0;
    for (int i = 0; i < n && rc == SQ_OK; i++) {
        int64_t numel = 1;
        for (int d = 0; d < t[i].n_dims; d++) numel *= t[i].ne[d];
        int be, bb;
        if (t[i].n_dims < 1 || t[i].n_dims > SQ_GGUF_MAX_DIMS || !sq_ggml_type_block(t[i].type, &be, &bb) || t[i].ne[0] % be) {
            rc = sq_errorf("%s: tensor '%s' cannot be stored as %s", path, t[i].name, sq_ggml_type_name(t[i].type));
            break;
        }
        for (int j = 0; j < i; j++)
            if (!strcmp(t[i].name, t[j].name)) rc = sq_errorf("%s: tensor '%s' given twice", path, t[i].name);
        w->sizes[i] = sq_ggml_nbytes(t[i].type, numel);
        put_str(&b, t[i].name);
        put_u32(&b, (uint32_t)t[i].n_dims);
        for (int d = 0; d < t[i].n_dims; d++) put_u64(&b, (uint64_t)t[i].ne[d]);
        put_u32(&b, t[i].type);
        put_u64(&b, off);
        off += padded(w->sizes[i]);
    }
    if (rc == SQ_OK && b.failed) rc = sq_errorf("out of host memory");
    if (rc == SQ_OK) {
        size_t hl = b.n;
        uint8_t zeros[SQ_GGUF_DEFAULT_ALIGNMENT] = {0};
        put(&b, zeros, padded(hl) - hl);   // the data block starts aligned
        if (b.failed) rc = sq_errorf("out of host memory");
    }
    if (rc == SQ_OK) rc = sq_atomic_file_open(&w->file, path);
    if (rc == SQ_OK) rc = sq_atomic_file_write(&w->file, b.p, b.n);
    free(b.p);
    if (rc != SQ_OK) { writer_free(w); return SQ_FAIL; }
    w->pos = 0;   // counted from the data block's start from here on
    *out = w;
    return SQ_OK;
}

// Moves past finished tensors, padding each to the alignment.
static int advance(sq_gguf_writer *w) {
    while (w->cur < w->n && w->sizes[w->cur] == w->cur_written) {
        if (write_zeros(w, padded(w->pos) - w->pos) != SQ_OK) return SQ_FAIL;
        w->cur++;
        w->cur_written = 0;
    }
    return SQ_OK;
}

int sq_gguf_writer_append(sq_gguf_writer *w, const void *data, size_t nbytes) {
    if (advance(w) != SQ_OK) { writer_free(w); return SQ_FAIL; }
    if (w->cur >= w->n || nbytes > w->sizes[w->cur] - w->cur_written) {
        sq_errorf("%s: more bytes appended than the declared tensors hold", w->file.path);
        writer_free(w);
        return SQ_FAIL;
    }
    if (sq_atomic_file_write(&w->file, data, nbytes) != SQ_OK) { writer_free(w); return SQ_FAIL; }
    w->cur_written += nbytes;
    w->pos += nbytes;
    return SQ_OK;
}

int sq_gguf_writer_commit(sq_gguf_writer *w) {
    if (advance(w) != SQ_OK) { writer_free(w); return SQ_FAIL; }
    if (w->cur < w->n) {
        sq_errorf("%s: only %d of %d tensors were written; nothing saved", w->file.path, w->cur, w->n);
        writer_free(w);
        return SQ_FAIL;
    }
    int rc = sq_atomic_file_commit(&w->file);
    writer_free(w);
    return rc;
}

void sq_gguf_writer_abort(sq_gguf_writer *w) { writer_free(w); }
