// vae/load.c: loading the VAE from a diffusers folder or a Stability single file.
// Tensors are asked for by diffusers name; single_file_key() maps a name to the
// ldm layout (first_stage_model.encoder.down.{i}.block.{j}..., decoder levels in
// reverse order, mid.block_1/2, mid.attn_1 with 1x1-conv q/k/v/proj_out; facts from
// diffusers' convert_ldm_vae_checkpoint).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/path.h"
#include "core/safetensors.h"
#include "vae/vae_internal.h"

typedef struct {
    sq_safetensors *st;
    const char *prefix;      // "" (diffusers) or "first_stage_model." / "vae." (single file)
    bool single;
    int levels;
    sq_device device;
    sq_dtype dtype;
    const char *origin;
    uint64_t synthetic_seed;  // non-zero: no file, fill every tensor with random values (benchmarks)
} loader;

// diffusers name -> ldm name (without prefix). Returns false if unknown.
static bool single_file_key(const char *d, int levels, char *out, size_t size) {
    int i, j, n = 0;
    char rest[200];
    static const struct { const char *from, *to; } resnet_parts[] = {
        {"conv_shortcut", "nin_shortcut"}, {"norm1", "norm1"}, {"norm2", "norm2"}, {"conv1", "conv1"}, {"conv2", "conv2"}};
    static const struct { const char *from, *to; } attn_parts[] = {
        {"group_norm", "norm"}, {"to_q", "q"}, {"to_k", "k"}, {"to_v", "v"}, {"to_out.0", "proj_out"}};
    const char *part = !strncmp(d, "encoder.", 8) ? "encoder" : !strncmp(d, "decoder.", 8) ? "decoder" : NULL;
    if (!part) return false;
    const char *r = d + 8;
    if (sscanf(r, "down_blocks.%d.resnets.%d.%199s%n", &i, &j, rest, &n) == 3 ||
        sscanf(r, "up_blocks.%d.resnets.%d.%199s%n", &i, &j, rest, &n) == 3) {
        bool up = r[0] == 'u';
        for (size_t k = 0; k < sizeof resnet_parts / sizeof resnet_parts[0]; k++) {
            size_t l = strlen(resnet_parts[k].from);
            if (!strncmp(rest, resnet_parts[k].from, l) && rest[l] == '.') {
                snprintf(out, size, "%s.%s.%d.block.%d.%s%s", part, up ? "up" : "down", up ? levels - 1 - i : i, j,
                         resnet_parts[k].to, rest + l);
                return true;
            }
        }
        return false;
    }
    if (sscanf(r, "down_blocks.%d.downsamplers.0.conv.%199s", &i, rest) == 2) {
        snprintf(out, size, "%s.down.%d.downsample.conv.%s", part, i, rest);
        return true;
    }
    if (sscanf(r, "up_blocks.%d.upsamplers.0.conv.%199s", &i, rest) == 2) {
        snprintf(out, size, "%s.up.%d.upsample.conv.%s", part, levels - 1 - i, rest);
        return true;
    }
    if (sscanf(r, "mid_block.resnets.%d.%199s", &i, rest) == 2) {
        for (size_t k = 0; k < sizeof resnet_parts / sizeof resnet_parts[0]; k++) {
            size_t l = strlen(resnet_parts[k].from);
            if (!strncmp(rest, resnet_parts[k].from, l) && rest[l] == '.') {
                snprintf(out, size, "%s.mid.block_%d.%s%s", part, i + 1, resnet_parts[k].to, rest + l);
                return true;
            }
        }
        return false;
    }
    if (!strncmp(r, "mid_block.attentions.0.", 23)) {
        const char *a = r + 23;
        for (size_t k = 0; k < sizeof attn_parts / sizeof attn_parts[0]; k++) {
            size_t l = strlen(attn_parts[k].from);
            if (!strncmp(a, attn_parts[k].from, l) && a[l] == '.') {
                snprintf(out, size, "%s.mid.attn_1.%s%s", part, attn_parts[k].to, a + l);
                return true;
            }
        }
        return false;
    }
    if (!strncmp(r, "conv_norm_out.", 14)) { snprintf(out, size, "%s.norm_out.%s", part, r + 14); return true; }
    if (!strncmp(r, "conv_in.", 8) || !strncmp(r, "conv_out.", 9)) { snprintf(out, size, "%s.%s", part, r); return true; }
    return false;
}

