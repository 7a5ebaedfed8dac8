// text_encoders/clip_encoder.c: the CLIP text forward pass (transformers'
// CLIPTextTransformer + text_projection), written against kernels/ops.h only.
// Shapes: B prompts, T tokens (77 for SD3), C width, NH heads, HS = C/NH, I MLP width.
// Scratch is seven activations (residual, normed, q, k, v, attention, MLP hidden),
// taken once and reused by every layer.
#include <math.h>
#include <string.h>

#include "core/error.h"
#include "kernels/ops.h"
#include "text_encoders/clip_encoder.h"

int sd_clip_eos_position(const sd_clip_config *c, const int32_t *ids, int T) {
    int best = 0;
    if (c->eos_token_id == 2) {
        // legacy rule (transformers before PR #24773, kept for configs with eos 2):
        // argmax of the ids, the EOS being the largest id of CLIP's vocabulary
        for (int t = 1; t < T; t++)
            if (ids[t] > ids[best]) best = t;
        return best;
    }
    for (int t = 0; t < T; t++)
        if (ids[t] == c->eos_token_id) return t;
    return best;   // argmax of an all-false mask is 0
}

static size_t aligned(size_t n) { return (n + SQ_ARENA_ALIGN - 1) / SQ_ARENA_ALIGN * SQ_ARENA_ALIGN; }

size_t sd_clip_scratch_bytes(const sd_clip *m, int B, int T) {
    const sd_clip_config *c = &m->cfg;
    size_t act = aligned(sq_dtype_bytes(m->dtype, (int64_t)B * T * c->hidden));
    return 6 * act + aligned(sq_dtype_bytes(m->dtype, (int64_t)B * T * c->intermediate)) +
           aligned(sq_dtype_bytes(m->dtype, (int64_t)B * c->hidden)) + SQ_ARENA_ALIGN;
}

// A view of rows [r0, r0+n) of a (rows, C) tensor's memory, shaped (n, C).
static sq_tensor rows(const sq_tensor *t, int64_t r0, int64_t n, int64_t C) {
    size_t off = sq_dtype_bytes(t->dtype, r0 * C);
    return sq_tensor_view((char *)t->data + off, t->dtype, t->device, 2, (int64_t[]){n, C});
}

typedef struct {
    sq_tensor h, q, k, v, o, u;
} clip_scratch;

int sd_clip_layer_tensors(sd_clip_layer *l, sq_tensor *out[SD_CLIP_LAYER_TENSORS]) {
    sq_tensor *ts[SD_CLIP_LAYER_TENSORS] = {&l->ln1_w, &l->ln1_b, &l->ln2_w, &l->ln2_b, &l->q_w,   &l->q_b,
                                            &l->k_w,   &l->k_b,   &l->v_w,   &l->v_b,   &l->o_w,   &l->o_b,
                                            &l->fc1_w, &l->fc1_b, &l->fc2_w, &l->fc2_b};
    memcpy(out, ts, sizeof ts);
    return SD_CLIP_LAYER_TENSORS;
}

// Layer i's weights where they are: on the device already, or (offload) uploaded
// into the staging layer just now and described by *staged. NULL on a failed upload.
static const sd_clip_layer *layer_weights(const sd_clip *m, int i, sd_clip_layer *staged) {
    if (!m->offload.host) return &m->layers[i];
    *staged = m->layers[i];
    sq_tensor *ts[SD_CLIP_LAYER_TENSORS];
    int n = sd_clip_layer_tensors(staged, ts);
    return sd_offload_stage(&m->offload, i, ts, n) == SQ_OK ? staged : NULL;
}

// x (B,T,C) = x + attn(ln1(x)); x = x + mlp(ln2(x)), as CLIPEncoderLayer.
static void layer_forward(const sd_clip *m, const sd_clip_layer *l, sq_tensor *x, clip_scratch *s) {
    const sd_clip_config *c = &m->cfg;
    float scale = 1.0f / sqrtf((float)(c->hidden / c->heads));
    sq_layernorm(&s->h, x, &l->ln1_w, &l->ln1_b, c->eps);
    sq_matmul(&s->q, &s->h, &l->q_w, &l->q_b);
    sq_matmul(&s->k, &s->h, &l->k_w, &l->k_b);
    sq_matmul(&s->v, &s->h, &l->v_w, &l->v_b);
    // the (B,T,C) projections read as (B,T,NH,HS) in place; causal, and no padding
    // mask because SD3 passes none (pads after the EOS are attended by later pads only)
    int64_t B = x->shape[0], T = x->shape[1], NH = c->heads, HS = c->hidden / c->heads;
    const int64_t sh4[4] = {B, T, NH, HS};
    sq_tensor q4 = sq_tensor_reshape(&s->q, 4, sh4), k4 = sq_tensor_reshape(&s->k, 4, sh4);
    sq_tensor v4 = sq_tensor_reshape(&s->v, 4, sh4), o4 = sq_tensor_reshape(&s->o, 4, sh4);
    sq_attention(&o4, &q4, &k4, &v4, NULL, NULL, true, scale);
    sq_matmul(&s->h, &s->o, &l->o_w, &l->o_b);
    sq_add(x, x, &s->h);
    sq_layernorm(&s->h, x, &l->ln2_w, &l->ln2_b, c->eps);
    sq_matmul(&s->u, &s->h, &l->fc1_w, &l->fc1_b);
    if (c->quick_gelu) sq_quick_gelu(&s->u, &s->u);
    else sq_gelu(&s->u, &s->u, false);
    sq_matmul(&s->h, &s->u, &l->fc2_w, &l->fc2_b);
    sq_add(x, x, &s->h);
}

