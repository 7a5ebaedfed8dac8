// datasets/cache.c: the on-disk cache of encoder outputs (see cache.h). Entries
// are ordinary safetensors files; anything wrong with one is a miss, never a crash.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/path.h"
#include "core/log.h"
#include "core/safetensors.h"
#include "core/sha256.h"
#include "datasets/cache.h"

// Bump when the entry layout or the meaning of a key part changes: old entries then
// simply stop matching.
#define KEY_VERSION "sd-qzo-cache-v1"
#define META_KEY "sd_qzo_cache_key"

struct sd_cache {
    char *dir;
};

// Key parts are "name=value\n" lines; values with a newline cannot collide with
// another layout because every value is length-prefixed.
static void put(sq_sha256 *s, const char *name, const char *value) {
    char len[32];
    snprintf(len, sizeof(len), "%zu:", strlen(value));
    sq_sha256_update(s, name, strlen(name));
    sq_sha256_update(s, "=", 1);
    sq_sha256_update(s, len, strlen(len));
    sq_sha256_update(s, value, strlen(value));
    sq_sha256_update(s, "\n", 1);
}

static void finish(sq_sha256 *s, sd_cache_key *key) {
    uint8_t d[32];
    sq_sha256_final(s, d);
    sq_sha256_hex(d, key->hex);
}

// The output size, the crop window and the flip of an image (or of its mask). The
// window is part of the key in both modes: a centre crop of the same file and size is
// always the same window, a random one only hits when it repeats.
static void put_geometry(sq_sha256 *s, const sd_crop_plan *p, sd_crop_mode crop) {
    char buf[96];
    snprintf(buf, sizeof(buf), "%dx%d", p->out_w, p->out_h);
    put(s, "size", buf);
    snprintf(buf, sizeof(buf), "%s %dx%d+%d+%d", crop == SD_CROP_RANDOM ? "random" : "center", p->resized_w,
             p->resized_h, p->crop_x, p->crop_y);
    put(s, "crop", buf);
    put(s, "flip", p->flip ? "1" : "0");
}

void sd_cache_key_latent(sd_cache_key *key, const char *image_sha256, const sd_crop_plan *p, sd_crop_mode crop,
                         const char *encoder_hash) {
    sq_sha256 s;
    sq_sha256_init(&s);
    put(&s, "version", KEY_VERSION);
    put(&s, "kind", "latent");
    put(&s, "image", image_sha256);
    put_geometry(&s, p, crop);
    put(&s, "encoder", encoder_hash ? encoder_hash : "");
    finish(&s, key);
}

void sd_cache_key_mask(sd_cache_key *key, const char *source_sha256, bool alpha, const sd_crop_plan *p, sd_crop_mode crop,
                       int factor) {
    sq_sha256 s;
    char buf[96];
    sq_sha256_init(&s);
    put(&s, "version", KEY_VERSION);
    put(&s, "kind", "mask");
    put(&s, alpha ? "alpha-of-image" : "mask-file", source_sha256);
    put_geometry(&s, p, crop);
    snprintf(buf, sizeof(buf), "%d", factor);
    put(&s, "factor", buf);
    finish(&s, key);
}

void sd_cache_key_text(sd_cache_key *key, const char *caption, const char *encoder_hash) {
    sq_sha256 s;
    sq_sha256_init(&s);
    put(&s, "version", KEY_VERSION);
    put(&s, "kind", "text");
    put(&s, "caption", caption);
    put(&s, "encoder", encoder_hash ? encoder_hash : "");
    finish(&s, key);
}

int sd_cache_open(sd_cache **out, const char *dir) {
    *out = NULL;
    if (!dir || !*dir) return sq_errorf("no cache folder given");
    if (sq_mkdirs(dir)) return sq_error_context("cache");
    sd_cache *c = sq_calloc(1, sizeof(*c));
    if (!c) return SQ_FAIL;
    c->dir = strdup(dir);
    if (!c->dir) {
        free(c);
        return sq_errorf("out of memory");
    }
    *out = c;
    return SQ_OK;
}