// Equal up to size-1 dimensions (single files store q/k/v as (C,C,1,1) 1x1 convs).
static bool same_shape(int na, const int64_t *a, int nb, const int64_t *b) {
    int i = 0, j = 0;
    for (;;) {
        while (i < na && a[i] == 1) i++;
        while (j < nb && b[j] == 1) j++;
        if (i == na || j == nb) return i == na && j == nb;
        if (a[i++] != b[j++]) return false;
    }
}

// Synthetic weights: uniform in ±1/sqrt(fan-in) for weights, near 1 for norm
// scales, so activations keep a realistic range through the whole network.
static int fill_synthetic(loader *L, const char *dkey, sq_tensor *dst, int ndim, const int64_t *shape) {
    if (sq_tensor_alloc(dst, L->dtype, L->device, ndim, shape) != SQ_OK) return SQ_FAIL;
    int64_t n = sq_tensor_numel(dst), fan_in = ndim > 1 ? n / shape[0] : 1;
    float *h = malloc((size_t)n * sizeof(float) + 1);
    if (!h) return sq_errorf("out of host memory");
    bool is_norm = strstr(dkey, "norm") != NULL && ndim == 1 && strstr(dkey, ".weight");
    float r = ndim > 1 ? 1.0f / sqrtf((float)fan_in) : 0.05f;
    uint64_t s = L->synthetic_seed ^ (uint64_t)n * 0x9E3779B97F4A7C15ull;
    for (int64_t i = 0; i < n; i++) {
        s ^= s >> 12; s ^= s << 25; s ^= s >> 27;
        float u = (float)((s * 2685821657736338717ull) >> 40) / 16777216.0f * 2.0f - 1.0f;
        h[i] = is_norm ? 1.0f + 0.1f * u : r * u;
    }
    int rc = sq_tensor_from_host_f32(dst, h);
    free(h);
    return rc;
}

static int load(loader *L, const char *dkey, sq_tensor *dst, int ndim, const int64_t *shape) {
    if (L->synthetic_seed) return fill_synthetic(L, dkey, dst, ndim, shape);
    char key[300], mapped[256];
    if (L->single) {
        if (!single_file_key(dkey, L->levels, mapped, sizeof mapped)) return sq_errorf("%s: no single-file key for '%s'", L->origin, dkey);
        snprintf(key, sizeof key, "%s%s", L->prefix, mapped);
    } else {
        snprintf(key, sizeof key, "%s", dkey);
    }
    const sq_st_entry *e = sq_st_find(L->st, key);
    if (!e) return sq_errorf("%s: missing tensor '%s'", L->origin, key);
    if (!same_shape(e->ndim, e->shape, ndim, shape)) {
        char a[96] = "[", b[96] = "[";
        for (int i = 0; i < e->ndim; i++) snprintf(a + strlen(a), sizeof a - strlen(a), i ? ",%lld" : "%lld", (long long)e->shape[i]);
        for (int i = 0; i < ndim; i++) snprintf(b + strlen(b), sizeof b - strlen(b), i ? ",%lld" : "%lld", (long long)shape[i]);
        return sq_errorf("%s: tensor '%s' has shape %s], expected %s]", L->origin, key, a, b);
    }
    if (sq_tensor_alloc(dst, L->dtype, L->device, ndim, shape) != SQ_OK) return SQ_FAIL;
    sq_tensor src = sq_tensor_view((void *)e->data, e->dtype, SQ_CPU, ndim, shape);
    if (sq_tensor_copy(dst, &src) != SQ_OK) return sq_error_context("%s: tensor '%s'", L->origin, key);
    return SQ_OK;
}