static int check_out(const sq_tensor *t, const char *what, const sd_clip *m, int ndim, const int64_t *shape) {
    bool ok = t->ndim == ndim && t->device == m->device && t->dtype == m->dtype;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        char buf[96];
        return sq_errorf("clip encode: %s is %s, expected %s (%lld,%lld%s) on the model's device", what,
                         sq_tensor_describe(t, buf, sizeof buf), sq_dtype_name(m->dtype), (long long)shape[0],
                         (long long)shape[1], ndim == 3 ? ",C" : "");
    }
    return SQ_OK;
}

int sd_clip_encode(const sd_clip *m, sq_arena *a, const int32_t *ids, int B, int T, const sd_clip_outputs *out) {
    const sd_clip_config *c = &m->cfg;
    int64_t C = c->hidden;
    if (B <= 0 || T <= 0 || T > c->max_positions)
        return sq_errorf("clip encode: %d tokens per prompt (the model has %d positions)", T, c->max_positions);
    for (int64_t i = 0; i < (int64_t)B * T; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return sq_errorf("clip encode: token id %d outside the vocabulary of %d", (int)ids[i], c->vocab_size);
    const int64_t s3[3] = {B, T, C}, sp[2] = {B, c->projection_dim};
    if ((out->penultimate && check_out(out->penultimate, "penultimate", m, 3, s3)) ||
        (out->last && check_out(out->last, "last", m, 3, s3)) || (out->pooled && check_out(out->pooled, "pooled", m, 2, sp)))
        return SQ_FAIL;

    size_t mark = sq_arena_mark(a);
    sq_tensor x, pooled_rows;
    clip_scratch s;
    const int64_t s_mlp[3] = {B, T, c->intermediate};
    if (sq_arena_tensor(a, &x, m->dtype, 3, s3) || sq_arena_tensor(a, &s.h, m->dtype, 3, s3) ||
        sq_arena_tensor(a, &s.q, m->dtype, 3, s3) || sq_arena_tensor(a, &s.k, m->dtype, 3, s3) ||
        sq_arena_tensor(a, &s.v, m->dtype, 3, s3) || sq_arena_tensor(a, &s.o, m->dtype, 3, s3) ||
        sq_arena_tensor(a, &s.u, m->dtype, 3, s_mlp) || sq_arena_tensor(a, &pooled_rows, m->dtype, 2, (int64_t[]){B, C})) {
        sq_arena_reset(a, mark);
        return sq_error_context("clip encode (scratch for B=%d, T=%d)", B, T);
    }

    // embeddings: token rows, plus the first T position rows for each prompt
    sq_tensor x2 = sq_tensor_reshape(&x, 2, (int64_t[]){(int64_t)B * T, C});
    sq_embedding(&x2, &m->tok_emb, ids);
    sq_tensor pos = rows(&m->pos_emb, 0, T, C);
    for (int b = 0; b < B; b++) {
        sq_tensor xb = rows(&x2, (int64_t)b * T, T, C);
        sq_add(&xb, &xb, &pos);
    }

    // hidden_states = (embeddings, layer 1, ..., layer L): [-2] is the input of the last layer
    for (int i = 0; i < c->layers; i++) {
        if (i == c->layers - 1 && out->penultimate) sq_copy(out->penultimate, &x);
        sd_clip_layer staged;
        const sd_clip_layer *l = layer_weights(m, i, &staged);
        if (!l) {
            sq_arena_reset(a, mark);
            return sq_error_context("clip encode: layer %d", i);
        }
        layer_forward(m, l, &x, &s);
    }

    if (!out->last && !out->pooled) { sq_arena_reset(a, mark); return SQ_OK; }
    sq_tensor *fin = out->last ? out->last : &s.h;
    sq_layernorm(fin, &x, &m->final_w, &m->final_b, c->eps);
    if (out->pooled) {
        sq_tensor fin2 = sq_tensor_reshape(fin, 2, (int64_t[]){(int64_t)B * T, C});
        for (int b = 0; b < B; b++) {
            int t = sd_clip_eos_position(c, ids + (int64_t)b * T, T);
            sq_tensor src = rows(&fin2, (int64_t)b * T + t, 1, C), dst = rows(&pooled_rows, b, 1, C);
            sq_copy(&dst, &src);
        }
        sq_matmul(out->pooled, &pooled_rows, &m->proj, NULL);
    }
    sq_arena_reset(a, mark);
    return SQ_OK;
}
