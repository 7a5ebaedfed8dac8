// mmdit/config.c: MMDiT configs from config.json, from checkpoint shapes, or presets.
#include "mmdit/config.h"

#include <string.h>

#include "core/config.h"
#include "core/error.h"

void sd_mmdit_config_preset(sd_mmdit_config *c, sd_mmdit_preset preset) {
    memset(c, 0, sizeof *c);
    c->patch_size = 2;
    c->in_channels = c->out_channels = 16;
    c->head_dim = 64;
    c->joint_attention_dim = 4096;
    c->pooled_projection_dim = 2048;
    c->sample_size = 128;
    c->qk_norm = true;
    if (preset == SD_MMDIT_MEDIUM) {
        c->num_layers = 24;
        c->num_heads = 24;
        c->pos_embed_max_size = 384;
        for (int i = 0; i <= 12; i++) c->dual[i] = true;
    } else {   // Large and Large Turbo share the architecture
        c->num_layers = 38;
        c->num_heads = 38;
        c->pos_embed_max_size = 192;
    }
    c->hidden = c->num_heads * c->head_dim;
    c->caption_projection_dim = c->hidden;
}

static int validate(sd_mmdit_config *c, const char *origin) {
    if (c->num_layers < 1 || c->num_layers > SD_MMDIT_MAX_LAYERS)
        return sq_errorf("%s: num_layers %d outside 1..%d", origin, c->num_layers, SD_MMDIT_MAX_LAYERS);
    if (c->patch_size < 1 || c->in_channels < 1 || c->out_channels < 1 || c->num_heads < 1 || c->head_dim < 1 ||
        c->joint_attention_dim < 1 || c->pooled_projection_dim < 1 || c->pos_embed_max_size < 1)
        return sq_errorf("%s: a size in the config is missing or not positive", origin);
    c->hidden = c->num_heads * c->head_dim;
    if (c->caption_projection_dim != c->hidden)
        return sq_errorf("%s: caption_projection_dim %d must equal num_attention_heads x attention_head_dim (%d)",
                         origin, c->caption_projection_dim, c->hidden);
    return SQ_OK;
}

int sd_mmdit_config_load(sd_mmdit_config *c, const char *path) {
    sq_config *j;
    if (sq_config_load(&j, path) != SQ_OK) return SQ_FAIL;
    int rc = sd_mmdit_config_parse(c, j, path);
    sq_config_free(j);
    return rc;
}

int sd_mmdit_config_parse(sd_mmdit_config *c, const sq_config *j, const char *path) {
    memset(c, 0, sizeof *c);
    const char *cls = sq_config_string_or(j, "_class_name", "SD3Transformer2DModel");
    int rc = SQ_OK;
    if (strcmp(cls, "SD3Transformer2DModel")) {
        rc = sq_errorf("%s: _class_name is %s, expected SD3Transformer2DModel", path, cls);
        goto done;
    }
    // diffusers' defaults where a key is absent (SD3.0 config files omit the SD3.5 ones);
    // each present value must be an integer within sane limits for its meaning.
    struct { const char *key; int64_t def, hi; int *dst; } keys[] = {
        {"sample_size", 128, 4096, &c->sample_size},
        {"patch_size", 2, 16, &c->patch_size},
        {"in_channels", 16, 1024, &c->in_channels},
        {"out_channels", -1, 1024, &c->out_channels},   // -1: in_channels
        {"num_layers", 18, SD_MMDIT_MAX_LAYERS, &c->num_layers},
        {"attention_head_dim", 64, 1024, &c->head_dim},
        {"num_attention_heads", 18, 256, &c->num_heads},
        {"joint_attention_dim", 4096, 65536, &c->joint_attention_dim},
        {"caption_projection_dim", 1152, 65536, &c->caption_projection_dim},
        {"pooled_projection_dim", 2048, 65536, &c->pooled_projection_dim},
        {"pos_embed_max_size", 96, 4096, &c->pos_embed_max_size},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        int64_t def = keys[i].def < 0 ? c->in_channels : keys[i].def;
        if (sq_config_int_range(j, keys[i].key, def, 1, keys[i].hi, keys[i].dst) != SQ_OK) { rc = SQ_FAIL; goto done; }
    }
    if ((int64_t)c->num_heads * c->head_dim > 65536) {
        rc = sq_errorf("%s: num_attention_heads x attention_head_dim is %lld, more than 65536", path,
                       (long long)c->num_heads * c->head_dim);
        goto done;
    }
    const char *qk = sq_config_string_or(j, "qk_norm", NULL);
    if (sq_config_check(j) != SQ_OK) { rc = SQ_FAIL; goto done; }
    if (qk && strcmp(qk, "rms_norm")) { rc = sq_errorf("%s: qk_norm '%s' is not supported (rms_norm or null)", path, qk); goto done; }
    c->qk_norm = qk != NULL;
    int64_t dual[SD_MMDIT_MAX_LAYERS];
    int nd = 0;
    if (sq_config_int_array(j, "dual_attention_layers", dual, SD_MMDIT_MAX_LAYERS, &nd) != SQ_OK) { rc = SQ_FAIL; goto done; }
    for (int i = 0; i < nd; i++) {
        if (dual[i] < 0 || dual[i] >= c->num_layers) {
            rc = sq_errorf("%s: key 'dual_attention_layers' entry %lld is outside 0..%d (num_layers %d)", path,
                           (long long)dual[i], c->num_layers - 1, c->num_layers);
            goto done;
        }
        c->dual[dual[i]] = true;
    }
    rc = validate(c, path);
done:
    return rc;
}

static const sq_st_entry *find(const sq_safetensors *st, const char *prefix, const char *name) {
    char key[512];
    snprintf(key, sizeof key, "%s%s", prefix, name);
    return sq_st_find(st, key);
}

