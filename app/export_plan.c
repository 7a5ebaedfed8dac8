// app/export_plan.c: the tensor list of an export and the values of each tensor
// (see app/export_plan.h).
#include "app/export_plan.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/error.h"
#include "core/log.h"
#include "kernels/quant.h"
#include "mmdit/keymap.h"
#include "mmdit/quantize.h"

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

static bool is_float(sq_dtype d) { return d == SQ_F32 || d == SQ_BF16 || d == SQ_F16; }

// A diffusers config.json for a base that has none (a single file): the keys
// SD3Transformer2DModel takes, from the config inferred from the tensor shapes.
static char *config_from_shapes(const sd_mmdit_config *c) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "_class_name", "SD3Transformer2DModel");
    cJSON_AddNumberToObject(o, "sample_size", c->sample_size);
    cJSON_AddNumberToObject(o, "patch_size", c->patch_size);
    cJSON_AddNumberToObject(o, "in_channels", c->in_channels);
    cJSON_AddNumberToObject(o, "num_layers", c->num_layers);
    cJSON_AddNumberToObject(o, "attention_head_dim", c->head_dim);
    cJSON_AddNumberToObject(o, "num_attention_heads", c->num_heads);
    cJSON_AddNumberToObject(o, "joint_attention_dim", c->joint_attention_dim);
    cJSON_AddNumberToObject(o, "caption_projection_dim", c->caption_projection_dim);
    cJSON_AddNumberToObject(o, "pooled_projection_dim", c->pooled_projection_dim);
    cJSON_AddNumberToObject(o, "out_channels", c->out_channels);
    cJSON_AddNumberToObject(o, "pos_embed_max_size", c->pos_embed_max_size);
    cJSON *dual = cJSON_AddArrayToObject(o, "dual_attention_layers");
    for (int i = 0; i < c->num_layers; i++)
        if (c->dual[i]) cJSON_AddItemToArray(dual, cJSON_CreateNumber(i));
    if (c->qk_norm) cJSON_AddStringToObject(o, "qk_norm", "rms_norm");
    else cJSON_AddNullToObject(o, "qk_norm");
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    return s;
}

static int read_config(sd_export_plan *p) {
    const sd_base_model *b = &p->base;
    if (b->single_file) {
        if (sd_mmdit_config_infer(&p->cfg, p->st, SD_SINGLE_FILE_PREFIX) != SQ_OK) return SQ_FAIL;
        p->config_json = config_from_shapes(&p->cfg);
        return p->config_json ? SQ_OK : sq_errorf("out of host memory");
    }
    size_t len;
    if (b->config[0]) {
        if (sq_read_file(b->config, &p->config_json, &len) != SQ_OK) return SQ_FAIL;
    } else {
        sd_q4_header h;
        if (sd_q4_header_read(p->st, b->weights, &h) != SQ_OK) return SQ_FAIL;
        if (!h.config) return sq_errorf("%s: quantised file lacks its sd_qzo.config", b->weights);
        p->config_json = strdup(h.config);
        if (!p->config_json) return sq_errorf("out of host memory");
    }
    sq_config *j = NULL;
    const char *origin = b->config[0] ? b->config : b->weights;
    int rc = sq_config_parse(&j, p->config_json, origin);
    if (rc == SQ_OK) rc = sd_mmdit_config_parse(&p->cfg, j, origin);
    sq_config_free(j);
    return rc;
}

static int check_scales(sd_export_plan *p, sd_export_tensor *t, const char *scales_path) {
    char key[300];
    snprintf(key, sizeof key, "%s%s", t->name, SD_Q4_SCALES_SUFFIX);
    const sq_st_entry *s = sq_st_find(p->ckpt, key);
    if (!s) return sq_errorf("%s: no scales '%s' for an int4 layer of %s", scales_path, key, p->base.weights);
    if (p->ema) {
        char ema_key[320];
        snprintf(ema_key, sizeof ema_key, "%s%s", SQ_CHECKPOINT_EMA_PREFIX, key);
        const sq_st_entry *e = sq_st_find(p->ckpt, ema_key);
        if (e) s = e;   // the checkpoint's reader checked it has the scales' shape
    }
    if (s->dtype != SQ_F32 || s->ndim != 2 || t->ndim != 2 || t->shape[1] % p->group || s->shape[0] != t->shape[0] ||
        s->shape[1] != t->shape[1] / p->group)
        return sq_errorf("%s: scales '%s' are not F32 [%lld,%lld] (the layer's %lld x %lld weight at group %d)", scales_path,
                         key, (long long)t->shape[0], (long long)(t->shape[1] / p->group), (long long)t->shape[0],
                         (long long)t->shape[1], p->group);
    t->scales = s;
    t->quantized = true;
    p->n_quantized++;
    return SQ_OK;
}