void sd_cache_close(sd_cache *c) {
    if (!c) return;
    free(c->dir);
    free(c);
}

void sd_cache_entry_path(const sd_cache *c, const sd_cache_key *key, char *buf, size_t size) {
    snprintf(buf, size, "%s/%.2s/%s.safetensors", c->dir, key->hex, key->hex);
}

bool sd_cache_exists(const sd_cache *c, const sd_cache_key *key) {
    char path[4096];
    sd_cache_entry_path(c, key, path, sizeof(path));
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

// A bad entry: warn with the reason, remove it so the next store rewrites it.
static void discard(const char *path) {
    sq_log_warn("%s: unusable cache entry (%s); treating it as a miss and removing it", path, sq_error_message());
    if (unlink(path) != 0 && errno != ENOENT) sq_log_warn("%s: cannot remove (%s)", path, strerror(errno));
    sq_error_clear();
}

int sd_cache_load(sd_cache *c, const sd_cache_key *key, const sd_cache_item *items, int n, bool *hit) {
    *hit = false;
    if (n <= 0 || !items) return sq_errorf("cache load: no tensors asked for");
    char path[4096];
    sd_cache_entry_path(c, key, path, sizeof(path));
    struct stat st;
    if (stat(path, &st) != 0) return SQ_OK;   // plain miss
    sq_safetensors *f = NULL;
    if (sq_st_open(&f, path)) {
        discard(path);
        return SQ_OK;
    }
    const char *stored = sq_st_metadata(f, META_KEY);
    int rc = SQ_OK;
    if (!stored || strcmp(stored, key->hex) != 0) rc = sq_errorf("stored key does not match the file name");
    for (int i = 0; i < n && rc == SQ_OK; i++) {
        if (!sq_st_find(f, items[i].name))
            rc = sq_errorf("no tensor '%s'", items[i].name);
        else
            rc = sq_st_load(f, items[i].name, items[i].tensor);
    }
    sq_st_close(f);
    if (rc != SQ_OK) {
        discard(path);
        return SQ_OK;
    }
    *hit = true;
    return SQ_OK;
}

int sd_cache_store(sd_cache *c, const sd_cache_key *key, const sd_cache_item *items, int n) {
    if (n <= 0 || !items) return sq_errorf("cache store: no tensors given");
    char path[4096], sub[4096];
    sd_cache_entry_path(c, key, path, sizeof(path));
    snprintf(sub, sizeof(sub), "%s/%.2s", c->dir, key->hex);
    if (sq_mkdirs(sub)) return sq_error_context("cache");
    sq_st_tensor_desc *desc = sq_calloc((size_t)n, sizeof(*desc));
    sq_tensor *host = sq_calloc((size_t)n, sizeof(*host));   // copies of device tensors
    int rc = desc && host ? SQ_OK : SQ_FAIL;
    for (int i = 0; i < n && rc == SQ_OK; i++) {
        const sq_tensor *t = items[i].tensor;
        desc[i].name = items[i].name;
        desc[i].dtype = t->dtype;
        desc[i].ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) desc[i].shape[d] = t->shape[d];
        desc[i].data = t->data;
        if (t->device != SQ_CPU) {
            rc = sq_tensor_alloc(&host[i], t->dtype, SQ_CPU, t->ndim, t->shape);
            if (rc == SQ_OK) rc = sq_tensor_copy(&host[i], t);
            desc[i].data = host[i].data;
        }
    }
    const sq_st_kv meta[] = {{META_KEY, key->hex}, {"sd_qzo_cache_version", KEY_VERSION}};
    if (rc == SQ_OK) rc = sq_st_write(path, desc, n, meta, 2);
    for (int i = 0; host && i < n; i++) sq_tensor_free(&host[i]);
    free(host);
    free(desc);
    return rc == SQ_OK ? SQ_OK : sq_error_context("storing cache entry %s", path);
}
