// mmdit/load.c: loading the MMDiT's weights. Every tensor is asked for by its
// diffusers name; in a single-file checkpoint mmdit/keymap.c says where it lives
// (fused qkv rows are split, swapped adaLN halves put back). Each tensor is widened
// to f32 on the host, then stored in the model's dtype on its device, one at a
// time, so host memory stays at one tensor whatever the checkpoint size.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/path.h"
#include "core/log.h"
#include "mmdit/base_model.h"
#include "mmdit/forward_graph.h"
#include "mmdit/keymap.h"
#include "mmdit/model.h"
#include "mmdit/quantize.h"

typedef struct {
    sq_safetensors *st;
    bool single;
    bool quantized;   // a file written by `sd-qzo quantize`: X.weight.q4 + X.weight.scales
    int group;
    uint64_t synthetic_seed;  // non-zero: no file; random weights (benchmarks), int4 if quantized
    int num_layers;
    sq_device device;
    sq_dtype dtype;
    const char *origin;
} loader;

static void shape_str(char *buf, size_t size, int ndim, const int64_t *shape) {
    int n = snprintf(buf, size, "[");
    for (int i = 0; i < ndim && n > 0 && (size_t)n < size; i++)
        n += snprintf(buf + n, size - (size_t)n, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (n > 0 && (size_t)n < size) snprintf(buf + n, size - (size_t)n, "]");
}

// Shapes equal once leading 1s are dropped (pos_embed is stored as (1, N, D)).
static bool same_shape(int na, const int64_t *a, int nb, const int64_t *b) {
    while (na > 0 && a[0] == 1 && na > nb) { a++; na--; }
    while (nb > 0 && b[0] == 1 && nb > na) { b++; nb--; }
    if (na != nb) return false;
    for (int i = 0; i < na; i++)
        if (a[i] != b[i]) return false;
    return true;
}

// The checkpoint key holding diffusers tensor `dkey` (and, for a single file, which
// third of a fused qkv and whether the halves are swapped).
static int resolve(const loader *L, const char *dkey, char *key, size_t size, sd_single_file_key *sk) {
    sk->part = -1;
    sk->swap_halves = false;
    if (!L->single) {
        snprintf(key, size, "%s", dkey);
        return SQ_OK;
    }
    if (!sd_mmdit_single_file_key(dkey, L->num_layers, sk)) return sq_errorf("%s: no single-file key for '%s'", L->origin, dkey);
    snprintf(key, size, SD_SINGLE_FILE_PREFIX "%s", sk->key);
    return SQ_OK;
}

static uint64_t next_random(uint64_t *s) {
    *s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

// Random values of a realistic scale: ±1/sqrt(fan-in) for matrices, near 1 for
// norm weights, small for biases. `lo`/`hi` override the range when hi > lo.
static int fill_random(loader *L, const char *dkey, sq_tensor *dst, sq_dtype dtype, int ndim, const int64_t *shape,
                       float lo, float hi) {
    if (sq_tensor_alloc(dst, dtype, L->device, ndim, shape) != SQ_OK) return SQ_FAIL;
    int64_t n = sq_tensor_numel(dst);
    uint64_t s = L->synthetic_seed;
    for (const char *c = dkey; *c; c++) s = s * 1099511628211ull ^ (uint64_t)(unsigned char)*c;
    if (dtype == SQ_Q4) {   // random codes in [-7, 7]
        size_t bytes = sq_tensor_nbytes(dst);
        uint8_t *b = malloc(bytes);
        if (!b) return sq_errorf("out of host memory");
        for (size_t i = 0; i < bytes; i++) {
            uint64_t r = next_random(&s);
            int lo4 = (int)(r % 15) - 7, hi4 = (int)((r >> 8) % 15) - 7;
            b[i] = (uint8_t)((lo4 & 0xf) | ((hi4 & 0xf) << 4));
        }
        sq_tensor view = sq_tensor_view(b, SQ_Q4, SQ_CPU, ndim, shape);
        int rc = sq_tensor_copy(dst, &view);
        free(b);
        return rc;
    }
    float *h = malloc((size_t)n * sizeof(float) + 1);
    if (!h) return sq_errorf("out of host memory");
    bool norm = strstr(dkey, "norm") && ndim == 1;
    float r = ndim > 1 ? 1.0f / sqrtf((float)(n / shape[0])) : 0.02f;
    for (int64_t i = 0; i < n; i++) {
        float u = (float)(next_random(&s) >> 40) / 16777216.0f;
        h[i] = hi > lo ? lo + (hi - lo) * u : norm ? 1.0f + 0.1f * (2 * u - 1) : r * (2 * u - 1);
    }
    int rc = sq_tensor_from_host_f32(dst, h);
    free(h);
    return rc;
}

// Allocates dst (shape, model dtype/device) and fills it from the checkpoint.
static int load_tensor(loader *L, const char *dkey, sq_tensor *dst, int ndim, const int64_t *shape) {
    if (L->synthetic_seed) return fill_random(L, dkey, dst, L->dtype, ndim, shape, 0, 0);
    char key[400];
    sd_single_file_key sk;
    if (resolve(L, dkey, key, sizeof key, &sk) != SQ_OK) return SQ_FAIL;
    const sq_st_entry *e = sq_st_find(L->st, key);
    if (!e) return sq_errorf("%s: missing tensor '%s'", L->origin, key);
    if (e->dtype != SQ_F32 && e->dtype != SQ_BF16 && e->dtype != SQ_F16)
        return sq_errorf("%s: tensor '%s' is %s; expected F32, BF16 or F16", L->origin, key, sq_dtype_to_safetensors(e->dtype));
    int64_t want[SQ_ST_MAX_DIMS];
    for (int i = 0; i < ndim; i++) want[i] = shape[i];
    if (sk.part >= 0) want[0] *= 3;   // a fused qkv tensor holds three of these
    if (!same_shape(e->ndim, e->shape, ndim, want)) {
        char a[128], b[128];
        shape_str(a, sizeof a, e->ndim, e->shape);
        shape_str(b, sizeof b, ndim, want);
        return sq_errorf("%s: tensor '%s' has shape %s, expected %s", L->origin, key, a, b);
    }
    if (sq_tensor_alloc(dst, L->dtype, L->device, ndim, shape) != SQ_OK) return sq_error_context("loading '%s'", key);
    int64_t n = sq_tensor_numel(dst);
    float *buf = malloc((size_t)n * sizeof(float) + 1);
    if (!buf) return sq_errorf("out of host memory loading '%s'", key);
    int64_t first = sk.part >= 0 ? sk.part * n : 0;
    const char *src = (const char *)e->data + sq_dtype_bytes(e->dtype, first);
    sq_convert_to_f32(buf, src, e->dtype, n);
    if (sk.swap_halves) {
        for (int64_t i = 0; i < n / 2; i++) {
            float t = buf[i];
            buf[i] = buf[i + n / 2];
            buf[i + n / 2] = t;
        }
    }
    int rc = sq_tensor_from_host_f32(dst, buf);
    free(buf);
    return rc == SQ_OK ? SQ_OK : sq_error_context("loading '%s'", key);
}

// Copies rows [part*rows, (part+1)*rows) of a stored 2-D tensor byte for byte
// (halves of the rows swapped if asked) into dst, which has `rows` rows.
static int load_rows_raw(loader *L, const char *key, const sd_single_file_key *sk, sq_tensor *dst, sq_dtype stored) {
    const sq_st_entry *e = sq_st_find(L->st, key);
    if (!e) return sq_errorf("%s: missing tensor '%s'", L->origin, key);
    int64_t rows = dst->shape[0], nparts = sk->part >= 0 ? 3 : 1;
    size_t row_bytes = sq_tensor_nbytes(dst) / (size_t)rows;
    if (e->dtype != stored || e->ndim != 2 || e->shape[0] != rows * nparts || e->nbytes != row_bytes * (size_t)(rows * nparts))
        return sq_errorf("%s: tensor '%s' does not have the %s shape this model needs", L->origin, key, sq_dtype_to_safetensors(stored));
    const uint8_t *src = (const uint8_t *)e->data + (size_t)(sk->part >= 0 ? sk->part : 0) * row_bytes * (size_t)rows;
    uint8_t *buf = malloc(row_bytes * (size_t)rows + 1);
    if (!buf) return sq_errorf("out of host memory loading '%s'", key);
    if (sk->swap_halves) {
        size_t half = row_bytes * (size_t)(rows / 2);
        memcpy(buf, src + half, half);
        memcpy(buf + half, src, half);
    } else {
        memcpy(buf, src, row_bytes * (size_t)rows);
    }
    sq_tensor view = sq_tensor_view(buf, dst->dtype, SQ_CPU, dst->ndim, dst->shape);
    int rc = sq_tensor_copy(dst, &view);
    free(buf);
    return rc;
}

// The int4 codes + scales of a quantised file for linear `dprefix`.
static int load_quantized(loader *L, const char *dprefix, sq_linear *l, int64_t out, int64_t in) {
    char dkey[320], key[400], k2[420];
    sd_single_file_key sk;
    snprintf(dkey, sizeof dkey, "%.300s.weight", dprefix);
    if (resolve(L, dkey, key, sizeof key, &sk) != SQ_OK) return SQ_FAIL;
    if (in % L->group) return sq_errorf("%s: '%s' has %lld inputs, not a multiple of the group size %d", L->origin, key, (long long)in, L->group);
    if (sq_tensor_alloc(&l->codes, SQ_Q4, L->device, 2, (int64_t[]){out, in}) != SQ_OK ||
        sq_tensor_alloc(&l->scales, SQ_F32, L->device, 2, (int64_t[]){out, in / L->group}) != SQ_OK)
        return SQ_FAIL;
    snprintf(k2, sizeof k2, "%s" SD_Q4_CODES_SUFFIX, key);
    if (load_rows_raw(L, k2, &sk, &l->codes, SQ_U8) != SQ_OK) return SQ_FAIL;
    snprintf(k2, sizeof k2, "%s" SD_Q4_SCALES_SUFFIX, key);
    if (load_rows_raw(L, k2, &sk, &l->scales, SQ_F32) != SQ_OK) return SQ_FAIL;
    l->group = L->group;
    return SQ_OK;
}

static bool has_quantized(loader *L, const char *dprefix) {
    char dkey[320], key[400], k2[420];
    sd_single_file_key sk;
    snprintf(dkey, sizeof dkey, "%.300s.weight", dprefix);
    if (!L->quantized || !L->st || resolve(L, dkey, key, sizeof key, &sk) != SQ_OK) return false;
    snprintf(k2, sizeof k2, "%s" SD_Q4_CODES_SUFFIX, key);
    return sq_st_find(L->st, k2) != NULL;
}

static int load_linear(loader *L, const char *dprefix, sq_linear *l, int64_t out, int64_t in) {
    char k[320];
    memset(l, 0, sizeof *l);
    if (L->synthetic_seed && L->quantized && !strncmp(dprefix, "transformer_blocks.", 19) && in % L->group == 0) {
        // synthetic int4: random codes, scales around absmax/7 of a ±1/sqrt(K) weight
        float s = 1.0f / sqrtf((float)in) / 7.0f;
        snprintf(k, sizeof k, "%.300s.codes", dprefix);
        if (fill_random(L, k, &l->codes, SQ_Q4, 2, (int64_t[]){out, in}, 0, 0)) return SQ_FAIL;
        snprintf(k, sizeof k, "%.300s.scales", dprefix);
        if (fill_random(L, k, &l->scales, SQ_F32, 2, (int64_t[]){out, in / L->group}, 0.5f * s, 1.5f * s)) return SQ_FAIL;
        l->group = L->group;
        snprintf(k, sizeof k, "%.300s.bias", dprefix);
        return load_tensor(L, k, &l->b, 1, (int64_t[]){out});
    }
    if (has_quantized(L, dprefix)) {
        if (load_quantized(L, dprefix, l, out, in) != SQ_OK) return SQ_FAIL;
        snprintf(k, sizeof k, "%.300s.bias", dprefix);
        return load_tensor(L, k, &l->b, 1, (int64_t[]){out});
    }
    snprintf(k, sizeof k, "%.300s.weight", dprefix);
    if (load_tensor(L, k, &l->w, 2, (int64_t[]){out, in}) != SQ_OK) return SQ_FAIL;
    snprintf(k, sizeof k, "%.300s.bias", dprefix);
    return load_tensor(L, k, &l->b, 1, (int64_t[]){out});
}

static int load_vec(loader *L, const char *dkey, sq_tensor *t, int64_t n) { return load_tensor(L, dkey, t, 1, (int64_t[]){n}); }

static int load_block(loader *L, const sd_mmdit_config *c, int i, sd_mmdit_block *b) {
    int64_t D = c->hidden, HS = c->head_dim;
    char p[300];
    b->context_pre_only = i == c->num_layers - 1;
    b->dual = c->dual[i];
#define PFX(s) (snprintf(p, sizeof p, "transformer_blocks.%d.%s", i, s), p)
    if (load_linear(L, PFX("norm1.linear"), &b->norm1, (b->dual ? 9 : 6) * D, D) ||
        load_linear(L, PFX("norm1_context.linear"), &b->norm1_context, (b->context_pre_only ? 2 : 6) * D, D) ||
        load_linear(L, PFX("attn.to_q"), &b->to_q, D, D) || load_linear(L, PFX("attn.to_k"), &b->to_k, D, D) ||
        load_linear(L, PFX("attn.to_v"), &b->to_v, D, D) || load_linear(L, PFX("attn.to_out.0"), &b->to_out, D, D) ||
        load_linear(L, PFX("attn.add_q_proj"), &b->add_q, D, D) ||
        load_linear(L, PFX("attn.add_k_proj"), &b->add_k, D, D) ||
        load_linear(L, PFX("attn.add_v_proj"), &b->add_v, D, D) ||
        load_linear(L, PFX("ff.net.0.proj"), &b->ff1, 4 * D, D) || load_linear(L, PFX("ff.net.2"), &b->ff2, D, 4 * D))
        return SQ_FAIL;
    if (!b->context_pre_only &&
        (load_linear(L, PFX("attn.to_add_out"), &b->to_add_out, D, D) ||
         load_linear(L, PFX("ff_context.net.0.proj"), &b->ff_context1, 4 * D, D) ||
         load_linear(L, PFX("ff_context.net.2"), &b->ff_context2, D, 4 * D)))
        return SQ_FAIL;
    if (c->qk_norm &&
        (load_vec(L, PFX("attn.norm_q.weight"), &b->norm_q, HS) || load_vec(L, PFX("attn.norm_k.weight"), &b->norm_k, HS) ||
         load_vec(L, PFX("attn.norm_added_q.weight"), &b->norm_added_q, HS) ||
         load_vec(L, PFX("attn.norm_added_k.weight"), &b->norm_added_k, HS)))
        return SQ_FAIL;
    if (b->dual) {
        if (load_linear(L, PFX("attn2.to_q"), &b->attn2_q, D, D) || load_linear(L, PFX("attn2.to_k"), &b->attn2_k, D, D) ||
            load_linear(L, PFX("attn2.to_v"), &b->attn2_v, D, D) || load_linear(L, PFX("attn2.to_out.0"), &b->attn2_out, D, D))
            return SQ_FAIL;
        if (c->qk_norm && (load_vec(L, PFX("attn2.norm_q.weight"), &b->attn2_norm_q, HS) ||
                           load_vec(L, PFX("attn2.norm_k.weight"), &b->attn2_norm_k, HS)))
            return SQ_FAIL;
    }
#undef PFX
    return SQ_OK;
}

static int load_weights(loader *L, sd_mmdit *m);

int sd_mmdit_init_synthetic(sd_mmdit *m, const sd_mmdit_config *cfg, sq_device device, sq_dtype dtype, int group,
                            uint64_t seed) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->device = device;
    m->dtype = dtype;
    loader L = {.device = device, .dtype = dtype, .origin = "synthetic", .num_layers = cfg->num_layers,
                .quantized = group > 0, .group = group, .synthetic_seed = seed ? seed : 1};
    if (load_weights(&L, m) != SQ_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", sq_error_message());
        sd_mmdit_free(m);
        return sq_errorf("%s", msg);
    }
    if (group > 0) sd_mmdit_assign_scale_indices(m);
    return SQ_OK;
}

static int load_weights(loader *L, sd_mmdit *m) {
    const sd_mmdit_config *c = &m->cfg;
    int64_t D = c->hidden, p = c->patch_size;
    int rc = SQ_FAIL;
    m->blocks = calloc((size_t)c->num_layers, sizeof *m->blocks);
    if (!m->blocks) { sq_errorf("out of host memory"); goto done; }
    m->linear_order = sq_linear_order_new();   // NULL only costs the prefetching
    m->graphs = sd_forward_graphs_new();       // NULL: every pass runs op by op
    if (load_tensor(L, "pos_embed.proj.weight", &m->patch_w, 4, (int64_t[]){D, c->in_channels, p, p}) ||
        load_vec(L, "pos_embed.proj.bias", &m->patch_b, D) ||
        load_tensor(L, "pos_embed.pos_embed", &m->pos_embed, 2,
                    (int64_t[]){(int64_t)c->pos_embed_max_size * c->pos_embed_max_size, D}) ||
        load_linear(L, "time_text_embed.timestep_embedder.linear_1", &m->t_linear1, D, 256) ||
        load_linear(L, "time_text_embed.timestep_embedder.linear_2", &m->t_linear2, D, D) ||
        load_linear(L, "time_text_embed.text_embedder.linear_1", &m->y_linear1, D, c->pooled_projection_dim) ||
        load_linear(L, "time_text_embed.text_embedder.linear_2", &m->y_linear2, D, D) ||
        load_linear(L, "context_embedder", &m->context_embedder, D, c->joint_attention_dim) ||
        load_linear(L, "norm_out.linear", &m->norm_out, 2 * D, D) ||
        load_linear(L, "proj_out", &m->proj_out, p * p * c->out_channels, D))
        goto done;
    for (int i = 0; i < c->num_layers; i++)
        if (load_block(L, c, i, &m->blocks[i]) != SQ_OK) goto done;
    rc = SQ_OK;
done:
    return rc;
}

// The config of a single file: from the int4 header's metadata, or inferred from a
// Stability single file's tensor shapes.
static int file_config(sd_mmdit_config *c, const sq_safetensors *st, const char *path) {
    sd_q4_header h;
    if (sd_q4_header_read(st, path, &h) != SQ_OK) return SQ_FAIL;
    if (h.single_file) return sd_mmdit_config_infer(c, st, SD_SINGLE_FILE_PREFIX);
    sq_config *j = NULL;
    int rc = sq_config_parse(&j, h.config ? h.config : "", path);
    if (rc == SQ_OK) rc = sd_mmdit_config_parse(c, j, path);
    sq_config_free(j);
    return rc;
}

// The transformer folder of a pipeline or transformer folder, and its config.json.
static int folder_config_path(const char *path, char *dir, size_t dsize, char *cfg, size_t csize) {
    snprintf(dir, dsize, "%s/transformer", path);
    if (!sq_is_dir(dir)) snprintf(dir, dsize, "%s", path);
    snprintf(cfg, csize, "%s/config.json", dir);
    if (!sq_is_file(cfg)) return sq_errorf("%s: no transformer/config.json or config.json (not a diffusers SD3 folder)", path);
    return SQ_OK;
}

void sd_mmdit_config_origin(const char *path, char *out, size_t size) {
    char dir[4096];
    if (sq_is_dir(path) && folder_config_path(path, dir, sizeof dir, out, size) == SQ_OK) return;
    snprintf(out, size, "%s", path);
}

int sd_mmdit_config_read(sd_mmdit_config *c, const char *path) {
    char dir[4096], cfg_path[4200];
    if (sq_is_dir(path)) {
        if (folder_config_path(path, dir, sizeof dir, cfg_path, sizeof cfg_path) != SQ_OK) return SQ_FAIL;
        return sd_mmdit_config_load(c, cfg_path);
    }
    sq_safetensors *st;
    if (sd_base_st_open(path, &st) != SQ_OK) return SQ_FAIL;
    int rc = file_config(c, st, path);
    sq_st_close(st);
    return rc;
}

int sd_mmdit_load(sd_mmdit *m, const char *path, sq_device device, sq_dtype dtype) {
    memset(m, 0, sizeof *m);
    m->device = device;
    m->dtype = dtype;
    char dir[4096], cfg_path[4200];
    loader L = {.device = device, .dtype = dtype, .origin = path};
    if (sq_is_dir(path)) {
        if (folder_config_path(path, dir, sizeof dir, cfg_path, sizeof cfg_path) != SQ_OK) return SQ_FAIL;
        if (sd_mmdit_config_load(&m->cfg, cfg_path) != SQ_OK) return SQ_FAIL;
        if (sq_st_open(&L.st, dir) != SQ_OK) return SQ_FAIL;
        L.origin = dir;
    } else {
        if (sd_base_st_open(path, &L.st) != SQ_OK) return SQ_FAIL;
        sd_q4_header h;
        int rc = sd_q4_header_read(L.st, path, &h);
        L.single = h.single_file;
        L.quantized = h.quantized;   // written by `sd-qzo quantize`: int4 codes + scales, config in the metadata
        L.group = h.group;
        if (h.source_sha256) snprintf(m->source_sha256, sizeof m->source_sha256, "%s", h.source_sha256);
        if (rc == SQ_OK) rc = file_config(&m->cfg, L.st, path);
        if (rc != SQ_OK) { sq_st_close(L.st); return SQ_FAIL; }
    }
    L.num_layers = m->cfg.num_layers;
    int rc = load_weights(&L, m);
    if (rc == SQ_OK && L.quantized) sd_mmdit_assign_scale_indices(m);
    sq_st_close(L.st);
    if (rc != SQ_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", sq_error_message());
        sd_mmdit_free(m);
        sq_errorf("%s", msg);
    }
    return rc;
}

static void free_block(sd_mmdit_block *b) {
    sq_linear *ls[] = {&b->norm1, &b->norm1_context, &b->to_q, &b->to_k, &b->to_v, &b->to_out, &b->add_q, &b->add_k,
                       &b->add_v, &b->to_add_out, &b->attn2_q, &b->attn2_k, &b->attn2_v, &b->attn2_out, &b->ff1,
                       &b->ff2, &b->ff_context1, &b->ff_context2};
    for (size_t i = 0; i < sizeof ls / sizeof ls[0]; i++) sq_linear_free(ls[i]);
    sq_tensor *ts[] = {&b->norm_q, &b->norm_k, &b->norm_added_q, &b->norm_added_k, &b->attn2_norm_q, &b->attn2_norm_k};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) sq_tensor_free(ts[i]);
}

void sd_mmdit_free(sd_mmdit *m) {
    if (m->blocks)
        for (int i = 0; i < m->cfg.num_layers; i++) free_block(&m->blocks[i]);
    free(m->blocks);
    sq_tensor_free(&m->patch_w);
    sq_tensor_free(&m->patch_b);
    sq_tensor_free(&m->pos_embed);
    sq_linear *ls[] = {&m->t_linear1, &m->t_linear2, &m->y_linear1, &m->y_linear2, &m->context_embedder, &m->norm_out, &m->proj_out};
    for (size_t i = 0; i < sizeof ls / sizeof ls[0]; i++) sq_linear_free(ls[i]);
    sq_linear_order_free(m->linear_order);
    sd_forward_graphs_free(m->graphs);
    memset(m, 0, sizeof *m);
}
