// core/safetensors_read.c: validated, mmapped reading of safetensors files and
// sharded checkpoints (see core/safetensors.h for the rules). Nothing in a file is
// trusted: every length, offset and shape is checked with overflow-safe arithmetic
// before a tensor is handed out.
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "core/error.h"
#include "core/safetensors.h"

#define MAX_HEADER_BYTES (100u << 20)

typedef struct {
    char *path;
    void *map;
    size_t size;
    const uint8_t *data;      // start of the data block
    size_t data_size;
} st_file;

typedef struct {
    char *key, *value;
} st_meta;

struct sq_safetensors {
    st_file *files;
    int n_files;
    sq_st_entry *entries;
    int n_entries, cap_entries;
    st_meta *meta;
    int n_meta, cap_meta;
    void *owner;                      // sq_st_from_entries: what keeps the data alive
    void (*free_owner)(void *);
};

static bool mul_overflows(uint64_t a, uint64_t b, uint64_t *out) {
    if (a && b > UINT64_MAX / a) return true;
    *out = a * b;
    return false;
}

static int add_file(sq_safetensors *st, const char *path) {
    st_file *f = realloc(st->files, (size_t)(st->n_files + 1) * sizeof *f);
    if (!f) return sq_errorf("out of host memory");
    st->files = f;
    f = &st->files[st->n_files++];
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    return f->path ? SQ_OK : sq_errorf("out of host memory");
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static int cmp_begin(const void *a, const void *b) {
    const sq_st_entry *x = *(const sq_st_entry *const *)a, *y = *(const sq_st_entry *const *)b;
    const uint8_t *px = x->data, *py = y->data;
    return (px > py) - (px < py);
}

static int add_meta(sq_safetensors *st, const char *key, const char *value) {
    if (st->n_meta == st->cap_meta) {
        int cap = st->cap_meta ? 2 * st->cap_meta : 8;
        st_meta *m = realloc(st->meta, (size_t)cap * sizeof *m);
        if (!m) return sq_errorf("out of host memory");
        st->meta = m;
        st->cap_meta = cap;
    }
    st->meta[st->n_meta].key = strdup(key);
    st->meta[st->n_meta].value = strdup(value);
    if (!st->meta[st->n_meta].key || !st->meta[st->n_meta].value) return sq_errorf("out of host memory");
    st->n_meta++;
    return SQ_OK;
}

// Parses one tensor description of file `fi` into a new entry.
static int parse_entry(sq_safetensors *st, int fi, const cJSON *item) {
    const st_file *f = &st->files[fi];
    const char *fname = base_name(f->path), *name = item->string;
    if (!cJSON_IsObject(item)) return sq_errorf("%s: tensor '%s': description is not a JSON object", fname, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs))
        return sq_errorf("%s: tensor '%s': needs string dtype, array shape and array data_offsets", fname, name);
    sq_st_entry e;
    memset(&e, 0, sizeof e);
    e.file = fi;
    if (sq_dtype_from_safetensors(dt->valuestring, &e.dtype))
        return sq_errorf("%s: tensor '%s': unsupported dtype '%s'", fname, name, dt->valuestring);
    int nd = cJSON_GetArraySize(shape);
    if (nd > SQ_ST_MAX_DIMS) return sq_errorf("%s: tensor '%s': %d dimensions (at most %d)", fname, name, nd, SQ_ST_MAX_DIMS);
    e.ndim = nd;
    uint64_t numel = 1;
    for (int d = 0; d < nd; d++) {
        const cJSON *v = cJSON_GetArrayItem(shape, d);
        // cJSON stores numbers as double: accept only exact non-negative integers < 2^53
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9007199254740992.0 ||
            v->valuedouble != (double)(int64_t)v->valuedouble)
            return sq_errorf("%s: tensor '%s': shape entry %d is not a non-negative integer", fname, name, d);
        e.shape[d] = (int64_t)v->valuedouble;
        if (mul_overflows(numel, (uint64_t)e.shape[d], &numel))
            return sq_errorf("%s: tensor '%s': shape overflows", fname, name);
    }
    if (cJSON_GetArraySize(offs) != 2) return sq_errorf("%s: tensor '%s': data_offsets must be [begin, end]", fname, name);
    double ob = cJSON_GetArrayItem(offs, 0)->valuedouble, oe = cJSON_GetArrayItem(offs, 1)->valuedouble;
    // the range first: converting a double beyond uint64_t's range is undefined
    if (!cJSON_IsNumber(cJSON_GetArrayItem(offs, 0)) || !cJSON_IsNumber(cJSON_GetArrayItem(offs, 1)) || ob < 0 ||
        oe < 0 || ob > 1.8e19 || oe > 1.8e19 || ob != (double)(uint64_t)ob || oe != (double)(uint64_t)oe)
        return sq_errorf("%s: tensor '%s': data_offsets are not non-negative integers", fname, name);
    uint64_t begin = (uint64_t)ob, end = (uint64_t)oe;
    if (begin > end) return sq_errorf("%s: tensor '%s': data_offsets [%llu, %llu] run backwards", fname, name,
                                      (unsigned long long)begin, (unsigned long long)end);
    if (end > f->data_size)
        return sq_errorf("%s: tensor '%s': data_offsets [%llu, %llu] exceed the data block (%zu bytes)", fname, name,
                         (unsigned long long)begin, (unsigned long long)end, f->data_size);
    uint64_t esize = sq_dtype_bytes(e.dtype, 1), bytes;
    if (mul_overflows(numel, esize, &bytes))
        return sq_errorf("%s: tensor '%s': shape needs more bytes than a file can hold", fname, name);
    if (bytes != end - begin)
        return sq_errorf("%s: tensor '%s': %s shape needs %llu bytes but data_offsets give %llu", fname, name,
                         dt->valuestring, (unsigned long long)(numel * esize), (unsigned long long)(end - begin));
    e.data = f->data + begin;
    e.nbytes = (size_t)bytes;
    e.name = strdup(name);
    if (!e.name) return sq_errorf("out of host memory");
    if (st->n_entries == st->cap_entries) {
        int cap = st->cap_entries ? 2 * st->cap_entries : 64;
        sq_st_entry *ne = realloc(st->entries, (size_t)cap * sizeof *ne);
        if (!ne) { free((void *)e.name); return sq_errorf("out of host memory"); }
        st->entries = ne;
        st->cap_entries = cap;
    }
    st->entries[st->n_entries++] = e;
    return SQ_OK;
}

