// core/gguf_read.c: validated, mmapped reading of GGUF files (see core/gguf.h for
// the layout and the rules). Nothing in the file is trusted: every count, length,
// dimension and offset is checked against the file size with overflow-safe
// arithmetic before it is used, so a truncated or hostile file gets a one-line
// error naming it, never a read past the mapping.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/gguf.h"

typedef struct {
    char *key;
    uint32_t type;
    const uint8_t *value;   // into the mapping
    char *str;              // STRING values, copied and NUL-terminated
} gguf_kv;

struct sq_gguf {
    char *path;
    void *map;
    size_t size;
    uint32_t version, alignment;
    gguf_kv *kv;
    int n_kv;
    sq_gguf_tensor *t;
    int n_t;
    const sq_gguf_tensor **by_name;   // sorted by name
};

// A cursor over the mapping; every read checks the bytes left first.
typedef struct {
    const uint8_t *p;
    size_t left;
    const char *fname;
} cursor;

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static int need(cursor *c, size_t n, const char *what) {
    if (n > c->left) return sq_errorf("%s: %s runs past the end of the file (truncated?)", c->fname, what);
    return SQ_OK;
}

static int rd_u32(cursor *c, uint32_t *v, const char *what) {
    if (need(c, 4, what) != SQ_OK) return SQ_FAIL;
    *v = (uint32_t)c->p[0] | (uint32_t)c->p[1] << 8 | (uint32_t)c->p[2] << 16 | (uint32_t)c->p[3] << 24;
    c->p += 4;
    c->left -= 4;
    return SQ_OK;
}

static int rd_u64(cursor *c, uint64_t *v, const char *what) {
    if (need(c, 8, what) != SQ_OK) return SQ_FAIL;
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--) x = x << 8 | c->p[i];
    *v = x;
    c->p += 8;
    c->left -= 8;
    return SQ_OK;
}

// A string: u64 length + bytes. *s points into the mapping (not NUL-terminated).
static int rd_str(cursor *c, const char **s, uint64_t *len, const char *what) {
    if (rd_u64(c, len, what) != SQ_OK || need(c, *len, what) != SQ_OK) return SQ_FAIL;
    *s = (const char *)c->p;
    c->p += *len;
    c->left -= *len;
    return SQ_OK;
}

static size_t scalar_size(uint32_t t) {
    switch (t) {
    case SQ_GGUF_U8: case SQ_GGUF_I8: case SQ_GGUF_BOOL: return 1;
    case SQ_GGUF_U16: case SQ_GGUF_I16: return 2;
    case SQ_GGUF_U32: case SQ_GGUF_I32: case SQ_GGUF_F32: return 4;
    case SQ_GGUF_U64: case SQ_GGUF_I64: case SQ_GGUF_F64: return 8;
    default: return 0;
    }
}

// Skips one value of type t (arrays of scalars or strings; nested arrays refused).
static int skip_value(cursor *c, uint32_t t, const char *key) {
    char what[200];
    snprintf(what, sizeof what, "value of key '%.120s'", key);
    if (t == SQ_GGUF_STRING) {
        const char *s;
        uint64_t n;
        return rd_str(c, &s, &n, what);
    }
    if (t == SQ_GGUF_ARRAY) {
        uint32_t et;
        uint64_t n;
        if (rd_u32(c, &et, what) != SQ_OK || rd_u64(c, &n, what) != SQ_OK) return SQ_FAIL;
        if (et == SQ_GGUF_ARRAY) return sq_errorf("%s: key '%.120s' is an array of arrays (not supported)", c->fname, key);
        if (et == SQ_GGUF_STRING) {
            // each string takes at least its 8-byte length: bound the count first
            if (n > c->left / 8) return sq_errorf("%s: key '%.120s': array of %llu strings runs past the end of the file",
                                                  c->fname, key, (unsigned long long)n);
            for (uint64_t i = 0; i < n; i++)
                if (skip_value(c, SQ_GGUF_STRING, key) != SQ_OK) return SQ_FAIL;
            return SQ_OK;
        }
        size_t es = scalar_size(et);
        if (!es) return sq_errorf("%s: key '%.120s': unknown array element type %u", c->fname, key, et);
        if (n > c->left / es) return sq_errorf("%s: key '%.120s': array of %llu elements runs past the end of the file",
                                               c->fname, key, (unsigned long long)n);
        c->p += n * es;
        c->left -= n * es;
        return SQ_OK;
    }
    size_t es = scalar_size(t);
    if (!es) return sq_errorf("%s: key '%.120s': unknown value type %u", c->fname, key, t);
    if (need(c, es, what) != SQ_OK) return SQ_FAIL;
    c->p += es;
    c->left -= es;
    return SQ_OK;
}

