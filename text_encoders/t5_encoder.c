// text_encoders/t5_encoder.c: the T5 encoder's forward pass (transformers'
// T5EncoderModel, encoder stack only), written once against kernels/ops.h.
// Per block, pre-norm residuals:
//   x += o(attention(q(n), k(n), v(n); bias, scale 1)),  n = rmsnorm(x) · w
//   x += wo(gelu(wi_0 n) ⊙ wi_1 n),                      n = rmsnorm(x) · w
// then out = rmsnorm(x) · final_w. The residual stream lives in `out` itself.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "kernels/int8.h"
#include "kernels/ops.h"
#include "text_encoders/t5_encoder.h"

// transformers' T5Attention._relative_position_bucket with bidirectional=True: half
// the buckets for keys after the query; in each half, exact buckets for distances
// below max_exact and log-spaced ones up to max_distance. The log term is evaluated
// in float32 in the same order as PyTorch does (log(n / max_exact) / log(max_distance /
// max_exact) * (half - max_exact), truncated), so bucket edges land where its do.
int sd_t5_relative_bucket(int relative_position, int num_buckets, int max_distance) {
    int half = num_buckets / 2, max_exact = half / 2;
    int bucket = relative_position > 0 ? half : 0;
    int n = relative_position < 0 ? -relative_position : relative_position;
    if (n < max_exact) return bucket + n;
    float denom = (float)log((double)max_distance / (double)max_exact);
    float v = logf((float)n / (float)max_exact) / denom * (float)(half - max_exact);
    int large = max_exact + (int)v;
    return bucket + (large < half - 1 ? large : half - 1);
}

// The (NH,T,T) bias every layer adds: bias[h,i,j] = rel_bias[bucket(j - i), h].
static int position_bias(const sd_t5 *m, sq_arena *a, int T, sq_tensor *out) {
    int NH = m->cfg.num_heads;
    if (sq_arena_tensor(a, out, m->dtype, 3, (int64_t[]){NH, T, T}) != SQ_OK) return SQ_FAIL;
    float *h = sq_malloc((size_t)NH * (size_t)T * (size_t)T * sizeof(float));
    if (!h) return SQ_FAIL;
    for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++) {
            int b = sd_t5_relative_bucket(j - i, m->cfg.num_buckets, m->cfg.max_distance);
            for (int hd = 0; hd < NH; hd++) h[((size_t)hd * T + i) * T + j] = m->rel_bias[b * NH + hd];
        }
    int rc = sq_tensor_from_host_f32(out, h);
    free(h);
    return rc;
}

// out (N,Nout) = x (N,K) · Wᵀ; an int8 W is first dequantised into wbuf.
static void linear(sq_tensor *out, const sq_tensor *x, const sd_t5_linear *l, sq_tensor *wbuf) {
    if (!l->codes.data) {
        sq_matmul(out, x, &l->w, NULL);
        return;
    }
    sq_tensor w = sq_tensor_view(wbuf->data, wbuf->dtype, wbuf->device, 2, l->codes.shape);
    SQ_CHECK(sq_tensor_numel(&w) <= sq_tensor_numel(wbuf), "t5: int8 dequant buffer too small");
    sq_dequant_i8(&w, &l->codes, &l->scales);
    sq_matmul(out, x, &w, NULL);
}

int sd_t5_block_tensors(sd_t5_block *b, sq_tensor *out[SD_T5_BLOCK_TENSORS]) {
    int n = 0;
    out[n++] = &b->attn_norm;
    out[n++] = &b->ff_norm;
    sd_t5_linear *ls[7] = {&b->q, &b->k, &b->v, &b->o, &b->wi0, &b->wi1, &b->wo};
    for (int j = 0; j < 7; j++) {
        out[n++] = &ls[j]->w;
        out[n++] = &ls[j]->codes;
        out[n++] = &ls[j]->scales;
    }
    return n;
}

