// text_encoders/clip_load.c: CLIP text-tower config and weights, from a diffusers
// folder (config.json + safetensors) or a single file whose config is inferred
// from the tensor shapes (see clip_encoder.h for the rules). Both layouts use the
// same keys ("text_model.*", "text_projection.weight"), so one loader reads both.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/config.h"
#include "core/error.h"
#include "core/path.h"
#include "core/safetensors.h"
#include "text_encoders/clip_encoder.h"

static int config_from_json(sd_clip_config *c, const char *path) {
    sq_config *j;
    if (sq_config_load(&j, path) != SQ_OK) return SQ_FAIL;
    int64_t v[7];
    const char *keys[7] = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                           "num_attention_heads", "max_position_embeddings", "projection_dim"};
    int rc = SQ_OK;
    const int64_t hi[7] = {1 << 22, 65536, 262144, 256, 1024, 1 << 16, 65536};   // sane upper limits
    for (int i = 0; i < 7 && rc == SQ_OK; i++) {
        rc = sq_config_int(j, keys[i], &v[i]);
        if (rc == SQ_OK && (v[i] < 1 || v[i] > hi[i]))
            rc = sq_errorf("%s: key '%s' is %lld, outside 1..%lld", path, keys[i], (long long)v[i], (long long)hi[i]);
    }
    if (rc == SQ_OK) {
        c->vocab_size = (int)v[0]; c->hidden = (int)v[1]; c->intermediate = (int)v[2]; c->layers = (int)v[3];
        c->heads = (int)v[4]; c->max_positions = (int)v[5]; c->projection_dim = (int)v[6];
        c->eps = (float)sq_config_double_or(j, "layer_norm_eps", 1e-5);
        // transformers' CLIPTextConfig default eos_token_id is 2 (the legacy argmax rule)
        c->eos_token_id = (int32_t)sq_config_int_or(j, "eos_token_id", 2);
        const char *act = sq_config_string_or(j, "hidden_act", "quick_gelu");
        if (sq_config_check(j) != SQ_OK) rc = SQ_FAIL;
        else if (!(c->eps > 0 && c->eps < 1)) rc = sq_errorf("%s: key 'layer_norm_eps' is %g, not in (0, 1)", path, c->eps);
        else if (!strcmp(act, "quick_gelu")) c->quick_gelu = true;
        else if (!strcmp(act, "gelu")) c->quick_gelu = false;
        else rc = sq_errorf("%s: hidden_act '%s' is not supported (quick_gelu or gelu)", path, act);
    }
    if (rc == SQ_OK && (c->vocab_size <= 0 || c->hidden <= 0 || c->intermediate <= 0 || c->layers <= 0 ||
                        c->heads <= 0 || c->hidden % c->heads || c->max_positions <= 0 || c->projection_dim <= 0))
        rc = sq_errorf("%s: inconsistent sizes (hidden_size %d, num_attention_heads %d, num_hidden_layers %d)", path,
                       c->hidden, c->heads, c->layers);
    sq_config_free(j);
    return rc;
}

static const sq_st_entry *entry2(const sq_safetensors *st, const char *name) {
    const sq_st_entry *e = sq_st_find(st, name);
    return e && e->ndim == 2 ? e : NULL;
}