// Adds the diffusers tensor(s) base entry e holds.
static int add_entry(sd_export_plan *p, const sq_st_entry *e, const char *scales_path) {
    const sd_base_model *b = &p->base;
    char key[300];
    snprintf(key, sizeof key, "%s", e->name + (b->single_file ? strlen(SD_SINGLE_FILE_PREFIX) : 0));
    bool codes = false;
    if (b->quantized) {
        if (ends_with(key, SD_Q4_SCALES_SUFFIX)) return SQ_OK;   // the base's scales: the checkpoint's replace them
        if (ends_with(key, SD_Q4_CODES_SUFFIX)) {
            key[strlen(key) - strlen(SD_Q4_CODES_SUFFIX)] = 0;
            codes = true;
            if (e->dtype != SQ_U8 || e->ndim != 2)
                return sq_errorf("%s: int4 codes '%s' are not a 2-D U8 tensor", b->weights, e->name);
        }
    }
    if (!codes && !is_float(e->dtype))
        return sq_errorf("%s: tensor '%s' is %s; expected F32, BF16 or F16", b->weights, e->name, sq_dtype_to_safetensors(e->dtype));
    char names[3][256];
    int parts = 1;
    if (b->single_file) {
        parts = sd_mmdit_diffusers_keys(key, names);
        if (!parts) return sq_errorf("%s: tensor '%s' is not part of an SD3 MMDiT", b->weights, e->name);
    } else {
        snprintf(names[0], sizeof names[0], "%s", key);
    }
    if (parts > 1 && (e->ndim < 1 || e->shape[0] % parts))
        return sq_errorf("%s: fused tensor '%s' does not split into %d equal row blocks", b->weights, e->name, parts);
    for (int j = 0; j < parts; j++) {
        size_t len = strlen(names[j]);
        if (len >= sizeof p->t[0].name)
            return sq_errorf("%s: tensor name '%s' is longer than %zu characters", b->weights, names[j],
                             sizeof p->t[0].name - 1);
        sd_export_tensor *t = &p->t[p->n++];
        memset(t, 0, sizeof *t);
        memcpy(t->name, names[j], len + 1);
        t->src = e;
        t->part = parts > 1 ? j : -1;
        t->ndim = e->ndim;
        memcpy(t->shape, e->shape, sizeof t->shape);
        t->shape[0] /= parts;
        if (codes) t->shape[1] *= 2;   // two int4 codes per byte
        sd_single_file_key sk;
        if (sd_mmdit_single_file_key(t->name, p->cfg.num_layers, &sk)) {
            snprintf(t->single_key, sizeof t->single_key, "%s", sk.key);
            t->single_part = sk.part;
            t->single_swapped = sk.swap_halves;
            t->src_swapped = b->single_file && sk.swap_halves;
        }
        if (b->single_file && (strcmp(t->single_key, key) || t->single_part != t->part))
            return sq_errorf("%s: key map does not round-trip '%s' (internal error)", b->weights, e->name);
        sd_qlayer_kind kind;
        if (codes) {
            t->codes_in_src = true;
            if (check_scales(p, t, scales_path) != SQ_OK) return SQ_FAIL;
        } else if (!b->quantized && sd_mmdit_should_quantize(t->name, t->ndim, t->shape, p->group, &kind)) {
            if (check_scales(p, t, scales_path) != SQ_OK) return SQ_FAIL;
        } else if (!p->base_dtype_set) {
            p->base_dtype = e->dtype;
            p->base_dtype_set = true;
        }
        int64_t numel = sq_shape_numel(t->ndim, t->shape);
        if (numel > p->max_numel) p->max_numel = numel;
    }
    return SQ_OK;
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const sd_export_tensor *)a)->name, ((const sd_export_tensor *)b)->name);
}

