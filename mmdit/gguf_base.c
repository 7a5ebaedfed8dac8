// mmdit/gguf_base.c: an SD3.5 MMDiT GGUF as a base (see mmdit/gguf_base.h for the
// two forms and the Q4_0 sign rule). The GGUF stays mapped for the life of the
// returned set: tensors sd-qzo reads as they are point into the mapping, and what
// had to be converted lives in buffers the set owns.
#include "mmdit/gguf_base.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/dtype.h"
#include "core/error.h"
#include "core/gguf.h"
#include "core/log.h"
#include "core/sha256.h"
#include "kernels/quant.h"
#include "mmdit/base_model.h"
#include "mmdit/quantize.h"

#define GGUF_GROUP 32

typedef struct {
    sq_gguf *g;
    void **bufs;
    int n_bufs;
} owner;

static void owner_free(void *p) {
    owner *o = p;
    if (!o) return;
    for (int i = 0; i < o->n_bufs; i++) free(o->bufs[i]);
    free(o->bufs);
    sq_gguf_close(o->g);
    free(o);
}

static void *owned_alloc(owner *o, size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) return NULL;
    void **b = realloc(o->bufs, (size_t)(o->n_bufs + 1) * sizeof *b);
    if (!b) { free(p); return NULL; }
    o->bufs = b;
    o->bufs[o->n_bufs++] = p;
    return p;
}