static const gguf_kv *find_kv(const sq_gguf *g, const char *key) {
    for (int i = 0; i < g->n_kv; i++)
        if (!strcmp(g->kv[i].key, key)) return &g->kv[i];
    return NULL;
}

bool sq_gguf_get_int(const sq_gguf *g, const char *key, int64_t *out) {
    const gguf_kv *k = find_kv(g, key);
    if (!k) return false;
    const uint8_t *v = k->value;
    uint64_t u = 0;
    size_t n = scalar_size(k->type);
    if (!n || k->type == SQ_GGUF_F32 || k->type == SQ_GGUF_F64) return false;
    for (size_t i = n; i-- > 0;) u = u << 8 | v[i];
    switch (k->type) {
    case SQ_GGUF_I8: *out = (int8_t)u; break;
    case SQ_GGUF_I16: *out = (int16_t)u; break;
    case SQ_GGUF_I32: *out = (int32_t)u; break;
    case SQ_GGUF_I64: *out = (int64_t)u; break;
    case SQ_GGUF_U64: if (u > INT64_MAX) return false; *out = (int64_t)u; break;
    default: *out = (int64_t)u; break;
    }
    return true;
}

const char *sq_gguf_get_string(const sq_gguf *g, const char *key) {
    const gguf_kv *k = find_kv(g, key);
    return k && k->type == SQ_GGUF_STRING ? k->str : NULL;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const sq_gguf_tensor *const *)a)->name, (*(const sq_gguf_tensor *const *)b)->name);
}