// Block l's weights where they are: on the device already, or (offload) uploaded
// into the staging block just now and described by *staged. NULL on a failed upload.
static const sd_t5_block *block_weights(const sd_t5 *m, int l, sd_t5_block *staged) {
    if (!m->offload.host) return &m->blocks[l];
    *staged = m->blocks[l];
    sq_tensor *ts[SD_T5_BLOCK_TENSORS];
    int n = sd_t5_block_tensors(staged, ts);
    return sd_offload_stage(&m->offload, l, ts, n) == SQ_OK ? staged : NULL;
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

size_t sd_t5_scratch_bytes(const sd_t5_config *c, int B, int T) {
    int64_t N = (int64_t)B * T, d = c->d_model, inner = (int64_t)c->num_heads * c->d_kv, ff = c->d_ff;
    int64_t elems = N * d                              // normed activations / projections
                  + 4 * N * inner                      // q, k, v, attention output
                  + 2 * N * ff                         // the two FFN branches
                  + (int64_t)c->num_heads * T * T      // position bias
                  + max64(inner * d, ff * d);          // one dequantised int8 weight
    return (size_t)elems * 4 + 16 * SQ_ARENA_ALIGN;
}

int sd_t5_encode(const sd_t5 *m, sq_arena *scratch, const int32_t *ids, int B, int T, sq_tensor *out) {
    const sd_t5_config *c = &m->cfg;
    int64_t N = (int64_t)B * T, d = c->d_model, ff = c->d_ff, NH = c->num_heads, HS = c->d_kv;
    if (B <= 0 || T <= 0) return sq_errorf("t5 encode: empty batch (B=%d, T=%d)", B, T);
    if (out->ndim != 3 || out->shape[0] != B || out->shape[1] != T || out->shape[2] != d || out->device != m->device ||
        out->dtype != m->dtype) {
        char buf[96];
        return sq_errorf("t5 encode: out is %s, expected %s[%d,%d,%d] on the model's device",
                         sq_tensor_describe(out, buf, sizeof buf), sq_dtype_name(m->dtype), B, T, (int)d);
    }
    for (int64_t i = 0; i < N; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab)
            return sq_errorf("t5 encode: token id %d (batch %lld, position %lld) is outside the vocabulary of %d",
                             (int)ids[i], (long long)(i / T), (long long)(i % T), c->vocab);
    size_t mark = sq_arena_mark(scratch);
    sq_tensor x = sq_tensor_reshape(out, 2, (int64_t[]){N, d});
    sq_tensor h, q, k, v, att, f0, f1 = {0}, bias, wbuf = {0};
    int64_t qkv[4] = {B, T, NH, HS};
    if (sq_arena_tensor(scratch, &h, m->dtype, 2, (int64_t[]){N, d}) || sq_arena_tensor(scratch, &q, m->dtype, 4, qkv) ||
        sq_arena_tensor(scratch, &k, m->dtype, 4, qkv) || sq_arena_tensor(scratch, &v, m->dtype, 4, qkv) ||
        sq_arena_tensor(scratch, &att, m->dtype, 4, qkv) ||
        sq_arena_tensor(scratch, &f0, m->dtype, 2, (int64_t[]){N, ff}) ||
        (c->gated && sq_arena_tensor(scratch, &f1, m->dtype, 2, (int64_t[]){N, ff})) ||
        (m->int8 && sq_arena_tensor(scratch, &wbuf, m->dtype, 1, (int64_t[]){max64(NH * HS * d, ff * d)})) ||
        position_bias(m, scratch, T, &bias) != SQ_OK) {
        sq_arena_reset(scratch, mark);
        return sq_error_context("t5 encode (B=%d, T=%d)", B, T);
    }
    // attention sees q/k/v as (B,T,NH,HS); the linears write them as (N, NH*HS)
    sq_tensor q2 = sq_tensor_reshape(&q, 2, (int64_t[]){N, NH * HS}), k2 = sq_tensor_reshape(&k, 2, q2.shape);
    sq_tensor v2 = sq_tensor_reshape(&v, 2, q2.shape), att2 = sq_tensor_reshape(&att, 2, q2.shape);

    sq_embedding(&x, &m->embed, ids);
    for (int l = 0; l < c->num_layers; l++) {
        sd_t5_block staged;
        const sd_t5_block *b = block_weights(m, l, &staged);
        if (!b) {
            sq_arena_reset(scratch, mark);
            return sq_error_context("t5 encode: block %d", l);
        }
        sq_rmsnorm(&h, &x, &b->attn_norm, c->eps);
        linear(&q2, &h, &b->q, &wbuf);
        linear(&k2, &h, &b->k, &wbuf);
        linear(&v2, &h, &b->v, &wbuf);
        // T5 folds any scaling into its weights: scores are plain q·k + bias
        sq_attention(&att, &q, &k, &v, &bias, NULL, false, 1.0f);
        linear(&h, &att2, &b->o, &wbuf);
        sq_add(&x, &x, &h);

        sq_rmsnorm(&h, &x, &b->ff_norm, c->eps);
        linear(&f0, &h, &b->wi0, &wbuf);
        sq_gelu(&f0, &f0, c->tanh_gelu);
        if (c->gated) {
            linear(&f1, &h, &b->wi1, &wbuf);
            sq_mul(&f0, &f0, &f1);
        }
        linear(&h, &f0, &b->wo, &wbuf);
        sq_add(&x, &x, &h);
    }
    sq_rmsnorm(&x, &x, &m->final_norm, c->eps);
    sq_arena_reset(scratch, mark);
    return SQ_OK;
}