int sd_export_plan_open(sd_export_plan *p, const char *model, const char *scales, bool ema) {
    memset(p, 0, sizeof *p);
    p->ema = ema;
    if (sd_base_open(model, &p->base, &p->st) != SQ_OK) return SQ_FAIL;
    const sd_base_model *b = &p->base;
    if (read_config(p) != SQ_OK || sq_st_open(&p->ckpt, scales) != SQ_OK ||
        sq_checkpoint_read_info(p->ckpt, scales, NULL, &p->info) != SQ_OK)
        goto fail;
    p->group = p->info.group_size;
    if (ema && p->info.ema_beta == 0) {
        sq_errorf("--ema: %s holds no EMA of the scales (it was trained without --ema); export its scales without --ema",
                  scales);
        goto fail;
    }
    if (b->quantized && p->group != b->group) {
        sq_errorf("%s: scales trained at group size %d, but the quantised base %s has group size %d", scales, p->group,
                  b->weights, b->group);
        goto fail;
    }
    if (p->group != 32 && p->group != 64 && p->group != 128) {
        sq_errorf("%s: group size %d is not 32, 64 or 128", scales, p->group);
        goto fail;
    }
    // The hash first, so a checkpoint of another model gets that message and not a
    // confusing shape error (a dense base is read once for it).
    if (!b->quantized) sq_log_info("hashing the base weights in %s", b->weights);
    if (sd_base_sha256(b, p->st, p->base_sha256) != SQ_OK) goto fail;
    if (strcmp(p->base_sha256, p->info.base_sha256)) {
        sq_errorf("%s: these scales were trained on another base model (hash %.12s…, %s has %.12s…)", scales,
                  p->info.base_sha256, model, p->base_sha256);
        goto fail;
    }
    int n = sq_st_count(p->st);
    p->t = calloc((size_t)n * 3 + 1, sizeof *p->t);
    if (!p->t) { sq_errorf("out of host memory"); goto fail; }
    for (int i = 0; i < n; i++) {
        const sq_st_entry *e = sq_st_at(p->st, i);
        if (sd_base_keep_tensor(e->name, b->single_file) && add_entry(p, e, scales) != SQ_OK) goto fail;
    }
    if (p->n_quantized == 0) {
        sq_errorf("%s: no int4 layers at group size %d (is this an SD3 MMDiT?)", b->weights, p->group);
        goto fail;
    }
    if (sq_st_count(p->ckpt) - p->info.ema_tensors != p->n_quantized) {
        sq_errorf("%s: holds %d scale tensors, the base %s has %d int4 layers", scales,
                  sq_st_count(p->ckpt) - p->info.ema_tensors, b->weights, p->n_quantized);
        goto fail;
    }
    if (!p->base_dtype_set) p->base_dtype = SQ_F32;
    qsort(p->t, (size_t)p->n, sizeof *p->t, by_name);
    for (int i = 1; i < p->n; i++)
        if (!strcmp(p->t[i].name, p->t[i - 1].name)) {
            sq_errorf("%s: tensor '%s' appears twice", b->weights, p->t[i].name);
            goto fail;
        }
    return SQ_OK;
fail:
    sd_export_plan_close(p);
    return SQ_FAIL;
}

void sd_export_plan_close(sd_export_plan *p) {
    sq_st_close(p->st);
    sq_st_close(p->ckpt);
    free(p->info.loss_history);
    free(p->config_json);
    free(p->t);
    memset(p, 0, sizeof *p);
}

int sd_export_scratch_alloc(sd_export_scratch *s, const sd_export_plan *p) {
    size_t n = (size_t)p->max_numel;
    s->values = malloc(n * sizeof(float) + 16);
    s->codes = malloc(n / 2 + 16);
    s->scales = malloc(n / (size_t)p->group * sizeof(float) + 16);
    if (s->values && s->codes && s->scales) return SQ_OK;
    sd_export_scratch_free(s);
    return sq_errorf("out of host memory for a %lld-element tensor", (long long)p->max_numel);
}

void sd_export_scratch_free(sd_export_scratch *s) {
    free(s->values);
    free(s->codes);
    free(s->scales);
    memset(s, 0, sizeof *s);
}

static void swap_halves(void *data, size_t bytes) {
    uint8_t *a = data, *b = a + bytes / 2, t;
    for (size_t i = 0; i < bytes / 2; i++) { t = a[i]; a[i] = b[i]; b[i] = t; }
}

int sd_export_materialise(const sd_export_plan *p, const sd_export_tensor *t, sd_export_scratch *s) {
    int64_t numel = sq_shape_numel(t->ndim, t->shape);
    int64_t first = t->part >= 0 ? t->part * numel : 0;   // element offset of this third
    if (!t->codes_in_src) {
        sq_convert_to_f32(s->values, (const char *)t->src->data + sq_dtype_bytes(t->src->dtype, first), t->src->dtype, numel);
        if (t->src_swapped) swap_halves(s->values, (size_t)numel * sizeof(float));
    }
    if (!t->quantized) return SQ_OK;
    int64_t rows = t->shape[0], k = t->shape[1];
    if (t->codes_in_src) {
        memcpy(s->codes, (const uint8_t *)t->src->data + first / 2, (size_t)numel / 2);
        if (t->src_swapped) swap_halves(s->codes, (size_t)numel / 2);
    } else {
        // the codes training used: the same quantiser on the same f32 values. Rows
        // are quantised independently, so blocks of rows run in parallel (the
        // clipping search is most of the time of an export from a dense base).
        int64_t block = 16, nblocks = (rows + block - 1) / block;
#pragma omp parallel for schedule(dynamic)
        for (int64_t b = 0; b < nblocks; b++) {
            int64_t r0 = b * block, nr = rows - r0 < block ? rows - r0 : block;
            sq_quantize_q4(s->values + r0 * k, nr, k, p->group, s->codes + r0 * k / 2, s->scales + r0 * (k / p->group));
        }
    }
    // copied out of the mapping: safetensors data need not be 4-byte aligned
    memcpy(s->scales, t->scales->data, t->scales->nbytes);
    sq_tensor out = sq_tensor_view(s->values, SQ_F32, SQ_CPU, 2, t->shape);
    sq_tensor codes = sq_tensor_view(s->codes, SQ_Q4, SQ_CPU, 2, t->shape);
    sq_tensor scales = sq_tensor_view(s->scales, SQ_F32, SQ_CPU, 2, (int64_t[]){rows, k / p->group});
    sq_dequant_q4(&out, &codes, &scales, p->group, NULL);
    return SQ_OK;
}