static int load_conv(loader *L, const char *name, sd_conv *c, int64_t cout, int64_t cin, int64_t k) {
    char n[256];
    snprintf(n, sizeof n, "%.240s.weight", name);
    if (load(L, n, &c->w, 4, (int64_t[]){cout, cin, k, k})) return SQ_FAIL;
    snprintf(n, sizeof n, "%.240s.bias", name);
    return load(L, n, &c->b, 1, (int64_t[]){cout});
}

static int load_norm(loader *L, const char *name, sq_tensor *w, sq_tensor *b, int64_t c) {
    char n[256];
    snprintf(n, sizeof n, "%.240s.weight", name);
    if (load(L, n, w, 1, (int64_t[]){c})) return SQ_FAIL;
    snprintf(n, sizeof n, "%.240s.bias", name);
    return load(L, n, b, 1, (int64_t[]){c});
}

static int load_resnet(loader *L, const char *name, sd_vae_resnet *r, int64_t cin, int64_t cout) {
    char n[256];
    snprintf(n, sizeof n, "%.200s.norm1", name);
    if (load_norm(L, n, &r->gn1_w, &r->gn1_b, cin)) return SQ_FAIL;
    snprintf(n, sizeof n, "%.200s.conv1", name);
    if (load_conv(L, n, &r->conv1, cout, cin, 3)) return SQ_FAIL;
    snprintf(n, sizeof n, "%.200s.norm2", name);
    if (load_norm(L, n, &r->gn2_w, &r->gn2_b, cout)) return SQ_FAIL;
    snprintf(n, sizeof n, "%.200s.conv2", name);
    if (load_conv(L, n, &r->conv2, cout, cout, 3)) return SQ_FAIL;
    if (cin != cout) {
        snprintf(n, sizeof n, "%.200s.conv_shortcut", name);
        if (load_conv(L, n, &r->shortcut, cout, cin, 1)) return SQ_FAIL;
    }
    return SQ_OK;
}

static int load_linear(loader *L, const char *name, sq_linear *l, int64_t c) {
    char n[256];
    memset(l, 0, sizeof *l);
    snprintf(n, sizeof n, "%.240s.weight", name);
    if (load(L, n, &l->w, 2, (int64_t[]){c, c})) return SQ_FAIL;
    snprintf(n, sizeof n, "%.240s.bias", name);
    return load(L, n, &l->b, 1, (int64_t[]){c});
}

static int load_mid(loader *L, const char *part, sd_vae_half *h, int64_t c, bool attention) {
    char n[256];
    snprintf(n, sizeof n, "%s.mid_block.resnets.0", part);
    if (load_resnet(L, n, &h->mid1, c, c)) return SQ_FAIL;
    snprintf(n, sizeof n, "%s.mid_block.resnets.1", part);
    if (load_resnet(L, n, &h->mid2, c, c)) return SQ_FAIL;
    if (!attention) return SQ_OK;
    const char *names[4] = {"to_q", "to_k", "to_v", "to_out.0"};
    sq_linear *ls[4] = {&h->mid_attn.q, &h->mid_attn.k, &h->mid_attn.v, &h->mid_attn.out};
    snprintf(n, sizeof n, "%s.mid_block.attentions.0.group_norm", part);
    if (load_norm(L, n, &h->mid_attn.gn_w, &h->mid_attn.gn_b, c)) return SQ_FAIL;
    for (int i = 0; i < 4; i++) {
        snprintf(n, sizeof n, "%s.mid_block.attentions.0.%s", part, names[i]);
        if (load_linear(L, n, ls[i], c)) return SQ_FAIL;
    }
    return SQ_OK;
}