// A single file has no config: read the sizes off the tensors.
static int config_from_shapes(sd_clip_config *c, const sq_safetensors *st, const char *path, sd_clip_kind kind) {
    const sq_st_entry *tok = entry2(st, "text_model.embeddings.token_embedding.weight");
    const sq_st_entry *pos = entry2(st, "text_model.embeddings.position_embedding.weight");
    const sq_st_entry *fc1 = entry2(st, "text_model.encoder.layers.0.mlp.fc1.weight");
    const sq_st_entry *proj = entry2(st, "text_projection.weight");
    if (!tok || !pos || !fc1)
        return sq_errorf("%s: not a CLIP text encoder (no 2-D text_model.embeddings.token_embedding / "
                         "position_embedding / encoder.layers.0.mlp.fc1 weights)", path);
    if (!proj) return sq_errorf("%s: missing tensor 'text_projection.weight' (SD3 needs the projected pooled output)", path);
    memset(c, 0, sizeof *c);
    c->vocab_size = (int)tok->shape[0];
    c->hidden = (int)tok->shape[1];
    c->max_positions = (int)pos->shape[0];
    c->intermediate = (int)fc1->shape[0];
    c->projection_dim = (int)proj->shape[0];
    char k[128];
    for (c->layers = 0;; c->layers++) {
        snprintf(k, sizeof k, "text_model.encoder.layers.%d.self_attn.q_proj.weight", c->layers);
        if (!sq_st_find(st, k)) break;
    }
    const char *h = sq_st_metadata(st, "num_attention_heads");
    c->heads = c->hidden / 64;
    if (h) {  // the whole string an integer in [1, width] (atoi would take "12abc" and overflow silently)
        char *end;
        errno = 0;
        long v = strtol(h, &end, 10);
        if (end == h || *end || errno || v < 1 || v > c->hidden)
            return sq_errorf("%s: metadata num_attention_heads is '%.40s', not an integer in [1, %d]", path, h, c->hidden);
        c->heads = (int)v;
    }
    if (c->heads <= 0 || c->hidden % c->heads)
        return sq_errorf("%s: cannot infer the head count of width %d (not a multiple of 64, no "
                         "num_attention_heads metadata)", path, c->hidden);
    if (kind == SD_CLIP_AUTO) {
        if (c->hidden == 1280) kind = SD_CLIP_G;
        else if (c->hidden == 768) kind = SD_CLIP_L;
        else return sq_errorf("%s: width %d is neither CLIP-L (768) nor CLIP-G (1280); say which it is", path, c->hidden);
    }
    c->quick_gelu = kind == SD_CLIP_L;
    c->eps = 1e-5f;
    c->eos_token_id = 2;
    return SQ_OK;
}

typedef struct {
    const sq_safetensors *st;
    const char *origin;
    sq_device device;
    sq_dtype dtype;
    bool offload;   // layers read to the host, then packed into m->offload's store
} loader;

static int load(const loader *L, sq_tensor *dst, const char *name, int ndim, const int64_t *shape) {
    const sq_st_entry *e = sq_st_find(L->st, name);
    if (!e) return sq_errorf("%s: missing tensor '%s'", L->origin, name);
    bool ok = e->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = e->shape[i] == shape[i];
    if (!ok) {
        char a[96] = "", b[96] = "";
        for (int i = 0; i < e->ndim; i++) snprintf(a + strlen(a), sizeof a - strlen(a), i ? ",%lld" : "%lld", (long long)e->shape[i]);
        for (int i = 0; i < ndim; i++) snprintf(b + strlen(b), sizeof b - strlen(b), i ? ",%lld" : "%lld", (long long)shape[i]);
        return sq_errorf("%s: tensor '%s' has shape [%s], expected [%s]", L->origin, name, a, b);
    }
    if (e->dtype != SQ_F32 && e->dtype != SQ_BF16 && e->dtype != SQ_F16)
        return sq_errorf("%s: tensor '%s' is %s, expected a float type", L->origin, name, sq_dtype_name(e->dtype));
    if (sq_tensor_alloc(dst, L->dtype, L->device, ndim, shape) != SQ_OK) return SQ_FAIL;
    sq_tensor src = sq_tensor_view((void *)e->data, e->dtype, SQ_CPU, ndim, shape);
    if (sq_tensor_copy(dst, &src) != SQ_OK) return sq_error_context("%s: tensor '%s'", L->origin, name);
    return SQ_OK;
}

static int load_pair(const loader *L, sq_tensor *w, sq_tensor *b, const char *name, int64_t out, int64_t in) {
    char k[256];
    snprintf(k, sizeof k, "%.240s.weight", name);
    if (in ? load(L, w, k, 2, (int64_t[]){out, in}) : load(L, w, k, 1, (int64_t[]){out})) return SQ_FAIL;
    snprintf(k, sizeof k, "%.240s.bias", name);
    return load(L, b, k, 1, (int64_t[]){out});
}

