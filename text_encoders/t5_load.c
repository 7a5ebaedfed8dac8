// text_encoders/t5_load.c: loading the T5 encoder (text_encoders/t5_encoder.h) from
// a transformers folder (config.json + safetensors, sharded through
// model.safetensors.index.json), a diffusers pipeline's text_encoder_3/, or a single
// file in the HF key layout whose config is read off the tensor shapes. Every linear
// of the blocks is optionally quantised to int8 on the way in, one tensor at a time,
// so a 9.5 GB checkpoint never needs more than one layer's fp32 copy on the host.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/config.h"
#include "core/error.h"
#include "core/path.h"
#include "core/safetensors.h"
#include "kernels/int8.h"
#include "text_encoders/t5_encoder.h"

typedef struct {
    sq_safetensors *st;
    char prefix[160];     // "" or e.g. "text_encoders.t5xxl.transformer." (Stability single files)
    const char *origin;   // the folder or file, for messages
    sq_device device;     // where the blocks' weights go: the host when offloaded
    sq_dtype dtype;
    bool int8;
} loader;

static const char *shape_str(char *buf, size_t size, int ndim, const int64_t *shape) {
    snprintf(buf, size, "[");
    for (int i = 0; i < ndim; i++)
        snprintf(buf + strlen(buf), size - strlen(buf), i ? ",%lld" : "%lld", (long long)shape[i]);
    snprintf(buf + strlen(buf), size - strlen(buf), "]");
    return buf;
}

static const sq_st_entry *find(const loader *L, const char *name) {
    char key[400];
    snprintf(key, sizeof key, "%s%s", L->prefix, name);
    return sq_st_find(L->st, key);
}

// The entry `name` with exactly `shape`, or SQ_FAIL naming the file and tensor.
static int entry(const loader *L, const char *name, int ndim, const int64_t *shape, const sq_st_entry **out) {
    const sq_st_entry *e = find(L, name);
    if (!e) return sq_errorf("%s: missing tensor '%s%s'", L->origin, L->prefix, name);
    bool same = e->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = e->shape[i] == shape[i];
    if (!same) {
        char a[96], b[96];
        return sq_errorf("%s: tensor '%s%s' has shape %s, the config says %s", L->origin, L->prefix, name,
                         shape_str(a, sizeof a, e->ndim, e->shape), shape_str(b, sizeof b, ndim, shape));
    }
    *out = e;
    return SQ_OK;
}

static int load_dense(const loader *L, const char *name, sq_tensor *dst, int ndim, const int64_t *shape) {
    const sq_st_entry *e;
    if (entry(L, name, ndim, shape, &e) != SQ_OK) return SQ_FAIL;
    if (sq_tensor_alloc(dst, L->dtype, L->device, ndim, shape) != SQ_OK) return sq_error_context("%s: '%s'", L->origin, name);
    sq_tensor src = sq_tensor_view((void *)e->data, e->dtype, SQ_CPU, ndim, shape);
    if (sq_tensor_copy(dst, &src) != SQ_OK) return sq_error_context("%s: tensor '%s%s'", L->origin, L->prefix, name);
    return SQ_OK;
}

// Widened to host f32, quantised per row, then the codes and scales moved to the device.
static int load_int8(const loader *L, const sq_st_entry *e, const char *name, sd_t5_linear *l, int64_t nout, int64_t k) {
    float *w = sq_malloc((size_t)(nout * k) * sizeof(float));
    int8_t *codes = sq_malloc((size_t)(nout * k));
    float *scales = sq_malloc((size_t)nout * sizeof(float));
    int rc = SQ_FAIL;
    if (!w || !codes || !scales) goto done;
    if (sq_convert_to_f32(w, e->data, e->dtype, nout * k)) {
        sq_errorf("%s: tensor '%s%s': dtype %s cannot be quantised", L->origin, L->prefix, name, sq_dtype_name(e->dtype));
        goto done;
    }
    sq_quantize_i8_rows(w, nout, k, codes, scales);
    sq_tensor hc = sq_tensor_view(codes, SQ_I8, SQ_CPU, 2, (int64_t[]){nout, k});
    sq_tensor hs = sq_tensor_view(scales, SQ_F32, SQ_CPU, 1, (int64_t[]){nout});
    if (sq_tensor_alloc(&l->codes, SQ_I8, L->device, 2, hc.shape) != SQ_OK ||
        sq_tensor_alloc(&l->scales, SQ_F32, L->device, 1, hs.shape) != SQ_OK || sq_tensor_copy(&l->codes, &hc) != SQ_OK ||
        sq_tensor_copy(&l->scales, &hs) != SQ_OK) {
        sq_error_context("%s: tensor '%s%s'", L->origin, L->prefix, name);
        goto done;
    }
    rc = SQ_OK;
done:
    free(w);
    free(codes);
    free(scales);
    return rc;
}

