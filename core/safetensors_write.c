// core/safetensors_write.c: atomic safetensors writing. The header is built with
// cJSON (tensors in the order given, contiguous data_offsets), padded with spaces
// to a multiple of 8 bytes so the data block is aligned; the bytes go through
// core/atomic_file.h, so the destination is replaced only when everything was
// written and any failure leaves an existing one untouched.
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/safetensors.h"

struct sq_st_writer {
    sq_atomic_file file;
    int n;                 // tensors declared
    size_t *sizes;         // bytes each tensor must receive
    int cur;               // tensor being appended
    size_t cur_written;
    char *header;          // the header as written (sq_st_writer_patch_metadata)
    size_t header_len;
};

static size_t desc_bytes(const sq_st_tensor_desc *d) {
    int64_t n = 1;
    for (int i = 0; i < d->ndim; i++) n *= d->shape[i];
    return sq_dtype_bytes(d->dtype, n);
}

// Header JSON for the tensors; Q4 is stored as U8 (see core/safetensors.h): the
// caller's shape for SQ_Q4 is the element shape and is written as bytes along the
// last dim (an even count of elements per row is required).
static char *build_header(const sq_st_tensor_desc *t, int n, const sq_st_kv *meta, int n_meta, size_t *len) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    if (n_meta > 0) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; i < n_meta; i++) cJSON_AddStringToObject(m, meta[i].key, meta[i].value);
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        cJSON *e = cJSON_AddObjectToObject(root, t[i].name);
        cJSON_AddStringToObject(e, "dtype", sq_dtype_to_safetensors(t[i].dtype));
        cJSON *s = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < t[i].ndim; d++) {
            int64_t v = t[i].shape[d];
            if (t[i].dtype == SQ_Q4 && d == t[i].ndim - 1) v /= 2;
            cJSON_AddItemToArray(s, cJSON_CreateNumber((double)v));
        }
        size_t bytes = desc_bytes(&t[i]);
        cJSON *o = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)(off + bytes)));
        off += bytes;
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text) return NULL;
    size_t l = strlen(text), padded = (l + 7) / 8 * 8;
    char *out = realloc(text, padded + 1);
    if (!out) { free(text); return NULL; }
    memset(out + l, ' ', padded - l);
    out[padded] = 0;
    *len = padded;
    return out;
}

static void writer_free(sq_st_writer *w) {
    if (!w) return;
    sq_atomic_file_abort(&w->file);
    free(w->sizes);
    free(w->header);
    free(w);
}

int sq_st_writer_begin(sq_st_writer **out, const char *path, const sq_st_tensor_desc *tensors, int n_tensors,
                       const sq_st_kv *metadata, int n_metadata) {
    *out = NULL;
    for (int i = 0; i < n_tensors; i++) {
        if (tensors[i].dtype == SQ_Q4 && (tensors[i].ndim == 0 || tensors[i].shape[tensors[i].ndim - 1] % 2))
            return sq_errorf("%s: Q4 tensor '%s' needs an even last dimension", path, tensors[i].name);
        for (int j = 0; j < i; j++)
            if (!strcmp(tensors[i].name, tensors[j].name)) return sq_errorf("%s: tensor '%s' given twice", path, tensors[i].name);
    }
    sq_st_writer *w = calloc(1, sizeof *w);
    if (!w) return sq_errorf("out of host memory");
    w->file.fd = -1;
    w->n = n_tensors;
    w->sizes = calloc((size_t)n_tensors + 1, sizeof *w->sizes);
    if (!w->sizes) { writer_free(w); return sq_errorf("out of host memory"); }
    for (int i = 0; i < n_tensors; i++) w->sizes[i] = desc_bytes(&tensors[i]);
    size_t hlen = 0;
    char *header = build_header(tensors, n_tensors, metadata, n_metadata, &hlen);
    if (!header) { writer_free(w); return sq_errorf("%s: cannot build header", path); }
    w->header = header;
    w->header_len = hlen;
    if (sq_atomic_file_open(&w->file, path) != SQ_OK) { writer_free(w); return SQ_FAIL; }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    int rc = sq_atomic_file_write(&w->file, len8, 8);
    if (rc == SQ_OK) rc = sq_atomic_file_write(&w->file, header, hlen);
    if (rc != SQ_OK) { writer_free(w); return SQ_FAIL; }
    *out = w;
    return SQ_OK;
}