static int parse(sq_gguf *g) {
    const char *fname = base_name(g->path);
    cursor c = {g->map, g->size, fname};
    if (g->size < 4 || memcmp(c.p, "GGUF", 4)) {
        if (g->size < 4) return sq_errorf("%s: %zu bytes is too short for a GGUF file (truncated?)", fname, g->size);
        return sq_errorf("%s: not a GGUF file (the first four bytes are not \"GGUF\")", fname);
    }
    c.p += 4;
    c.left -= 4;
    uint64_t n_t, n_kv;
    if (rd_u32(&c, &g->version, "header") != SQ_OK) return SQ_FAIL;
    if (g->version != 2 && g->version != 3) {
        // a big-endian file reads its version byte-swapped
        if (g->version >= 0x01000000u) return sq_errorf("%s: big-endian GGUF files are not supported", fname);
        return sq_errorf("%s: GGUF version %u is not supported (2 or 3)", fname, g->version);
    }
    if (rd_u64(&c, &n_t, "header") != SQ_OK || rd_u64(&c, &n_kv, "header") != SQ_OK) return SQ_FAIL;
    // a key/value takes at least 8 + 4 + 1 bytes, a tensor info at least 8 + 4 + 4 + 8
    if (n_kv > c.left / 13) return sq_errorf("%s: %llu key/values cannot fit in the file (truncated, or a corrupt count?)", fname, (unsigned long long)n_kv);
    if (n_t > c.left / 24) return sq_errorf("%s: %llu tensors cannot fit in the file (truncated, or a corrupt count?)", fname, (unsigned long long)n_t);
    g->kv = calloc((size_t)n_kv + 1, sizeof *g->kv);
    g->t = calloc((size_t)n_t + 1, sizeof *g->t);
    g->by_name = calloc((size_t)n_t + 1, sizeof *g->by_name);
    if (!g->kv || !g->t || !g->by_name) return sq_errorf("out of host memory");
    g->alignment = SQ_GGUF_DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < n_kv; i++) {
        const char *k;
        uint64_t klen;
        uint32_t type;
        if (rd_str(&c, &k, &klen, "a key") != SQ_OK) return SQ_FAIL;
        if (klen == 0 || klen > 65535) return sq_errorf("%s: key/value %llu has a key of %llu bytes", fname, (unsigned long long)i, (unsigned long long)klen);
        gguf_kv *kv = &g->kv[g->n_kv];
        kv->key = strndup(k, (size_t)klen);
        if (!kv->key) return sq_errorf("out of host memory");
        g->n_kv++;
        if (strlen(kv->key) != klen) return sq_errorf("%s: key '%s…' holds a NUL byte", fname, kv->key);
        if (rd_u32(&c, &type, kv->key) != SQ_OK) return SQ_FAIL;
        kv->type = type;
        kv->value = c.p;
        if (type == SQ_GGUF_STRING) {
            cursor s = c;
            const char *v;
            uint64_t vlen;
            if (rd_str(&s, &v, &vlen, kv->key) != SQ_OK) return SQ_FAIL;
            kv->str = strndup(v, (size_t)vlen);
            if (!kv->str) return sq_errorf("out of host memory");
        }
        if (skip_value(&c, type, kv->key) != SQ_OK) return SQ_FAIL;
        for (int j = 0; j < g->n_kv - 1; j++)
            if (!strcmp(g->kv[j].key, kv->key)) return sq_errorf("%s: key '%.120s' appears twice", fname, kv->key);
    }
    if (find_kv(g, "general.alignment")) {
        int64_t a;
        if (!sq_gguf_get_int(g, "general.alignment", &a) || a <= 0 || a > (1 << 20) || (a & (a - 1)))
            return sq_errorf("%s: general.alignment must be a power of two up to 1 MiB", fname);
        g->alignment = (uint32_t)a;
    }
    for (uint64_t i = 0; i < n_t; i++) {
        sq_gguf_tensor *t = &g->t[g->n_t];
        const char *name;
        uint64_t nlen, offset;
        uint32_t nd, type;
        if (rd_str(&c, &name, &nlen, "a tensor info") != SQ_OK) return SQ_FAIL;
        if (nlen == 0 || nlen > 4096) return sq_errorf("%s: tensor %llu has a name of %llu bytes", fname, (unsigned long long)i, (unsigned long long)nlen);
        t->name = strndup(name, (size_t)nlen);
        if (!t->name) return sq_errorf("out of host memory");
        g->n_t++;
        if (rd_u32(&c, &nd, t->name) != SQ_OK) return SQ_FAIL;
        if (nd < 1 || nd > SQ_GGUF_MAX_DIMS)
            return sq_errorf("%s: tensor '%s': %u dimensions (1 to %d supported)", fname, t->name, nd, SQ_GGUF_MAX_DIMS);
        t->n_dims = (int)nd;
        uint64_t numel = 1;
        for (int d = 0; d < SQ_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t v;
            if (rd_u64(&c, &v, t->name) != SQ_OK) return SQ_FAIL;
            if (v > ((uint64_t)1 << 40) || (numel && v > ((uint64_t)1 << 62) / numel))
                return sq_errorf("%s: tensor '%s': dimension %u is %llu (absurd; corrupt file?)", fname, t->name, d, (unsigned long long)v);
            t->ne[d] = (int64_t)v;
            numel *= v;
        }
        if (rd_u32(&c, &type, t->name) != SQ_OK || rd_u64(&c, &offset, t->name) != SQ_OK) return SQ_FAIL;
        t->type = type;
        int be, bb;
        if (!sq_ggml_type_block(type, &be, &bb))
            return sq_errorf("%s: tensor '%s' has %s, which sd-qzo does not read (F32, F16, BF16, Q4_0, Q8_0, Q4_K)", fname,
                             t->name, sq_ggml_type_name(type));
        if (t->ne[0] % be)
            return sq_errorf("%s: tensor '%s': first dimension %lld is not a multiple of the %s block (%d)", fname, t->name,
                             (long long)t->ne[0], sq_ggml_type_name(type), be);
        t->nbytes = (size_t)(numel / (uint64_t)be) * (size_t)bb;
        t->data = (const void *)(uintptr_t)offset;   // relative for now; resolved below
        if (offset % g->alignment)
            return sq_errorf("%s: tensor '%s': offset %llu is not a multiple of the alignment %u", fname, t->name,
                             (unsigned long long)offset, g->alignment);
    }
    size_t header = g->size - c.left;
    size_t data_start = (header + g->alignment - 1) / g->alignment * g->alignment;
    if (data_start > g->size && n_t > 0) return sq_errorf("%s: the data block starts past the end of the file (truncated?)", fname);
    size_t data_size = data_start <= g->size ? g->size - data_start : 0;
    for (int i = 0; i < g->n_t; i++) {
        sq_gguf_tensor *t = &g->t[i];
        uint64_t off = (uint64_t)(uintptr_t)t->data;
        if (off > data_size || t->nbytes > data_size - off)
            return sq_errorf("%s: tensor '%s' (%zu bytes at offset %llu) lies outside the data block (%zu bytes; truncated?)",
                             fname, t->name, t->nbytes, (unsigned long long)off, data_size);
        t->data = (const uint8_t *)g->map + data_start + off;
        g->by_name[i] = t;
    }
    qsort(g->by_name, (size_t)g->n_t, sizeof *g->by_name, cmp_name);
    for (int i = 1; i < g->n_t; i++)
        if (!strcmp(g->by_name[i]->name, g->by_name[i - 1]->name))
            return sq_errorf("%s: tensor '%s' appears twice", fname, g->by_name[i]->name);
    return SQ_OK;
}