static int load_all(loader *L, sd_vae *v) {
    const sd_vae_config *c = &v->cfg;
    int Lv = c->levels, lpb = c->layers_per_block;
    char n[256];
    // encoder
    if (load_conv(L, "encoder.conv_in", &v->enc.conv_in, c->block_out[0], c->in_channels, 3)) return SQ_FAIL;
    for (int i = 0; i < Lv; i++) {
        v->enc.resnets[i] = calloc((size_t)lpb, sizeof(sd_vae_resnet));
        if (!v->enc.resnets[i]) return sq_errorf("out of host memory");
        for (int j = 0; j < lpb; j++) {
            int64_t cin = j == 0 ? c->block_out[i > 0 ? i - 1 : 0] : c->block_out[i];
            snprintf(n, sizeof n, "encoder.down_blocks.%d.resnets.%d", i, j);
            if (load_resnet(L, n, &v->enc.resnets[i][j], cin, c->block_out[i])) return SQ_FAIL;
        }
        if (i < Lv - 1) {
            snprintf(n, sizeof n, "encoder.down_blocks.%d.downsamplers.0.conv", i);
            if (load_conv(L, n, &v->enc.resample[i], c->block_out[i], c->block_out[i], 3)) return SQ_FAIL;
        }
    }
    if (load_mid(L, "encoder", &v->enc, c->block_out[Lv - 1], c->mid_attention)) return SQ_FAIL;
    if (load_norm(L, "encoder.conv_norm_out", &v->enc.norm_out_w, &v->enc.norm_out_b, c->block_out[Lv - 1])) return SQ_FAIL;
    if (load_conv(L, "encoder.conv_out", &v->enc.conv_out, 2 * c->latent_channels, c->block_out[Lv - 1], 3)) return SQ_FAIL;
    // decoder: levels in reverse channel order
    if (load_conv(L, "decoder.conv_in", &v->dec.conv_in, c->block_out[Lv - 1], c->latent_channels, 3)) return SQ_FAIL;
    if (load_mid(L, "decoder", &v->dec, c->block_out[Lv - 1], c->mid_attention)) return SQ_FAIL;
    for (int i = 0; i < Lv; i++) {
        int64_t out = c->block_out[Lv - 1 - i], prev = c->block_out[i > 0 ? Lv - i : Lv - 1];
        v->dec.resnets[i] = calloc((size_t)lpb + 1, sizeof(sd_vae_resnet));
        if (!v->dec.resnets[i]) return sq_errorf("out of host memory");
        for (int j = 0; j < lpb + 1; j++) {
            snprintf(n, sizeof n, "decoder.up_blocks.%d.resnets.%d", i, j);
            if (load_resnet(L, n, &v->dec.resnets[i][j], j == 0 ? prev : out, out)) return SQ_FAIL;
        }
        if (i < Lv - 1) {
            snprintf(n, sizeof n, "decoder.up_blocks.%d.upsamplers.0.conv", i);
            if (load_conv(L, n, &v->dec.resample[i], out, out, 3)) return SQ_FAIL;
        }
    }
    if (load_norm(L, "decoder.conv_norm_out", &v->dec.norm_out_w, &v->dec.norm_out_b, c->block_out[0])) return SQ_FAIL;
    return load_conv(L, "decoder.conv_out", &v->dec.conv_out, c->out_channels, c->block_out[0], 3);
}

int sd_vae_init_synthetic(sd_vae *v, const sd_vae_config *cfg, sq_device device, sq_dtype dtype, uint64_t seed) {
    memset(v, 0, sizeof *v);
    v->cfg = *cfg;
    v->device = device;
    v->dtype = dtype;
    loader L = {.device = device, .dtype = dtype, .origin = "synthetic", .levels = cfg->levels, .synthetic_seed = seed ? seed : 1};
    if (load_all(&L, v) != SQ_OK) { sd_vae_free(v); return SQ_FAIL; }
    return SQ_OK;
}