static int load_linear(const loader *L, const char *name, sd_t5_linear *l, int64_t nout, int64_t k) {
    if (!L->int8) return load_dense(L, name, &l->w, 2, (int64_t[]){nout, k});
    const sq_st_entry *e;
    if (entry(L, name, 2, (int64_t[]){nout, k}, &e) != SQ_OK) return SQ_FAIL;
    return load_int8(L, e, name, l, nout, k);
}

static int load_block(const loader *L, int i, sd_t5_block *b, const sd_t5_config *c) {
    int64_t d = c->d_model, inner = (int64_t)c->num_heads * c->d_kv, ff = c->d_ff;
    char n[200];
#define NAME(fmt) (snprintf(n, sizeof n, "encoder.block.%d.layer." fmt, i), n)
    if (load_dense(L, NAME("0.layer_norm.weight"), &b->attn_norm, 1, (int64_t[]){d})) return SQ_FAIL;
    if (load_linear(L, NAME("0.SelfAttention.q.weight"), &b->q, inner, d)) return SQ_FAIL;
    if (load_linear(L, NAME("0.SelfAttention.k.weight"), &b->k, inner, d)) return SQ_FAIL;
    if (load_linear(L, NAME("0.SelfAttention.v.weight"), &b->v, inner, d)) return SQ_FAIL;
    if (load_linear(L, NAME("0.SelfAttention.o.weight"), &b->o, d, inner)) return SQ_FAIL;
    if (load_dense(L, NAME("1.layer_norm.weight"), &b->ff_norm, 1, (int64_t[]){d})) return SQ_FAIL;
    if (c->gated) {
        if (load_linear(L, NAME("1.DenseReluDense.wi_0.weight"), &b->wi0, ff, d)) return SQ_FAIL;
        if (load_linear(L, NAME("1.DenseReluDense.wi_1.weight"), &b->wi1, ff, d)) return SQ_FAIL;
    } else {
        if (load_linear(L, NAME("1.DenseReluDense.wi.weight"), &b->wi0, ff, d)) return SQ_FAIL;
    }
    return load_linear(L, NAME("1.DenseReluDense.wo.weight"), &b->wo, d, ff);
#undef NAME
}

// feed_forward_proj "ACT" or "gated-ACT"; "gated-gelu" means gelu_new (transformers'
// T5Config.__post_init__). Only the GELU family exists in kernels/ops.h.
static int parse_ffn(sd_t5_config *c, const char *proj, const char *origin) {
    const char *dash = strchr(proj, '-');
    c->gated = dash && !strncmp(proj, "gated", (size_t)(dash - proj)) && dash - proj == 5;
    const char *act = c->gated ? dash + 1 : proj;
    if (!strcmp(proj, "gated-gelu") || !strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh")) c->tanh_gelu = true;
    else if (!strcmp(act, "gelu")) c->tanh_gelu = false;
    else return sq_errorf("%s: feed_forward_proj '%s' is not supported (the GELU family: gated-gelu, gelu_new, gelu)", origin, proj);
    return SQ_OK;
}

static int config_from_json(sd_t5_config *c, const char *path) {
    sq_config *j;
    if (sq_config_load(&j, path) != SQ_OK) return SQ_FAIL;
    // transformers' T5Config defaults where a key is absent; present values must be
    // integers within sane limits (the loader checks their consistency with the tensors)
    struct { const char *key; int64_t def, lo, hi; int *dst; } keys[] = {
        {"d_model", 512, 1, 65536, &c->d_model},
        {"d_kv", 64, 1, 4096, &c->d_kv},
        {"d_ff", 2048, 1, 262144, &c->d_ff},
        {"num_layers", 6, 1, 256, &c->num_layers},
        {"num_heads", 8, 1, 1024, &c->num_heads},
        {"relative_attention_num_buckets", 32, 4, 4096, &c->num_buckets},
        {"relative_attention_max_distance", 128, 1, 1 << 20, &c->max_distance},
        {"vocab_size", 32128, 1, 1 << 22, &c->vocab},
    };
    int rc = SQ_OK;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0] && rc == SQ_OK; i++)
        rc = sq_config_int_range(j, keys[i].key, keys[i].def, keys[i].lo, keys[i].hi, keys[i].dst);
    c->eps = (float)sq_config_double_or(j, "layer_norm_epsilon", 1e-6);
    const char *ffn = sq_config_string_or(j, "feed_forward_proj", "relu");
    bool decoder = sq_config_bool_or(j, "is_decoder", false);
    if (rc == SQ_OK) rc = sq_config_check(j);
    if (rc == SQ_OK && !(c->eps > 0 && c->eps < 1)) rc = sq_errorf("%s: key 'layer_norm_epsilon' is %g, not in (0, 1)", path, c->eps);
    if (rc == SQ_OK) rc = parse_ffn(c, ffn, path);
    if (rc == SQ_OK && decoder) rc = sq_errorf("%s: is_decoder is set; sd-qzo runs T5 encoders only", path);
    sq_config_free(j);
    return rc;
}

