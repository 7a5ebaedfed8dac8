// text_encoders/synthetic.c: see text_encoders/synthetic.h. Weights are drawn
// tensor by tensor on the host (uniform, scaled like a trained layer's: ±1/sqrt(K)
// for linears, 1 ± 0.02 for norm gains) and uploaded, so host memory stays at one
// tensor however large the model. With opt->offload on CUDA the blocks' tensors are
// drawn into the host block store instead (text_encoders/offload.h), in the same
// order, so the weights are the same as without offload.
#include "text_encoders/synthetic.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "kernels/int8.h"

typedef struct {
    uint64_t s;
    sq_device device;   // where fill() puts tensors; the host while drawing offloaded blocks
    sq_dtype dtype;
    bool offload;       // blocks into the host store (CUDA only)
} gen;

// Block i's tensors (drawn on the host when offloaded) into the model's store.
static int adopt(gen *g, sd_offload *o, int n_blocks, int i, sq_tensor *const *ts, int n, sq_device device) {
    if (!g->offload) return SQ_OK;
    return sd_offload_adopt(o, n_blocks, i, ts, n, device);
}

static float next_uniform(gen *g) {   // xorshift64*: in [-1, 1)
    g->s ^= g->s >> 12; g->s ^= g->s << 25; g->s ^= g->s >> 27;
    return (float)((g->s * 2685821657736338717ull) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

// A tensor of `shape` with values centre ± spread.
static int fill(gen *g, sq_tensor *t, int ndim, const int64_t *shape, float centre, float spread) {
    if (sq_tensor_alloc(t, g->dtype, g->device, ndim, shape) != SQ_OK) return SQ_FAIL;
    int64_t n = sq_tensor_numel(t);
    float *h = malloc((size_t)n * sizeof *h);
    if (!h) return sq_errorf("out of host memory for a %lld-value synthetic tensor", (long long)n);
    for (int64_t i = 0; i < n; i++) h[i] = centre + spread * next_uniform(g);
    int rc = sq_tensor_from_host_f32(t, h);
    free(h);
    return rc;
}

static int linear(gen *g, sq_tensor *w, sq_tensor *b, int64_t out, int64_t in) {
    float s = 1.0f / sqrtf((float)in);
    if (fill(g, w, 2, SQ_SHAPE(out, in), 0, s) != SQ_OK) return SQ_FAIL;
    return b ? fill(g, b, 1, SQ_SHAPE(out), 0, 0.02f) : SQ_OK;
}

static int make_clip(gen *g, sd_clip *m, int hidden, int layers, int proj, bool quick_gelu) {
    memset(m, 0, sizeof *m);
    sd_clip_config *c = &m->cfg;
    *c = (sd_clip_config){.vocab_size = 49408, .hidden = hidden, .intermediate = 4 * hidden, .layers = layers,
                          .heads = hidden / 64, .max_positions = 77, .projection_dim = proj, .quick_gelu = quick_gelu,
                          .eps = 1e-5f, .eos_token_id = 2};
    m->device = g->device;
    m->dtype = g->dtype;
    m->layers = calloc((size_t)layers, sizeof *m->layers);
    if (!m->layers) return sq_errorf("out of host memory");
    int64_t C = hidden, I = 4 * hidden;
    if (fill(g, &m->tok_emb, 2, SQ_SHAPE(c->vocab_size, C), 0, 0.02f) || fill(g, &m->pos_emb, 2, SQ_SHAPE(77, C), 0, 0.01f))
        return SQ_FAIL;
    if (g->offload) g->device = SQ_CPU;
    for (int i = 0; i < layers; i++) {
        sd_clip_layer *l = &m->layers[i];
        sq_tensor *ts[SD_CLIP_LAYER_TENSORS];
        int n = sd_clip_layer_tensors(l, ts);
        if (fill(g, &l->ln1_w, 1, &C, 1, 0.02f) || fill(g, &l->ln1_b, 1, &C, 0, 0.02f) || fill(g, &l->ln2_w, 1, &C, 1, 0.02f) ||
            fill(g, &l->ln2_b, 1, &C, 0, 0.02f) || linear(g, &l->q_w, &l->q_b, C, C) || linear(g, &l->k_w, &l->k_b, C, C) ||
            linear(g, &l->v_w, &l->v_b, C, C) || linear(g, &l->o_w, &l->o_b, C, C) ||
            linear(g, &l->fc1_w, &l->fc1_b, I, C) || linear(g, &l->fc2_w, &l->fc2_b, C, I) ||
            adopt(g, &m->offload, layers, i, ts, n, m->device))
            return SQ_FAIL;
    }
    g->device = m->device;
    if (fill(g, &m->final_w, 1, &C, 1, 0.02f) || fill(g, &m->final_b, 1, &C, 0, 0.02f)) return SQ_FAIL;
    return linear(g, &m->proj, NULL, proj, C);
}

static int t5_linear(gen *g, sd_t5_linear *l, int64_t out, int64_t in, bool int8) {
    if (!int8) return linear(g, &l->w, NULL, out, in);
    // int8 codes drawn directly (no dense copy): scale so values are ±1/sqrt(K)
    if (sq_tensor_alloc(&l->codes, SQ_I8, g->device, 2, SQ_SHAPE(out, in)) ||
        sq_tensor_alloc(&l->scales, SQ_F32, g->device, 1, SQ_SHAPE(out)))
        return SQ_FAIL;
    int64_t n = out * in;
    int8_t *c = malloc((size_t)n);
    float *s = malloc((size_t)out * sizeof *s);
    if (!c || !s) { free(c); free(s); return sq_errorf("out of host memory"); }
    for (int64_t i = 0; i < n; i++) c[i] = (int8_t)(127.0f * next_uniform(g));
    for (int64_t i = 0; i < out; i++) s[i] = 1.0f / (127.0f * sqrtf((float)in));
    sq_tensor hc = sq_tensor_view(c, SQ_I8, SQ_CPU, 2, SQ_SHAPE(out, in));
    sq_tensor hs = sq_tensor_view(s, SQ_F32, SQ_CPU, 1, SQ_SHAPE(out));
    int rc = sq_tensor_copy(&l->codes, &hc);
    if (rc == SQ_OK) rc = sq_tensor_copy(&l->scales, &hs);
    free(c);
    free(s);
    return rc;
}

static int make_t5(gen *g, sd_t5 *m, bool int8) {
    memset(m, 0, sizeof *m);
    sd_t5_config *c = &m->cfg;
    *c = (sd_t5_config){.d_model = 4096, .d_kv = 64, .d_ff = 10240, .num_layers = 24, .num_heads = 64, .num_buckets = 32,
                        .max_distance = 128, .eps = 1e-6f, .gated = true, .tanh_gelu = true, .vocab = 32128};
    m->device = g->device;
    m->dtype = g->dtype;
    m->int8 = int8;
    m->blocks = calloc((size_t)c->num_layers, sizeof *m->blocks);
    m->rel_bias = malloc((size_t)c->num_buckets * c->num_heads * sizeof(float));
    if (!m->blocks || !m->rel_bias) return sq_errorf("out of host memory");
    for (int i = 0; i < c->num_buckets * c->num_heads; i++) m->rel_bias[i] = next_uniform(g);
    int64_t D = c->d_model, F = c->d_ff, A = (int64_t)c->num_heads * c->d_kv;
    if (fill(g, &m->embed, 2, SQ_SHAPE(c->vocab, D), 0, 1.0f)) return SQ_FAIL;
    if (g->offload) g->device = SQ_CPU;
    for (int i = 0; i < c->num_layers; i++) {
        sd_t5_block *b = &m->blocks[i];
        sq_tensor *ts[SD_T5_BLOCK_TENSORS];
        int n = sd_t5_block_tensors(b, ts);
        if (fill(g, &b->attn_norm, 1, &D, 1, 0.02f) || t5_linear(g, &b->q, A, D, int8) || t5_linear(g, &b->k, A, D, int8) ||
            t5_linear(g, &b->v, A, D, int8) || t5_linear(g, &b->o, D, A, int8) || fill(g, &b->ff_norm, 1, &D, 1, 0.02f) ||
            t5_linear(g, &b->wi0, F, D, int8) || t5_linear(g, &b->wi1, F, D, int8) || t5_linear(g, &b->wo, D, F, int8) ||
            adopt(g, &m->offload, c->num_layers, i, ts, n, m->device))
            return SQ_FAIL;
    }
    g->device = m->device;
    return fill(g, &m->final_norm, 1, &D, 1, 0.02f);
}

int sd_text_encoders_init_synthetic(sd_text_encoders *te, const char *tokenizers, sq_device device, sq_dtype dtype,
                                    const sd_text_options *opt, uint64_t seed) {
    memset(te, 0, sizeof *te);
    if (opt) te->opt = *opt;
    else sd_text_options_defaults(&te->opt);
    te->device = device;
    te->dtype = dtype;
    // on the CPU the weights are host memory already: offload changes nothing
    gen g = {.s = seed * 0x9E3779B97F4A7C15ull + 1, .device = device, .dtype = dtype,
             .offload = te->opt.offload && device == SQ_CUDA};
    char p[4200];
    int rc = make_clip(&g, &te->clip_l, 768, 12, 768, true);
    if (rc == SQ_OK) rc = make_clip(&g, &te->clip_g, 1280, 32, 1280, false);
    if (rc == SQ_OK && te->opt.use_t5) {
        rc = make_t5(&g, &te->t5, te->opt.t5_int8);
        te->has_t5 = rc == SQ_OK;
    }
    te->context_dim = 4096;   // T5-XXL's width, also SD3's joint_attention_dim without T5
    if (rc == SQ_OK) {
        snprintf(p, sizeof p, "%s/tokenizer", tokenizers);
        rc = sd_clip_tokenizer_load(&te->tok_l, p);
    }
    if (rc == SQ_OK) {
        snprintf(p, sizeof p, "%s/tokenizer_2", tokenizers);
        rc = sd_clip_tokenizer_load(&te->tok_g, p);
    }
    if (rc == SQ_OK && te->has_t5) {
        snprintf(p, sizeof p, "%s/tokenizer_3", tokenizers);
        rc = sd_t5_tokenizer_load(&te->tok_t5, p);
    }
    if (rc != SQ_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", sq_error_message());
        sd_text_encoders_free(te);
        return sq_errorf("synthetic text encoders: %s", msg);
    }
    return SQ_OK;
}