// Maps and validates one file, appending its entries.
static int open_one(sq_safetensors *st, const char *path) {
    if (add_file(st, path) != SQ_OK) return SQ_FAIL;
    int fi = st->n_files - 1;
    st_file *f = &st->files[fi];
    const char *fname = base_name(path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return sq_error_errno("%s: cannot open", path);
    struct stat sb;
    if (fstat(fd, &sb) != 0) { close(fd); return sq_error_errno("%s: cannot stat", path); }
    if (!S_ISREG(sb.st_mode)) { close(fd); return sq_errorf("%s: not a regular file", path); }
    f->size = (size_t)sb.st_size;
    if (f->size < 8) { close(fd); return sq_errorf("%s: %zu bytes is too short for a safetensors file (truncated?)", fname, f->size); }
    f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) { f->map = NULL; return sq_error_errno("%s: cannot mmap", path); }
    const uint8_t *p = f->map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | p[i];
    if (hlen > MAX_HEADER_BYTES) return sq_errorf("%s: header length %llu is over the 100 MB limit (corrupt file?)", fname, (unsigned long long)hlen);
    if (hlen > f->size - 8)
        return sq_errorf("%s: header length %llu runs past the end of the file (%zu bytes; truncated?)", fname,
                         (unsigned long long)hlen, f->size);
    f->data = p + 8 + hlen;
    f->data_size = f->size - 8 - (size_t)hlen;
    cJSON *root = cJSON_ParseWithLength((const char *)p + 8, (size_t)hlen);
    if (!root) return sq_errorf("%s: header is not valid JSON", fname);
    int rc = SQ_OK;
    if (!cJSON_IsObject(root)) { rc = sq_errorf("%s: header is not a JSON object", fname); goto done; }
    int first = st->n_entries;
    for (const cJSON *it = root->child; it; it = it->next) {
        if (!it->string) { rc = sq_errorf("%s: header entry without a name", fname); goto done; }
        if (!strcmp(it->string, "__metadata__")) {
            if (!cJSON_IsObject(it)) { rc = sq_errorf("%s: __metadata__ is not an object", fname); goto done; }
            for (const cJSON *m = it->child; m; m = m->next) {
                if (!cJSON_IsString(m)) { rc = sq_errorf("%s: __metadata__ value '%s' is not a string", fname, m->string); goto done; }
                if (!sq_st_metadata(st, m->string) && add_meta(st, m->string, m->valuestring) != SQ_OK) { rc = SQ_FAIL; goto done; }
            }
            continue;
        }
        if (parse_entry(st, fi, it) != SQ_OK) { rc = SQ_FAIL; goto done; }
    }
    // overlaps: sort this file's entries by start offset and compare neighbours
    int n = st->n_entries - first;
    if (n > 1) {
        const sq_st_entry **order = malloc((size_t)n * sizeof *order);
        if (!order) { rc = sq_errorf("out of host memory"); goto done; }
        for (int i = 0; i < n; i++) order[i] = &st->entries[first + i];
        qsort(order, (size_t)n, sizeof *order, cmp_begin);
        for (int i = 1; i < n; i++) {
            const uint8_t *prev_end = (const uint8_t *)order[i - 1]->data + order[i - 1]->nbytes;
            if ((const uint8_t *)order[i]->data < prev_end && order[i]->nbytes && order[i - 1]->nbytes) {
                rc = sq_errorf("%s: tensors '%s' and '%s' overlap", fname, order[i - 1]->name, order[i]->name);
                break;
            }
        }
        free(order);
    }
done:
    cJSON_Delete(root);
    return rc;
}