// A single file has no config: read the widths off the tensors; eps and
// max_distance are not stored, so T5 v1.1's (SD3's) 1e-6 and 128.
static int config_from_shapes(sd_t5_config *c, const loader *L, const sq_st_entry *embed) {
    const sq_st_entry *q = find(L, "encoder.block.0.layer.0.SelfAttention.q.weight");
    const sq_st_entry *rb = find(L, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight");
    const sq_st_entry *wi0 = find(L, "encoder.block.0.layer.1.DenseReluDense.wi_0.weight");
    const sq_st_entry *wi = find(L, "encoder.block.0.layer.1.DenseReluDense.wi.weight");
    if (!q || !rb || (!wi0 && !wi) || embed->ndim != 2 || q->ndim != 2 || rb->ndim != 2)
        return sq_errorf("%s: no complete T5 encoder block 0 (%sencoder.block.0.layer.0.SelfAttention.*) to read the config from",
                         L->origin, L->prefix);
    if (!wi0) return sq_errorf("%s: a non-gated (T5 v1.0, ReLU) encoder; sd-qzo supports gated-gelu T5 v1.1 as SD3 uses", L->origin);
    c->vocab = (int)embed->shape[0];
    c->d_model = (int)embed->shape[1];
    c->num_buckets = (int)rb->shape[0];
    c->num_heads = (int)rb->shape[1];
    if (c->num_heads <= 0 || q->shape[0] % c->num_heads)
        return sq_errorf("%s: q has %lld rows, not a multiple of the %d heads of relative_attention_bias", L->origin,
                         (long long)q->shape[0], c->num_heads);
    c->d_kv = (int)(q->shape[0] / c->num_heads);
    c->d_ff = (int)wi0->shape[0];
    for (c->num_layers = 0;; c->num_layers++) {
        char n[120];
        snprintf(n, sizeof n, "encoder.block.%d.layer.0.SelfAttention.q.weight", c->num_layers);
        if (!find(L, n)) break;
    }
    c->max_distance = 128;
    c->eps = 1e-6f;
    c->gated = true;
    c->tanh_gelu = true;
    return SQ_OK;
}

// The prefix in front of "encoder.final_layer_norm.weight", which every T5 encoder has.
static int find_prefix(loader *L) {
    static const char *tail = "encoder.final_layer_norm.weight";
    size_t tl = strlen(tail);
    for (int i = 0; i < sq_st_count(L->st); i++) {
        const char *name = sq_st_at(L->st, i)->name;
        size_t nl = strlen(name);
        if (nl >= tl && !strcmp(name + nl - tl, tail) && nl - tl < sizeof L->prefix) {
            snprintf(L->prefix, sizeof L->prefix, "%.*s", (int)(nl - tl), name);
            return SQ_OK;
        }
    }
    return sq_errorf("%s: no T5 encoder in this checkpoint (no tensor named *encoder.final_layer_norm.weight)", L->origin);
}

static int load_all(sd_t5 *m, loader *L, bool have_config, bool offload) {
    sd_t5_config *c = &m->cfg;
    if (find_prefix(L) != SQ_OK) return SQ_FAIL;
    // save_pretrained stores the tied embedding once as shared.weight; some exports keep
    // only encoder.embed_tokens.weight
    const char *embed_name = find(L, "shared.weight") ? "shared.weight" : "encoder.embed_tokens.weight";
    const sq_st_entry *emb = find(L, embed_name);
    if (!emb) return sq_errorf("%s: missing tensor '%sshared.weight' (the token embedding)", L->origin, L->prefix);
    if (!have_config && config_from_shapes(c, L, emb) != SQ_OK) return SQ_FAIL;
    if (c->d_model <= 0 || c->d_kv <= 0 || c->d_ff <= 0 || c->num_layers <= 0 || c->num_heads <= 0 ||
        c->num_buckets < 4 || c->max_distance <= c->num_buckets / 4 || c->vocab <= 0 || !(c->eps > 0))
        return sq_errorf("%s: implausible T5 config (d_model %d, d_kv %d, d_ff %d, %d layers, %d heads, %d buckets, "
                         "max_distance %d, vocab %d)", L->origin, c->d_model, c->d_kv, c->d_ff, c->num_layers,
                         c->num_heads, c->num_buckets, c->max_distance, c->vocab);
    if (load_dense(L, embed_name, &m->embed, 2, (int64_t[]){c->vocab, c->d_model})) return SQ_FAIL;
    const sq_st_entry *rb;
    if (entry(L, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", 2,
              (int64_t[]){c->num_buckets, c->num_heads}, &rb) != SQ_OK)
        return SQ_FAIL;
    m->rel_bias = sq_malloc((size_t)c->num_buckets * (size_t)c->num_heads * sizeof(float));
    if (!m->rel_bias) return SQ_FAIL;
    if (sq_convert_to_f32(m->rel_bias, rb->data, rb->dtype, (int64_t)c->num_buckets * c->num_heads))
        return sq_errorf("%s: relative_attention_bias has dtype %s", L->origin, sq_dtype_name(rb->dtype));
    m->blocks = sq_calloc((size_t)c->num_layers, sizeof(sd_t5_block));
    if (!m->blocks) return SQ_FAIL;
    // offloaded: each block is read to the host, then packed into the store
    loader LB = *L;
    if (offload) LB.device = SQ_CPU;
    for (int i = 0; i < c->num_layers; i++) {
        if (load_block(&LB, i, &m->blocks[i], c) != SQ_OK) return SQ_FAIL;
        sq_tensor *ts[SD_T5_BLOCK_TENSORS];
        int n = sd_t5_block_tensors(&m->blocks[i], ts);
        if (offload && sd_offload_adopt(&m->offload, c->num_layers, i, ts, n, L->device) != SQ_OK)
            return sq_error_context("%s: block %d", L->origin, i);
    }
    return load_dense(L, "encoder.final_layer_norm.weight", &m->final_norm, 1, (int64_t[]){c->d_model});
}

int sd_t5_load(sd_t5 *m, const char *path, sq_device device, sq_dtype dtype, bool int8) {
    return sd_t5_load_ex(m, path, device, dtype, int8, false);
}

int sd_t5_load_ex(sd_t5 *m, const char *path, sq_device device, sq_dtype dtype, bool int8, bool offload) {
    memset(m, 0, sizeof *m);
    if (device == SQ_CPU ? dtype != SQ_F32 : dtype != SQ_BF16 && dtype != SQ_F32)
        return sq_errorf("%s: T5 runs in f32 on the CPU and bf16/f32 on CUDA, not %s", path, sq_dtype_name(dtype));
    m->device = device;
    m->dtype = dtype;
    m->int8 = int8;
    loader L = {.origin = path, .device = device, .dtype = dtype, .int8 = int8};
    char dir[4096], cfg[4200];
    bool have_config = false;
    if (sq_is_dir(path)) {
        snprintf(dir, sizeof dir, "%s/text_encoder_3", path);
        if (!sq_is_dir(dir)) snprintf(dir, sizeof dir, "%s", path);
        snprintf(cfg, sizeof cfg, "%s/config.json", dir);
        if (!sq_is_file(cfg))
            return sq_errorf("%s: no config.json (expected a T5 folder with config.json, a pipeline folder with "
                             "text_encoder_3/, or a single .safetensors file)", dir);
        if (config_from_json(&m->cfg, cfg) != SQ_OK) return SQ_FAIL;
        have_config = true;
        L.origin = dir;
        if (sq_st_open(&L.st, dir) != SQ_OK) return SQ_FAIL;
    } else {
        if (sq_st_open(&L.st, path) != SQ_OK) return SQ_FAIL;
    }
    // on the CPU the weights are in host memory already: offload changes nothing
    int rc = load_all(m, &L, have_config, offload && device == SQ_CUDA);
    sq_st_close(L.st);
    if (rc != SQ_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", sq_error_message());
        sd_t5_free(m);
        sq_errorf("%s", msg);   // the load error, whatever freeing reported
    }
    return rc;
}

void sd_t5_free(sd_t5 *m) {
    if (m->blocks) {
        for (int i = 0; i < m->cfg.num_layers; i++) {
            sq_tensor *ts[SD_T5_BLOCK_TENSORS];
            int n = sd_t5_block_tensors(&m->blocks[i], ts);
            for (int j = 0; j < n; j++) sq_tensor_free(ts[j]);   // views of the store: just cleared
        }
    }
    free(m->blocks);
    sd_offload_free(&m->offload);
    free(m->rel_bias);
    sq_tensor_free(&m->embed);
    sq_tensor_free(&m->final_norm);
    memset(m, 0, sizeof *m);
}