bool sd_is_gguf_path(const char *path) {
    size_t n = strlen(path);
    if (n >= 5 && !strcasecmp(path + n - 5, ".gguf")) return true;
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    char m[4] = {0};
    bool yes = fread(m, 1, 4, f) == 4 && !memcmp(m, "GGUF", 4);
    fclose(f);
    return yes;
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

// One GGUF tensor that belongs to the MMDiT, with its single-file name.
typedef struct {
    const sq_gguf_tensor *t;
    char name[320];          // "model.diffusion_model.<key>"
    int ndim;
    int64_t shape[SQ_GGUF_MAX_DIMS];   // PyTorch order
    bool linear;             // a joint-block linear (int4 in sd-qzo)
} item;

static int by_item_name(const void *a, const void *b) { return strcmp(((const item *)a)->name, ((const item *)b)->name); }

// Q4_0 rows into sd-qzo codes (element 2i low nibble) and f32 scales, one group per
// block: value (q - 8)·d is code q - 8 (-8..7, int4's range) times scale d, exactly.
// ggml's quantiser maps each block's largest-magnitude weight to q = 0, so about half
// the blocks have d < 0; the scale keeps that sign (the QZO update keeps a scale on
// its side of 0: kernels/quant.h). Returns the blocks with d < 0.
static long long q4_0_to_int4(const uint8_t *src, int64_t rows, int64_t k, uint8_t *codes, float *scales) {
    long long negative = 0;
    int64_t blocks = rows * (k / 32);
    for (int64_t b = 0; b < blocks; b++) {
        const uint8_t *p = src + b * 18;
        uint16_t h;
        memcpy(&h, p, 2);
        scales[b] = sq_f16_to_f32(h);
        negative += scales[b] < 0;
        uint8_t *out = codes + b * 16;
        memset(out, 0, 16);
        for (int j = 0; j < 32; j++) {
            int q = j < 16 ? (p[2 + j] & 0xF) : (p[2 + j - 16] >> 4);
            out[j >> 1] |= (uint8_t)(((q - 8) & 0xF) << ((j & 1) * 4));
        }
    }
    return negative;
}

static void hash_item(sq_sha256 *h, const item *it) {
    sq_sha256_update(h, it->name, strlen(it->name) + 1);
    const char *tn = sq_ggml_type_name(it->t->type);
    sq_sha256_update(h, tn, strlen(tn) + 1);
    for (int d = 0; d < it->ndim; d++) sq_sha256_update(h, &it->shape[d], sizeof it->shape[d]);
    sq_sha256_update(h, it->t->data, it->t->nbytes);
}

int sd_gguf_base_open(const char *path, sq_safetensors **out, bool quiet, sd_gguf_base_report *report) {
    *out = NULL;
    sd_gguf_base_report rep;
    memset(&rep, 0, sizeof rep);
    const char *fname = base_name(path);
    owner *o = calloc(1, sizeof *o);
    if (!o) return sq_errorf("out of host memory");
    if (sq_gguf_open(&o->g, path) != SQ_OK) { owner_free(o); return SQ_FAIL; }
    const sq_gguf *g = o->g;
    const char *arch = sq_gguf_get_string(g, "general.architecture");
    if (arch && strcmp(arch, "sd3")) {
        sq_errorf("%s: general.architecture is '%.40s', not sd3 (an SD3.5 MMDiT GGUF)", fname, arch);
        owner_free(o);   // arch lives in o
        return SQ_FAIL;
    }
    int n = sq_gguf_tensor_count(g), ni = 0, n_linear = 0, n_q4 = 0;
    bool prefixed = false;
    for (int i = 0; i < n; i++)
        if (!strncmp(sq_gguf_tensor_at(g, i)->name, SD_SINGLE_FILE_PREFIX, strlen(SD_SINGLE_FILE_PREFIX))) prefixed = true;
    item *items = calloc((size_t)n + 1, sizeof *items);
    sq_st_entry *entries = calloc((size_t)n * 2 + 1, sizeof *entries);
    char (*names)[340] = calloc((size_t)n * 2 + 1, sizeof *names);
    int rc = SQ_FAIL, ne = 0;
    if (!items || !entries || !names) { sq_errorf("out of host memory"); goto done; }
    for (int i = 0; i < n; i++) {
        const sq_gguf_tensor *t = sq_gguf_tensor_at(g, i);
        // a whole sd.cpp model file also holds the VAE and text encoders: only the
        // diffusion model's tensors are kept when the prefix is used
        if (prefixed && strncmp(t->name, SD_SINGLE_FILE_PREFIX, strlen(SD_SINGLE_FILE_PREFIX))) continue;
        item *it = &items[ni++];
        it->t = t;
        const char *key = prefixed ? t->name + strlen(SD_SINGLE_FILE_PREFIX) : t->name;
        snprintf(it->name, sizeof it->name, SD_SINGLE_FILE_PREFIX "%s", key);
        it->ndim = t->n_dims;
        for (int d = 0; d < t->n_dims; d++) it->shape[d] = t->ne[t->n_dims - 1 - d];
        sd_qlayer_kind kind;
        it->linear = sd_mmdit_should_quantize(it->name, it->ndim, it->shape, GGUF_GROUP, &kind);
        n_linear += it->linear;
        n_q4 += it->linear && t->type == SQ_GGML_Q4_0;
    }
    if (n_linear == 0) {
        sq_errorf("%s: no joint-block linear weights (joint_blocks.N.…) found: not an SD3.5 MMDiT GGUF", fname);
        goto done;
    }
    qsort(items, (size_t)ni, sizeof *items, by_item_name);
    bool int4 = n_q4 > 0;
    for (int i = 0; i < ni; i++) {
        const item *it = &items[i];
        const sq_gguf_tensor *t = it->t;
        int64_t numel = 1;
        for (int d = 0; d < it->ndim; d++) numel *= it->shape[d];
        sq_st_entry e = {.name = it->name, .ndim = it->ndim};
        memcpy(e.shape, it->shape, sizeof it->shape);
        if (int4 && it->linear) {
            int64_t rows = it->shape[0], k = it->shape[1];
            uint8_t *codes = owned_alloc(o, (size_t)(rows * k / 2));
            float *scales = owned_alloc(o, (size_t)(rows * (k / GGUF_GROUP)) * sizeof(float));
            if (!codes || !scales) { sq_errorf("out of host memory for '%s'", t->name); goto done; }
            if (t->type == SQ_GGML_Q4_0) {
                rep.negative_blocks += q4_0_to_int4(t->data, rows, k, codes, scales);
                rep.codes += rows * k;
                rep.q4_layers++;
            } else {
                float *w = malloc((size_t)numel * sizeof(float));
                if (!w) { sq_errorf("out of host memory for '%s'", t->name); goto done; }
                if (sq_ggml_dequantize(t->type, t->data, numel, w) != SQ_OK) { free(w); goto done; }
                sq_quantize_q4(w, rows, k, GGUF_GROUP, codes, scales);
                free(w);
                rep.requantized++;
            }
            snprintf(names[ne], sizeof names[ne], "%s" SD_Q4_CODES_SUFFIX, it->name);
            entries[ne] = (sq_st_entry){.name = names[ne], .dtype = SQ_U8, .ndim = 2, .shape = {rows, k / 2},
                                        .data = codes, .nbytes = (size_t)(rows * k / 2)};
            ne++;
            snprintf(names[ne], sizeof names[ne], "%s" SD_Q4_SCALES_SUFFIX, it->name);
            entries[ne] = (sq_st_entry){.name = names[ne], .dtype = SQ_F32, .ndim = 2, .shape = {rows, k / GGUF_GROUP},
                                        .data = scales, .nbytes = (size_t)(rows * (k / GGUF_GROUP)) * sizeof(float)};
            ne++;
            continue;
        }
        if (t->type == SQ_GGML_F32 || t->type == SQ_GGML_F16 || t->type == SQ_GGML_BF16) {
            e.dtype = t->type == SQ_GGML_F32 ? SQ_F32 : t->type == SQ_GGML_F16 ? SQ_F16 : SQ_BF16;
            e.data = t->data;
            e.nbytes = t->nbytes;
        } else {
            float *w = owned_alloc(o, (size_t)numel * sizeof(float));
            if (!w) { sq_errorf("out of host memory for '%s'", t->name); goto done; }
            if (sq_ggml_dequantize(t->type, t->data, numel, w) != SQ_OK) { sq_error_context("%s: tensor '%s'", fname, t->name); goto done; }
            e.dtype = SQ_F32;
            e.data = w;
            e.nbytes = (size_t)numel * sizeof(float);
            rep.dequantized++;
        }
        snprintf(names[ne], sizeof names[ne], "%s", it->name);
        e.name = names[ne];
        entries[ne++] = e;
    }
    char hex[65] = "";
    if (int4) {
        sq_sha256 h;
        sq_sha256_init(&h);
        for (int i = 0; i < ni; i++) hash_item(&h, &items[i]);
        uint8_t digest[32];
        sq_sha256_final(&h, digest);
        sq_sha256_hex(digest, hex);
    }
    char group_s[8];
    snprintf(group_s, sizeof group_s, "%d", GGUF_GROUP);
    sq_st_kv meta[6] = {{"sd_qzo.format", SD_Q4_FORMAT}, {"sd_qzo.group_size", group_s}, {"sd_qzo.source_sha256", hex},
                        {"sd_qzo.layout", "single-file"}, {"sd_qzo.source", path},         {"sd_qzo.config", "{}"}};
    if (!quiet) {
        if (rep.q4_layers)
            sq_log_info("%s: %d Q4_0 tensors carried over exactly as int4 at group 32 (%lld codes; %lld blocks have a "
                        "negative scale, which training keeps negative)", fname, rep.q4_layers, rep.codes, rep.negative_blocks);
        if (rep.requantized)
            sq_log_info("%s: %d linears of other types dequantised and re-quantised to int4 at group 32", fname, rep.requantized);
        if (rep.dequantized)
            sq_log_info("%s: %d quantised tensors dequantised to f32%s", fname, rep.dequantized,
                        int4 ? "" : " (the linears are quantised to int4 again as for any dense base)");
    }
    // the set owns o from here, whatever happens
    rc = sq_st_from_entries(out, path, entries, ne, meta, int4 ? 6 : 0, o, owner_free);
    o = NULL;
    if (report) *report = rep;
done:
    owner_free(o);
    free(items);
    free(entries);
    free(names);
    return rc;
}
