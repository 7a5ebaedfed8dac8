// mmdit/joint_block.c: one MMDiT joint block (diffusers JointTransformerBlock):
// adaLN-Zero modulation of both streams, joint attention over [image; context]
// tokens with optional QK RMSNorm, the MMDiT-X second image-only attention, gated
// residuals, GELU(tanh) MLPs, and the context_pre_only variant of the last block.
#include <math.h>

#include "core/error.h"
#include "kernels/ops.h"
#include "kernels/streams.h"
#include "mmdit/blocks.h"

// q/k/v projections of x (B,T,D) into the given (B,T,NH,HS) tensors, RMSNorm per
// head when given.
static int project_qkv_into(const sd_mmdit *m, sq_arena *a, const sq_tensor *x, const sq_linear *lq,
                            const sq_linear *lk, const sq_linear *lv, const sq_tensor *nq, const sq_tensor *nk,
                            const sq_perturb *p, sq_tensor *q, sq_tensor *k, sq_tensor *v) {
    int64_t B = x->shape[0], T = x->shape[1], NH = m->cfg.num_heads, HS = m->cfg.head_dim;
    // the linears write (B,T,D); the same memory is then read as (B,T,NH,HS)
    const int64_t flat[3] = {B, T, NH * HS};
    sq_tensor q3 = sq_tensor_reshape(q, 3, flat), k3 = sq_tensor_reshape(k, 3, flat), v3 = sq_tensor_reshape(v, 3, flat);
    // one GEMM for the three where they allow it (kernels/linear.h): q, k and v lie
    // equally far apart (qkv_tensors, alloc_joint)
    if (sq_linear_forward_shared_input((sq_tensor *[]){&q3, &k3, &v3}, x, (const sq_linear *[]){lq, lk, lv}, 3, p, a))
        return SQ_FAIL;
    // RMSNorm over each head's HS features (the last dim of the 4-D view)
    if (nq && nq->data) sq_rmsnorm(q, q, nq, 1e-6f);
    if (nk && nk->data) sq_rmsnorm(k, k, nk, 1e-6f);
    return SQ_OK;
}

// Three tensors of one shape, one after the other in one allocation from `a`: the
// projections into them can then run as one GEMM.
static int qkv_tensors(const sd_mmdit *m, sq_arena *a, const int64_t shape[4], sq_tensor *q, sq_tensor *k, sq_tensor *v) {
    sq_tensor all;
    if (sd_tmp(a, m, &all, 4, (int64_t[]){3 * shape[0], shape[1], shape[2], shape[3]})) return SQ_FAIL;
    size_t bytes = sq_tensor_nbytes(&all) / 3;
    sq_tensor *ts[3] = {q, k, v};
    for (int i = 0; i < 3; i++) *ts[i] = sq_tensor_view((char *)all.data + (size_t)i * bytes, all.dtype, all.device, 4, shape);
    return SQ_OK;
}

static int project_qkv(const sd_mmdit *m, sq_arena *a, const sq_tensor *x, const sq_linear *lq, const sq_linear *lk,
                       const sq_linear *lv, const sq_tensor *nq, const sq_tensor *nk, const sq_perturb *p, sq_tensor *q,
                       sq_tensor *k, sq_tensor *v) {
    const int64_t shape[4] = {x->shape[0], x->shape[1], m->cfg.num_heads, m->cfg.head_dim};
    if (qkv_tensors(m, a, shape, q, k, v)) return SQ_FAIL;
    return project_qkv_into(m, a, x, lq, lk, lv, nq, nk, p, q, k, v);
}

// Rows [start, start + count) of a (1,L,NH,HS) tensor, as a (1,count,NH,HS) view.
static sq_tensor token_rows(const sq_tensor *t, int64_t start, int64_t count) {
    int64_t row = t->shape[2] * t->shape[3];
    size_t es = sq_dtype_bytes(t->dtype, 1);
    return sq_tensor_view((char *)t->data + (size_t)(start * row) * es, t->dtype, t->device, 4,
                          (int64_t[]){1, count, t->shape[2], t->shape[3]});
}