static int load_weights(sd_clip *m, const loader *L) {
    const sd_clip_config *c = &m->cfg;
    int64_t C = c->hidden, I = c->intermediate;
    if (load(L, &m->tok_emb, "text_model.embeddings.token_embedding.weight", 2, (int64_t[]){c->vocab_size, C}) ||
        load(L, &m->pos_emb, "text_model.embeddings.position_embedding.weight", 2, (int64_t[]){c->max_positions, C}))
        return SQ_FAIL;
    m->layers = calloc((size_t)c->layers, sizeof *m->layers);
    if (!m->layers) return sq_errorf("out of host memory");
    loader LL = *L;   // where the layers go
    if (L->offload) LL.device = SQ_CPU;
    for (int i = 0; i < c->layers; i++) {
        sd_clip_layer *l = &m->layers[i];
        char p[128], n[192];
        snprintf(p, sizeof p, "text_model.encoder.layers.%d", i);
#define PAIR(w, b, sub, o, in) (snprintf(n, sizeof n, "%s.%s", p, sub), load_pair(&LL, &l->w, &l->b, n, o, in))
        if (PAIR(ln1_w, ln1_b, "layer_norm1", C, 0) || PAIR(q_w, q_b, "self_attn.q_proj", C, C) ||
            PAIR(k_w, k_b, "self_attn.k_proj", C, C) || PAIR(v_w, v_b, "self_attn.v_proj", C, C) ||
            PAIR(o_w, o_b, "self_attn.out_proj", C, C) || PAIR(ln2_w, ln2_b, "layer_norm2", C, 0) ||
            PAIR(fc1_w, fc1_b, "mlp.fc1", I, C) || PAIR(fc2_w, fc2_b, "mlp.fc2", C, I))
            return SQ_FAIL;
#undef PAIR
        sq_tensor *ts[SD_CLIP_LAYER_TENSORS];
        int nt = sd_clip_layer_tensors(l, ts);
        if (L->offload && sd_offload_adopt(&m->offload, c->layers, i, ts, nt, L->device) != SQ_OK)
            return sq_error_context("%s: layer %d", L->origin, i);
    }
    if (load_pair(L, &m->final_w, &m->final_b, "text_model.final_layer_norm", C, 0)) return SQ_FAIL;
    return load(L, &m->proj, "text_projection.weight", 2, (int64_t[]){c->projection_dim, C});
}

int sd_clip_load(sd_clip *m, const char *path, sd_clip_kind kind, sq_device device, sq_dtype dtype) {
    return sd_clip_load_ex(m, path, kind, device, dtype, false);
}

int sd_clip_load_ex(sd_clip *m, const char *path, sd_clip_kind kind, sq_device device, sq_dtype dtype, bool offload) {
    memset(m, 0, sizeof *m);
    m->device = device;
    m->dtype = dtype;
    if (device == SQ_CPU && dtype != SQ_F32) return sq_errorf("%s: the CPU CLIP runs in f32 only", path);
    char dir[4200], cfg[4300];
    sq_safetensors *st = NULL;
    const char *origin = path;
    if (sq_is_dir(path)) {
        snprintf(cfg, sizeof cfg, "%s/config.json", path);
        snprintf(dir, sizeof dir, "%s", path);
        char sub[4200];
        snprintf(sub, sizeof sub, "%s/%s", path, kind == SD_CLIP_G ? "text_encoder_2" : "text_encoder");
        if (!sq_is_file(cfg) && kind != SD_CLIP_AUTO && sq_is_dir(sub)) {   // a pipeline folder: pick the component
            snprintf(dir, sizeof dir, "%s", sub);
            snprintf(cfg, sizeof cfg, "%s/config.json", dir);
        }
        if (!sq_is_file(cfg)) return sq_errorf("%s: missing (CLIP text encoder config)", cfg);
        if (config_from_json(&m->cfg, cfg) != SQ_OK) return SQ_FAIL;
        // the reader names the shard; say which folder it is in
        if (sq_st_open(&st, dir) != SQ_OK) return sq_error_context("%s", dir);
        origin = dir;
    } else {
        if (sq_st_open(&st, path) != SQ_OK) return SQ_FAIL;
        if (config_from_shapes(&m->cfg, st, path, kind) != SQ_OK) { sq_st_close(st); return SQ_FAIL; }
    }
    // on the CPU the weights are in host memory already: offload changes nothing
    loader L = {.st = st, .origin = origin, .device = device, .dtype = dtype, .offload = offload && device == SQ_CUDA};
    int rc = load_weights(m, &L);
    sq_st_close(st);
    if (rc != SQ_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", sq_error_message());
        sd_clip_free(m);
        sq_errorf("%s", msg);
    }
    return rc;
}

void sd_clip_free(sd_clip *m) {
    if (m->layers) {
        for (int i = 0; i < m->cfg.layers; i++) {
            sq_tensor *ts[SD_CLIP_LAYER_TENSORS];
            int n = sd_clip_layer_tensors(&m->layers[i], ts);
            for (int j = 0; j < n; j++) sq_tensor_free(ts[j]);   // views of the store: just cleared
        }
        free(m->layers);
    }
    sd_offload_free(&m->offload);
    sq_tensor_free(&m->tok_emb);
    sq_tensor_free(&m->pos_emb);
    sq_tensor_free(&m->final_w);
    sq_tensor_free(&m->final_b);
    sq_tensor_free(&m->proj);
    memset(m, 0, sizeof *m);
}