int sd_vae_load(sd_vae *v, const char *path, sq_device device, sq_dtype dtype) {
    memset(v, 0, sizeof *v);
    v->device = device;
    v->dtype = dtype;
    loader L = {.device = device, .dtype = dtype, .origin = path, .prefix = ""};
    char dir[4096], cfg[4200];
    if (sq_is_dir(path)) {
        snprintf(dir, sizeof dir, "%s/vae", path);
        if (!sq_is_dir(dir)) snprintf(dir, sizeof dir, "%s", path);
        snprintf(cfg, sizeof cfg, "%s/config.json", dir);
        if (sd_vae_config_load(&v->cfg, cfg) != SQ_OK) return SQ_FAIL;
        if (sq_st_open(&L.st, dir) != SQ_OK) return SQ_FAIL;
        L.origin = dir;
    } else {
        if (sq_st_open(&L.st, path) != SQ_OK) return SQ_FAIL;
        L.single = true;
        L.prefix = sq_st_find(L.st, "first_stage_model.encoder.conv_in.weight") ? "first_stage_model."
                 : sq_st_find(L.st, "vae.encoder.conv_in.weight") ? "vae." : NULL;
        if (!L.prefix) { sq_st_close(L.st); return sq_errorf("%s: no first_stage_model.* VAE tensors in this file", path); }
        sd_vae_config_sd3(&v->cfg);
        // infer widths from the checkpoint so small test VAEs load too
        char k[128];
        for (int i = 0; i < SD_VAE_MAX_LEVELS; i++) {
            snprintf(k, sizeof k, "%sencoder.down.%d.block.0.conv1.weight", L.prefix, i);
            const sq_st_entry *e = sq_st_find(L.st, k);
            if (!e) { v->cfg.levels = i; break; }
            v->cfg.block_out[i] = (int)e->shape[0];
        }
        snprintf(k, sizeof k, "%sencoder.down.0.block.0.norm1.weight", L.prefix);
        int lpb = 0;
        for (;; lpb++) {
            snprintf(k, sizeof k, "%sencoder.down.0.block.%d.conv1.weight", L.prefix, lpb);
            if (!sq_st_find(L.st, k)) break;
        }
        v->cfg.layers_per_block = lpb;
        snprintf(k, sizeof k, "%sdecoder.conv_in.weight", L.prefix);
        const sq_st_entry *zi = sq_st_find(L.st, k);
        if (zi) v->cfg.latent_channels = (int)zi->shape[1];
        // GroupNorm groups and the latent normalisation are not in the file: SD3's values
        // (32 groups, 1.5305 / 0.0609) unless the widths cannot take 32 groups.
        while (v->cfg.block_out[0] % v->cfg.groups) v->cfg.groups /= 2;
    }
    L.levels = v->cfg.levels;
    int rc = load_all(&L, v);
    sq_st_close(L.st);
    if (rc != SQ_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", sq_error_message());
        sd_vae_free(v);
        sq_errorf("%s", msg);
    }
    return rc;
}

static void free_conv(sd_conv *c) { sq_tensor_free(&c->w); sq_tensor_free(&c->b); }

static void free_resnet(sd_vae_resnet *r) {
    sq_tensor_free(&r->gn1_w); sq_tensor_free(&r->gn1_b); sq_tensor_free(&r->gn2_w); sq_tensor_free(&r->gn2_b);
    free_conv(&r->conv1); free_conv(&r->conv2); free_conv(&r->shortcut);
}

static void free_half(sd_vae_half *h, int levels, int per_level) {
    free_conv(&h->conv_in);
    free_conv(&h->conv_out);
    for (int i = 0; i < levels; i++) {
        if (h->resnets[i])
            for (int j = 0; j < per_level; j++) free_resnet(&h->resnets[i][j]);
        free(h->resnets[i]);
        free_conv(&h->resample[i]);
    }
    free_resnet(&h->mid1);
    free_resnet(&h->mid2);
    sq_tensor_free(&h->mid_attn.gn_w); sq_tensor_free(&h->mid_attn.gn_b);
    sq_linear_free(&h->mid_attn.q); sq_linear_free(&h->mid_attn.k); sq_linear_free(&h->mid_attn.v); sq_linear_free(&h->mid_attn.out);
    sq_tensor_free(&h->norm_out_w); sq_tensor_free(&h->norm_out_b);
}

void sd_vae_free(sd_vae *v) {
    free_half(&v->enc, v->cfg.levels, v->cfg.layers_per_block);
    free_half(&v->dec, v->cfg.levels, v->cfg.layers_per_block + 1);
    memset(v, 0, sizeof *v);
}