// Joint attention: image tokens first, then context tokens, as JointAttnProcessor2_0.
// The projections are split in two halves (kernels/streams.h): the context half runs
// on the side stream with its own arena `side`, the image half on the default
// stream, and both meet before the attention.
// With one sample (training's batch) the two streams are projected straight into
// their rows of the joint Q, K, V, and the outputs are views of O's rows: no concat
// or slice copies (about 8 GB of memory traffic per SD3.5 Large forward at 1024²);
// the numbers are the same either way.
typedef struct {
    sq_tensor Q, K, V, O;        // (B, N+T, NH, HS), joint
    sq_tensor q, k, v;           // B > 1: the image half's projections
    sq_tensor cq, ck, cv;        // B > 1: the context half's (in the side arena)
} joint_qkv;

static int alloc_joint(const sd_mmdit *m, sq_arena *a, int64_t B, int64_t N, int64_t T, joint_qkv *j) {
    const int64_t all[4] = {B, N + T, m->cfg.num_heads, m->cfg.head_dim};
    return qkv_tensors(m, a, all, &j->Q, &j->K, &j->V) || sd_tmp(a, m, &j->O, 4, all);
}

// One half's q, k, v: straight into the joint rows [start, start + len) when B == 1,
// else into tensors of its own from `a`.
static int project_half(const sd_mmdit *m, sq_arena *a, joint_qkv *j, const sq_tensor *h, int64_t start,
                        const sq_linear *lq, const sq_linear *lk, const sq_linear *lv, const sq_tensor *nq,
                        const sq_tensor *nk, const sq_perturb *p, sq_tensor *q, sq_tensor *k, sq_tensor *v) {
    int64_t len = h->shape[1];
    if (h->shape[0] == 1) {
        *q = token_rows(&j->Q, start, len), *k = token_rows(&j->K, start, len), *v = token_rows(&j->V, start, len);
        return project_qkv_into(m, a, h, lq, lk, lv, nq, nk, p, q, k, v);
    }
    return project_qkv(m, a, h, lq, lk, lv, nq, nk, p, q, k, v);
}

// The attention over the joint tokens; out_x (B,N,D) and out_c (B,T,D) are its
// outputs before the projections (views of O when B == 1, else copies into them).
static void attend(const sd_mmdit *m, joint_qkv *j, int64_t B, int64_t N, int64_t T, sq_tensor *out_x,
                   sq_tensor *out_c) {
    int64_t NH = m->cfg.num_heads, HS = m->cfg.head_dim;
    if (B > 1) {
        sq_concat(&j->Q, (const sq_tensor *[]){&j->q, &j->cq}, 2, 1);
        sq_concat(&j->K, (const sq_tensor *[]){&j->k, &j->ck}, 2, 1);
        sq_concat(&j->V, (const sq_tensor *[]){&j->v, &j->cv}, 2, 1);
    }
    sq_attention(&j->O, &j->Q, &j->K, &j->V, NULL, NULL, false, 1.0f / sqrtf((float)HS));
    if (B == 1) {
        sq_tensor ox = token_rows(&j->O, 0, N), oc = token_rows(&j->O, N, T);
        *out_x = sq_tensor_reshape(&ox, 3, (int64_t[]){1, N, NH * HS});
        *out_c = sq_tensor_reshape(&oc, 3, (int64_t[]){1, T, NH * HS});
        return;
    }
    sq_tensor ox = sq_tensor_reshape(out_x, 4, (int64_t[]){B, N, NH, HS});
    sq_tensor oc = sq_tensor_reshape(out_c, 4, (int64_t[]){B, T, NH, HS});
    sq_slice(&ox, &j->O, 1, 0);
    sq_slice(&oc, &j->O, 1, N);
}