// Test hook (README "Fault injection"): SD_QZO_FAULT=kill@write:NAME kills the process
// with SIGKILL after the first data chunk of a file whose name ends in NAME is written:
// a real death halfway through a write, which must leave the previous file intact.
static void fault_kill_midway(const char *path) {
    const char *f = getenv("SD_QZO_FAULT");
    if (!f || strncmp(f, "kill@write:", 11) != 0) return;
    size_t n = strlen(path), k = strlen(f + 11);
    if (k && n >= k && strcmp(path + n - k, f + 11) == 0) raise(SIGKILL);
}

int sq_st_writer_append(sq_st_writer *w, const void *data, size_t nbytes) {
    while (w->cur < w->n && w->sizes[w->cur] == w->cur_written) { w->cur++; w->cur_written = 0; }
    if (w->cur >= w->n || nbytes > w->sizes[w->cur] - w->cur_written) {
        sq_errorf("%s: more bytes appended than the declared tensors hold", w->file.path);
        writer_free(w);
        return SQ_FAIL;
    }
    if (sq_atomic_file_write(&w->file, data, nbytes) != SQ_OK) { writer_free(w); return SQ_FAIL; }
    fault_kill_midway(w->file.path);
    w->cur_written += nbytes;
    return SQ_OK;
}

int sq_st_writer_patch_metadata(sq_st_writer *w, const char *key, const char *value) {
    char pat[256];
    size_t vlen = strlen(value);
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    char *at = strstr(w->header, pat);   // metadata comes first in the header
    char *v = at ? at + strlen(pat) : NULL;
    char *end = v ? strchr(v, '"') : NULL;
    bool plain = strcspn(value, "\"\\") == vlen;
    if (!end || (size_t)(end - v) != vlen || !plain) {
        sq_errorf("%s: metadata %s cannot be patched in place", w->file.path, key);
        writer_free(w);
        return SQ_FAIL;
    }
    memcpy(v, value, vlen);
    off_t pos = (off_t)(8 + (v - w->header));
    if (sq_atomic_file_pwrite(&w->file, value, vlen, pos) != SQ_OK) {
        writer_free(w);
        return SQ_FAIL;
    }
    return SQ_OK;
}

int sq_st_writer_commit(sq_st_writer *w) {
    while (w->cur < w->n && w->sizes[w->cur] == w->cur_written) { w->cur++; w->cur_written = 0; }
    if (w->cur < w->n) {
        sq_errorf("%s: only %d of %d tensors were written; nothing saved", w->file.path, w->cur, w->n);
        writer_free(w);
        return SQ_FAIL;
    }
    int rc = sq_atomic_file_commit(&w->file);
    writer_free(w);
    return rc;
}

void sq_st_writer_abort(sq_st_writer *w) { writer_free(w); }

int sq_st_write(const char *path, const sq_st_tensor_desc *tensors, int n_tensors, const sq_st_kv *metadata,
                int n_metadata) {
    sq_st_writer *w;
    if (sq_st_writer_begin(&w, path, tensors, n_tensors, metadata, n_metadata) != SQ_OK) return SQ_FAIL;
    for (int i = 0; i < n_tensors; i++) {
        size_t n = w->sizes[i];
        if (n && !tensors[i].data) { sq_errorf("%s: tensor '%s' has no data", path, tensors[i].name); writer_free(w); return SQ_FAIL; }
        if (n && sq_st_writer_append(w, tensors[i].data, n) != SQ_OK) return SQ_FAIL;
    }
    return sq_st_writer_commit(w);
}