int sd_mmdit_config_infer(sd_mmdit_config *c, const sq_safetensors *st, const char *prefix) {
    memset(c, 0, sizeof *c);
    const char *file = sq_st_file_path(st, 0);
    const sq_st_entry *x = find(st, prefix, "x_embedder.proj.weight");
    const sq_st_entry *pos = find(st, prefix, "pos_embed");
    const sq_st_entry *ctx = find(st, prefix, "context_embedder.weight");
    const sq_st_entry *y = find(st, prefix, "y_embedder.mlp.0.weight");
    const sq_st_entry *fin = find(st, prefix, "final_layer.linear.weight");
    if (!x || !pos || !ctx || !y || !fin || x->ndim != 4 || ctx->ndim != 2 || y->ndim != 2 || fin->ndim != 2)
        return sq_errorf("%s: not an SD3 MMDiT single-file checkpoint (no %sx_embedder / pos_embed / context_embedder "
                         "/ y_embedder / final_layer tensors)", file, prefix);
    c->hidden = (int)x->shape[0];
    c->in_channels = (int)x->shape[1];
    c->patch_size = (int)x->shape[2];
    c->joint_attention_dim = (int)ctx->shape[1];
    c->caption_projection_dim = (int)ctx->shape[0];
    c->pooled_projection_dim = (int)y->shape[1];
    c->out_channels = (int)(fin->shape[0] / (c->patch_size * c->patch_size));
    int64_t npos = pos->shape[pos->ndim - 2];
    int side = 1;
    while ((int64_t)side * side < npos) side++;
    if ((int64_t)side * side != npos) return sq_errorf("%s: pos_embed has %lld positions, not a square grid", file, (long long)npos);
    c->pos_embed_max_size = side;
    c->sample_size = 128;
    // SD3.x use 64-wide heads; the head count is the hidden size over that
    // (a qk-norm weight, when present, gives the head size exactly).
    const sq_st_entry *lnq = find(st, prefix, "joint_blocks.0.x_block.attn.ln_q.weight");
    c->qk_norm = lnq != NULL;
    c->head_dim = lnq ? (int)lnq->shape[0] : 64;
    c->num_heads = c->hidden / c->head_dim;
    char key[128];
    for (c->num_layers = 0; c->num_layers < SD_MMDIT_MAX_LAYERS; c->num_layers++) {
        snprintf(key, sizeof key, "joint_blocks.%d.x_block.attn.qkv.weight", c->num_layers);
        char qkey[160];
        snprintf(qkey, sizeof qkey, "%s.q4", key);   // a file written by sd-qzo quantize
        if (!find(st, prefix, key) && !find(st, prefix, qkey)) break;
        snprintf(key, sizeof key, "joint_blocks.%d.x_block.attn2.qkv.weight", c->num_layers);
        snprintf(qkey, sizeof qkey, "%s.q4", key);
        c->dual[c->num_layers] = find(st, prefix, key) != NULL || find(st, prefix, qkey) != NULL;
    }
    return validate(c, file);
}

int sd_mmdit_config_dual_count(const sd_mmdit_config *c) {
    int n = 0;
    for (int i = 0; i < c->num_layers; i++) n += c->dual[i];
    return n;
}

int64_t sd_mmdit_config_params(const sd_mmdit_config *c) {
    int64_t D = c->hidden, p2 = (int64_t)c->patch_size * c->patch_size, hd = c->head_dim;
    int64_t n = D * c->in_channels * p2 + D                                      // patch embed
              + (int64_t)c->pos_embed_max_size * c->pos_embed_max_size * D      // position table
              + 256 * D + D + D * D + D                                         // timestep MLP
              + (int64_t)c->pooled_projection_dim * D + D + D * D + D           // pooled MLP
              + (int64_t)c->joint_attention_dim * D + D                         // context embedder
              + D * 2 * D + 2 * D + D * p2 * c->out_channels + p2 * c->out_channels; // final layer
    for (int i = 0; i < c->num_layers; i++) {
        bool last = i == c->num_layers - 1;
        int64_t attn = 4 * (D * D + D), mlp = D * 4 * D + 4 * D + 4 * D * D + D;
        n += D * (c->dual[i] ? 9 : 6) * D + D * (c->dual[i] ? 9 : 6);          // norm1
        n += last ? D * 2 * D + 2 * D : D * 6 * D + 6 * D;                      // norm1_context
        n += attn + (last ? 3 * (D * D + D) : attn) + mlp + (last ? 0 : mlp);
        if (c->qk_norm) n += 4 * hd;
        if (c->dual[i]) n += attn + (c->qk_norm ? 2 * hd : 0);
    }
    return n;
}

void sd_mmdit_print_config(const sd_mmdit_config *c, FILE *f) {
    double n = (double)sd_mmdit_config_params(c);
    char params[48];
    if (n >= 1e9) snprintf(params, sizeof params, "%.2f billion", n / 1e9);
    else if (n >= 1e6) snprintf(params, sizeof params, "%.2f million", n / 1e6);
    else snprintf(params, sizeof params, "%.0f", n);
    fprintf(f, "MMDiT: %d joint blocks, %d heads x %d (hidden %d), patch %d, channels %d -> %d, context %d, pooled %d, "
               "pos_embed_max_size %d, qk_norm %s, dual attention in %d blocks, %s parameters\n",
            c->num_layers, c->num_heads, c->head_dim, c->hidden, c->patch_size, c->in_channels, c->out_channels,
            c->joint_attention_dim, c->pooled_projection_dim, c->pos_embed_max_size, c->qk_norm ? "rms" : "none",
            sd_mmdit_config_dual_count(c), params);
}