// The dual (MMDiT-X) image-only self-attention, projected: out (B,N,D).
static int self_attention2(const sd_mmdit *m, const sd_mmdit_block *b, sq_arena *a, const sq_tensor *h,
                           const sq_perturb *p, sq_tensor *out) {
    int64_t B = h->shape[0], N = h->shape[1], NH = m->cfg.num_heads, HS = m->cfg.head_dim;
    size_t mark = sq_arena_mark(a);
    sq_tensor q, k, v, o;
    if (project_qkv(m, a, h, &b->attn2_q, &b->attn2_k, &b->attn2_v, &b->attn2_norm_q, &b->attn2_norm_k, p, &q, &k, &v) ||
        sd_tmp(a, m, &o, 4, (int64_t[]){B, N, NH, HS}))
        return SQ_FAIL;
    sq_attention(&o, &q, &k, &v, NULL, NULL, false, 1.0f / sqrtf((float)HS));
    sq_tensor o3 = sq_tensor_reshape(&o, 3, (int64_t[]){B, N, NH * HS});
    if (sq_linear_forward(out, &o3, &b->attn2_out, p, a)) return SQ_FAIL;
    sq_arena_reset(a, mark);
    return SQ_OK;
}

// x += attn_gate * attn (the attention residual), then
// x += gate * MLP(modulate(layernorm(x), shift, scale)). The attention residual and
// the MLP's norm run as one op (one pass over x on the GPU).
static int mlp_residual(const sd_mmdit *m, sq_arena *a, sq_tensor *x, const sq_tensor *attn_gate, const sq_tensor *attn,
                        const sq_linear *fc1, const sq_linear *fc2, const sq_tensor *shift, const sq_tensor *scale,
                        const sq_tensor *gate, const sq_perturb *p) {
    int64_t B = x->shape[0], T = x->shape[1], D = x->shape[2];
    size_t mark = sq_arena_mark(a);
    sq_tensor h, u, f;
    if (sd_tmp(a, m, &h, 3, x->shape) || sd_tmp(a, m, &u, 3, (int64_t[]){B, T, 4 * D}) || sd_tmp(a, m, &f, 3, x->shape))
        return SQ_FAIL;
    sq_gated_add_layernorm_modulate(x, attn_gate, attn, &h, shift, scale, 1e-6f);
    if (sq_linear_forward_gelu(&u, &h, fc1, p, a)) return SQ_FAIL;
    if (sq_linear_forward(&f, &u, fc2, p, a)) return SQ_FAIL;
    sq_gated_add(x, gate, &f);
    sq_arena_reset(a, mark);
    return SQ_OK;
}

size_t sd_joint_block_side_bytes(const sd_mmdit_config *c, int B, int T, int elem_bytes) {
    size_t D = (size_t)c->hidden, es = (size_t)elem_bytes, act = (size_t)B * (size_t)T * D * es;
    // hc, pc; the MLP's h, u (4D), f; with B > 1 cq, ck, cv; the dequantised weights
    // (the context MLP's 4D x D, or q, k and v side by side, 3D x D); arena alignment
    return 11 * act + 4 * D * D * es + ((size_t)16 << 10);
}

