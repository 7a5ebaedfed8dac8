// mmdit/base_model.c: finding, opening and hashing a base MMDiT (see mmdit/base_model.h).
#include "mmdit/base_model.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/path.h"
#include "core/sha256.h"
#include "mmdit/gguf_base.h"

int sd_base_open(const char *model, sd_base_model *b, sq_safetensors **out) {
    memset(b, 0, sizeof *b);
    *out = NULL;
    if (sq_is_dir(model)) {
        char p[4200];
        snprintf(p, sizeof p, "%s/transformer", model);
        const char *dir = sq_is_dir(p) ? p : model;
        if ((size_t)snprintf(b->weights, sizeof b->weights, "%s", dir) >= sizeof b->weights ||
            (size_t)snprintf(b->config, sizeof b->config, "%s/config.json", dir) >= sizeof b->config)
            return sq_errorf("%s: path too long", dir);
        if (!sq_is_file(b->config)) return sq_errorf("%s: no config.json (expected a diffusers SD3 transformer directory)", dir);
        return sq_st_open(out, b->weights);
    }
    if (!sq_is_file(model)) return sq_errorf("%s: no such file or directory", model);
    if ((size_t)snprintf(b->weights, sizeof b->weights, "%s", model) >= sizeof b->weights) return sq_errorf("%s: path too long", model);
    if (sd_is_gguf_path(model) ? sd_gguf_base_open(model, out, false, NULL) : sq_st_open(out, model)) return SQ_FAIL;
    sd_q4_header h;
    if (sd_q4_header_read(*out, model, &h) != SQ_OK) {
        sq_st_close(*out);
        *out = NULL;
        return SQ_FAIL;
    }
    b->single_file = h.single_file;
    b->quantized = h.quantized;
    b->group = h.group;
    return SQ_OK;
}

int sd_base_st_open(const char *path, sq_safetensors **st) {
    if (!sq_is_dir(path) && sd_is_gguf_path(path)) return sd_gguf_base_open(path, st, true, NULL);
    return sq_st_open(st, path);
}

int sd_q4_header_read(const sq_safetensors *st, const char *path, sd_q4_header *h) {
    memset(h, 0, sizeof *h);
    const char *fmt = sq_st_metadata(st, "sd_qzo.format");
    const char *layout = sq_st_metadata(st, "sd_qzo.layout");
    h->single_file = !(fmt && layout && !strcmp(layout, "diffusers"));
    if (!fmt) return SQ_OK;
    const char *group = sq_st_metadata(st, "sd_qzo.group_size");
    h->quantized = true;
    h->source_sha256 = sq_st_metadata(st, "sd_qzo.source_sha256");
    h->config = sq_st_metadata(st, "sd_qzo.config");
    // every number of the header is checked here, strictly, before anyone uses it
    if (strcmp(fmt, SD_Q4_FORMAT)) return sq_errorf("%s: unknown sd-qzo format '%.40s' (expected %s)", path, fmt, SD_Q4_FORMAT);
    char *end = NULL;
    errno = 0;
    long g = group ? strtol(group, &end, 10) : 0;
    if (!group || end == group || *end || errno || !isdigit((unsigned char)group[0]) || (g != 32 && g != 64 && g != 128))
        return sq_errorf("%s: sd_qzo.group_size is '%.40s', not 32, 64 or 128", path, group ? group : "(missing)");
    h->group = (int)g;
    return SQ_OK;
}

bool sd_base_keep_tensor(const char *name, bool single_file) {
    return !single_file || !strncmp(name, SD_SINGLE_FILE_PREFIX, strlen(SD_SINGLE_FILE_PREFIX));
}

static void hash_entry(sq_sha256 *h, const sq_st_entry *e) {
    sq_sha256_update(h, e->name, strlen(e->name) + 1);
    const char *dt = sq_dtype_to_safetensors(e->dtype);
    sq_sha256_update(h, dt, strlen(dt) + 1);
    for (int d = 0; d < e->ndim; d++) {
        int64_t v = e->shape[d];
        sq_sha256_update(h, &v, sizeof v);
    }
    sq_sha256_update(h, e->data, e->nbytes);
}

void sd_base_source_sha256(const sq_safetensors *st, bool single_file, char hex[65]) {
    sq_sha256 hash;
    sq_sha256_init(&hash);
    for (int i = 0; i < sq_st_count(st); i++) {   // sq_st_at is in name order
        const sq_st_entry *e = sq_st_at(st, i);
        if (!sd_base_keep_tensor(e->name, single_file)) continue;
        hash_entry(&hash, e);
        sq_st_entry_release(st, e);   // a 16 GB checkpoint must not stay resident (re-read on use)
    }
    uint8_t digest[32];
    sq_sha256_final(&hash, digest);
    sq_sha256_hex(digest, hex);
}

int sd_base_sha256(const sd_base_model *b, const sq_safetensors *st, char hex[65]) {
    if (!b->quantized) {
        sd_base_source_sha256(st, b->single_file, hex);
        return SQ_OK;
    }
    sd_q4_header h;
    if (sd_q4_header_read(st, b->weights, &h) != SQ_OK) return SQ_FAIL;
    if (!h.source_sha256 || strlen(h.source_sha256) != 64)
        return sq_errorf("%s: quantised file lacks its sd_qzo.source_sha256", b->weights);
    snprintf(hex, 65, "%s", h.source_sha256);
    return SQ_OK;
}