static int cmp_entry_name(const void *a, const void *b) {
    return strcmp(((const sq_st_entry *)a)->name, ((const sq_st_entry *)b)->name);
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

static int open_index(sq_safetensors *st, const char *index_path) {
    sq_config *cfg = NULL;
    if (sq_config_load(&cfg, index_path) != SQ_OK) return SQ_FAIL;
    const cJSON *root = sq_config_json(cfg);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    int rc = SQ_OK;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", index_path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0; else snprintf(dir, sizeof dir, ".");
    if (!cJSON_IsObject(wm) || !wm->child) { rc = sq_errorf("%s: no \"weight_map\" object", base_name(index_path)); goto done; }
    // open each distinct shard once, in first-mention order
    for (const cJSON *it = wm->child; it; it = it->next) {
        if (!cJSON_IsString(it) || strchr(it->valuestring, '/')) {
            rc = sq_errorf("%s: weight_map entry '%s' must name a shard file in the same folder", base_name(index_path), it->string);
            goto done;
        }
        char shard[4200];
        snprintf(shard, sizeof shard, "%s/%s", dir, it->valuestring);
        bool seen = false;
        for (int i = 0; i < st->n_files && !seen; i++) seen = !strcmp(st->files[i].path, shard);
        if (!seen && open_one(st, shard) != SQ_OK) {
            rc = sq_error_context("%s", base_name(index_path));
            goto done;
        }
    }
    qsort(st->entries, (size_t)st->n_entries, sizeof *st->entries, cmp_entry_name);
    for (const cJSON *it = wm->child; it; it = it->next) {
        const sq_st_entry *e = sq_st_find(st, it->string);
        if (!e || strcmp(base_name(st->files[e->file].path), it->valuestring)) {
            rc = sq_errorf("%s: tensor '%s' is not in its shard %s", base_name(index_path), it->string, it->valuestring);
            goto done;
        }
    }
done:
    sq_config_free(cfg);
    return rc;
}

static int open_dir(sq_safetensors *st, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return sq_error_errno("%s: cannot open directory", dir);
    char **names = NULL;
    int n = 0, n_index = 0;
    char index[4200] = "";
    struct dirent *de;
    int rc = SQ_OK;
    while ((de = readdir(d))) {
        if (ends_with(de->d_name, ".safetensors.index.json")) {
            n_index++;
            snprintf(index, sizeof index, "%s/%s", dir, de->d_name);
        } else if (ends_with(de->d_name, ".safetensors")) {
            char **nn = realloc(names, (size_t)(n + 1) * sizeof *nn);
            if (!nn) { rc = sq_errorf("out of host memory"); break; }
            names = nn;
            names[n] = malloc(strlen(dir) + strlen(de->d_name) + 2);
            if (!names[n]) { rc = sq_errorf("out of host memory"); break; }
            sprintf(names[n], "%s/%s", dir, de->d_name);
            n++;
        }
    }
    closedir(d);
    if (rc == SQ_OK) {
        if (n_index == 1) rc = open_index(st, index);
        else if (n_index > 1) rc = sq_errorf("%s: %d *.safetensors.index.json files; open one of them directly", dir, n_index);
        else if (n == 0) rc = sq_errorf("%s: no .safetensors files in this directory", dir);
        else {
            qsort(names, (size_t)n, sizeof *names, (int (*)(const void *, const void *))strcmp);
            for (int i = 0; i < n && rc == SQ_OK; i++) rc = open_one(st, names[i]);
        }
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

void sq_st_close(sq_safetensors *st) {
    if (!st) return;
    for (int i = 0; i < st->n_files; i++) {
        if (st->files[i].map) munmap(st->files[i].map, st->files[i].size);
        free(st->files[i].path);
    }
    for (int i = 0; i < st->n_entries; i++) free((void *)st->entries[i].name);
    for (int i = 0; i < st->n_meta; i++) { free(st->meta[i].key); free(st->meta[i].value); }
    free(st->files);
    free(st->entries);
    free(st->meta);
    if (st->free_owner) st->free_owner(st->owner);
    free(st);
}

int sq_st_from_entries(sq_safetensors **out, const char *path, const sq_st_entry *entries, int n, const sq_st_kv *meta,
                       int n_meta, void *owner, void (*free_owner)(void *)) {
    *out = NULL;
    sq_safetensors *st = calloc(1, sizeof *st);
    if (!st) {
        if (free_owner) free_owner(owner);
        return sq_errorf("out of host memory");
    }
    st->owner = owner;
    st->free_owner = free_owner;
    int rc = add_file(st, path);
    st->entries = calloc((size_t)n + 1, sizeof *st->entries);
    if (rc == SQ_OK && !st->entries) rc = sq_errorf("out of host memory");
    for (int i = 0; i < n && rc == SQ_OK; i++) {
        st->entries[i] = entries[i];
        st->entries[i].file = 0;
        st->entries[i].name = strdup(entries[i].name);
        if (!st->entries[i].name) rc = sq_errorf("out of host memory");
        else st->n_entries++;
    }
    for (int i = 0; i < n_meta && rc == SQ_OK; i++)
        if (!sq_st_metadata(st, meta[i].key)) rc = add_meta(st, meta[i].key, meta[i].value);
    if (rc == SQ_OK) {
        qsort(st->entries, (size_t)st->n_entries, sizeof *st->entries, cmp_entry_name);
        for (int i = 1; i < st->n_entries && rc == SQ_OK; i++)
            if (!strcmp(st->entries[i].name, st->entries[i - 1].name))
                rc = sq_errorf("%s: tensor '%s' appears twice", base_name(path), st->entries[i].name);
    }
    if (rc != SQ_OK) { sq_st_close(st); return SQ_FAIL; }
    *out = st;
    return SQ_OK;
}

int sq_st_open(sq_safetensors **out, const char *path) {
    *out = NULL;
    sq_safetensors *st = calloc(1, sizeof *st);
    if (!st) return sq_errorf("out of host memory");
    struct stat sb;
    int rc;
    if (stat(path, &sb) != 0) rc = sq_error_errno("%s", path);
    else if (S_ISDIR(sb.st_mode)) rc = open_dir(st, path);
    else if (ends_with(path, ".json")) rc = open_index(st, path);
    else rc = open_one(st, path);
    if (rc == SQ_OK && st->n_entries > 1) {  // none: entries may be NULL, which qsort must not get
        qsort(st->entries, (size_t)st->n_entries, sizeof *st->entries, cmp_entry_name);
        for (int i = 1; i < st->n_entries; i++)
            if (!strcmp(st->entries[i].name, st->entries[i - 1].name)) {
                rc = sq_errorf("%s: tensor '%s' appears twice (in %s and %s)", path, st->entries[i].name,
                               base_name(st->files[st->entries[i - 1].file].path), base_name(st->files[st->entries[i].file].path));
                break;
            }
    }
    if (rc != SQ_OK) { sq_st_close(st); return SQ_FAIL; }
    *out = st;
    return SQ_OK;
}

int sq_st_count(const sq_safetensors *st) { return st->n_entries; }
const sq_st_entry *sq_st_at(const sq_safetensors *st, int i) { return i >= 0 && i < st->n_entries ? &st->entries[i] : NULL; }
const char *sq_st_file_path(const sq_safetensors *st, int file) { return file >= 0 && file < st->n_files ? st->files[file].path : NULL; }
int sq_st_file_count(const sq_safetensors *st) { return st->n_files; }

const sq_st_entry *sq_st_find(const sq_safetensors *st, const char *name) {
    int lo = 0, hi = st->n_entries - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(st->entries[mid].name, name);
        if (!c) return &st->entries[mid];
        if (c < 0) lo = mid + 1; else hi = mid - 1;
    }
    return NULL;
}

const char *sq_st_metadata(const sq_safetensors *st, const char *key) {
    for (int i = 0; i < st->n_meta; i++)
        if (!strcmp(st->meta[i].key, key)) return st->meta[i].value;
    return NULL;
}
int sq_st_metadata_count(const sq_safetensors *st) { return st->n_meta; }
const char *sq_st_metadata_key(const sq_safetensors *st, int i) { return i >= 0 && i < st->n_meta ? st->meta[i].key : NULL; }

// The whole pages inside [data, data + nbytes), when the entry lies in a file this
// set mapped itself (advice on a page that another entry shares would touch that
// entry too; for release it would only cost a re-read). Never for a set made by
// sq_st_from_entries: its data may be heap memory, which MADV_DONTNEED would zero.
static bool entry_pages(const sq_safetensors *st, const sq_st_entry *e, uintptr_t *start, size_t *len) {
    if (e->file < 0 || e->file >= st->n_files) return false;
    const st_file *f = &st->files[e->file];
    uintptr_t m0 = (uintptr_t)f->map, d = (uintptr_t)e->data;
    if (!f->map || d < m0 || d + e->nbytes > m0 + f->size) return false;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (d + page - 1) / page * page, b = (d + e->nbytes) / page * page;
    if (b <= a) return false;
    *start = a;
    *len = b - a;
    return true;
}

void sq_st_entry_prefetch(const sq_safetensors *st, const sq_st_entry *e) {
    uintptr_t a;
    size_t n;
    if (entry_pages(st, e, &a, &n)) (void)madvise((void *)a, n, MADV_WILLNEED);   // advice only: errors are moot
}

void sq_st_entry_release(const sq_safetensors *st, const sq_st_entry *e) {
    uintptr_t a;
    size_t n;
    if (entry_pages(st, e, &a, &n)) (void)madvise((void *)a, n, MADV_DONTNEED);
}

int sq_st_entry_tensor(const sq_st_entry *e, sq_tensor *out) {
    if (e->ndim > SQ_MAX_DIMS) return sq_errorf("tensor '%s' has %d dims (at most %d supported)", e->name, e->ndim, SQ_MAX_DIMS);
    *out = sq_tensor_view((void *)e->data, e->dtype, SQ_CPU, e->ndim, e->shape);
    return SQ_OK;
}

static void shape_str(char *buf, size_t size, int ndim, const int64_t *shape) {
    int n = snprintf(buf, size, "[");
    for (int i = 0; i < ndim && n > 0 && (size_t)n < size; i++) n += snprintf(buf + n, size - (size_t)n, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (n > 0 && (size_t)n < size) snprintf(buf + n, size - (size_t)n, "]");
}

int sq_st_load(const sq_safetensors *st, const char *name, sq_tensor *dst) {
    const sq_st_entry *e = sq_st_find(st, name);
    if (!e) return sq_errorf("missing tensor '%s'", name);
    bool same = e->ndim == dst->ndim;
    for (int i = 0; same && i < e->ndim; i++) same = e->shape[i] == dst->shape[i];
    // a scalar stored as [1] or [] is the same thing
    if (!same && sq_shape_numel(e->ndim, e->shape) == 1 && sq_tensor_numel(dst) == 1) same = true;
    if (!same) {
        char a[128], b[128];
        shape_str(a, sizeof a, e->ndim, e->shape);
        shape_str(b, sizeof b, dst->ndim, dst->shape);
        return sq_errorf("tensor '%s' has shape %s, expected %s", name, a, b);
    }
    sq_tensor src = sq_tensor_view((void *)e->data, e->dtype, SQ_CPU, dst->ndim, dst->shape);
    if (sq_tensor_copy(dst, &src) != SQ_OK) return sq_error_context("tensor '%s'", name);
    return SQ_OK;
}