int sd_joint_block(const sd_mmdit *m, const sd_mmdit_block *b, sq_arena *a, sq_arena *side, sq_tensor *x,
                   sq_tensor *c, const sq_tensor *silu_temb, const sq_perturb *p) {
    int64_t B = x->shape[0], N = x->shape[1], T = c->shape[1], D = m->cfg.hidden;
    sq_device dev = m->device;
    size_t mark = sq_arena_mark(a), side_mark = sq_arena_mark(side);
    // image-stream modulation: shift, scale, gate for attention; shift, scale, gate
    // for the MLP; and for dual blocks shift, scale, gate of the second attention
    int nx = b->dual ? 9 : 6, nc = b->context_pre_only ? 2 : 6;
    sq_tensor mod, cmod, xm[9], cm[6];
    if (sd_tmp(a, m, &mod, 2, (int64_t[]){B, nx * D}) || sd_tmp(a, m, &cmod, 2, (int64_t[]){B, nc * D})) return SQ_FAIL;
    if (sq_linear_forward(&mod, silu_temb, &b->norm1, p, a) || sq_linear_forward(&cmod, silu_temb, &b->norm1_context, p, a))
        return SQ_FAIL;
    for (int i = 0; i < nx; i++)
        if (sd_chunk(a, m, &mod, nx, i, &xm[i])) return SQ_FAIL;
    for (int i = 0; i < nc; i++)
        if (sd_chunk(a, m, &cmod, nc, i, &cm[i])) return SQ_FAIL;

    sq_tensor hx, hx2, hc, ax, ac, px, pc;
    joint_qkv j;
    if (sd_tmp(a, m, &hx, 3, x->shape) || sd_tmp(side, m, &hc, 3, c->shape) || sd_tmp(a, m, &ax, 3, x->shape) ||
        sd_tmp(a, m, &ac, 3, c->shape) || sd_tmp(a, m, &px, 3, x->shape) || alloc_joint(m, a, B, N, T, &j))
        return SQ_FAIL;
    // the context half: norm and q/k/v projections, on the side stream
    sq_stream_fork(dev);
    sq_stream_side(dev, true);
    // the last block's context norm is AdaLayerNormContinuous, whose chunks are (scale, shift)
    if (b->context_pre_only) sq_layernorm_modulate(&hc, c, &cm[1], &cm[0], 1e-6f);
    else sq_layernorm_modulate(&hc, c, &cm[0], &cm[1], 1e-6f);
    int rc = project_half(m, side, &j, &hc, N, &b->add_q, &b->add_k, &b->add_v, &b->norm_added_q, &b->norm_added_k,
                          p, &j.cq, &j.ck, &j.cv);
    sq_stream_side(dev, false);
    // the image half, meanwhile
    sq_layernorm_modulate(&hx, x, &xm[0], &xm[1], 1e-6f);
    if (b->dual) {   // norm1's one layernorm, modulated a second time (recomputed: cheaper than storing it)
        if (sd_tmp(a, m, &hx2, 3, x->shape)) rc = SQ_FAIL;
        else sq_layernorm_modulate(&hx2, x, &xm[6], &xm[7], 1e-6f);
    }
    if (rc == SQ_OK)
        rc = project_half(m, a, &j, &hx, 0, &b->to_q, &b->to_k, &b->to_v, &b->norm_q, &b->norm_k, p, &j.q, &j.k, &j.v);
    sq_stream_join(dev);
    if (rc != SQ_OK) return SQ_FAIL;
    attend(m, &j, B, N, T, &ax, &ac);

    // the context half's output projection and MLP, on the side stream again
    if (!b->context_pre_only) {
        sq_stream_fork(dev);
        sq_stream_side(dev, true);
        if (sd_tmp(side, m, &pc, 3, c->shape) || sq_linear_forward(&pc, &ac, &b->to_add_out, p, side) ||
            mlp_residual(m, side, c, &cm[2], &pc, &b->ff_context1, &b->ff_context2, &cm[3], &cm[4], &cm[5], p))
            rc = SQ_FAIL;
        sq_stream_side(dev, false);
    }
    if (rc == SQ_OK && sq_linear_forward(&px, &ax, &b->to_out, p, a)) rc = SQ_FAIL;
    // the residual of the last attention before the MLP is added inside mlp_residual
    const sq_tensor *attn_gate = &xm[2];
    if (rc == SQ_OK && b->dual) {
        sq_gated_add(x, &xm[2], &px);
        if (self_attention2(m, b, a, &hx2, p, &px)) rc = SQ_FAIL;
        attn_gate = &xm[8];
    }
    if (rc == SQ_OK && mlp_residual(m, a, x, attn_gate, &px, &b->ff1, &b->ff2, &xm[3], &xm[4], &xm[5], p)) rc = SQ_FAIL;
    sq_stream_join(dev);   // before either arena's memory is reused
    sq_arena_reset(a, mark);
    sq_arena_reset(side, side_mark);
    return rc;
}