int sq_gguf_open(sq_gguf **out, const char *path) {
    *out = NULL;
    sq_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup(path))) { free(g); return sq_errorf("out of host memory"); }
    int fd = open(path, O_RDONLY);
    if (fd < 0) { sq_gguf_close(g); return sq_error_errno("%s: cannot open", path); }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        sq_gguf_close(g);
        return sq_errorf("%s: not a regular file", path);
    }
    g->size = (size_t)sb.st_size;
    if (g->size > 0) {
        g->map = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (g->map == MAP_FAILED) {
            g->map = NULL;
            close(fd);
            sq_gguf_close(g);
            return sq_error_errno("%s: cannot mmap", path);
        }
    }
    close(fd);
    if (parse(g) != SQ_OK) {
        sq_gguf_close(g);
        return SQ_FAIL;
    }
    *out = g;
    return SQ_OK;
}

void sq_gguf_close(sq_gguf *g) {
    if (!g) return;
    if (g->map) munmap(g->map, g->size);
    for (int i = 0; i < g->n_kv; i++) {
        free(g->kv[i].key);
        free(g->kv[i].str);
    }
    for (int i = 0; i < g->n_t; i++) free((void *)g->t[i].name);
    free(g->kv);
    free(g->t);
    free(g->by_name);
    free(g->path);
    free(g);
}

uint32_t sq_gguf_version(const sq_gguf *g) { return g->version; }
uint32_t sq_gguf_alignment(const sq_gguf *g) { return g->alignment; }
int sq_gguf_tensor_count(const sq_gguf *g) { return g->n_t; }
const sq_gguf_tensor *sq_gguf_tensor_at(const sq_gguf *g, int i) { return i >= 0 && i < g->n_t ? &g->t[i] : NULL; }
int sq_gguf_kv_count(const sq_gguf *g) { return g->n_kv; }
const char *sq_gguf_kv_key(const sq_gguf *g, int i) { return i >= 0 && i < g->n_kv ? g->kv[i].key : NULL; }

const sq_gguf_tensor *sq_gguf_find(const sq_gguf *g, const char *name) {
    int lo = 0, hi = g->n_t - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(g->by_name[mid]->name, name);
        if (!c) return g->by_name[mid];
        if (c < 0) lo = mid + 1; else hi = mid - 1;
    }
    return NULL;
}
