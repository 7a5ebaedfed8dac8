// vae/blocks.c: the VAE's building blocks (diffusers ResnetBlock2D without time
// embedding, and the mid-block's single-head Attention with group norm and residual).
#include <math.h>

#include "core/error.h"
#include "kernels/ops.h"
#include "vae/vae_internal.h"

#define GN_EPS 1e-6f

void sd_vae_conv(const sd_conv *c, const sq_tensor *x, sq_tensor *out, int pad) {
    sq_conv2d(out, x, &c->w, &c->b, 1, pad, pad, pad, pad);
}

int sd_vae_resnet_forward(const sd_vae *v, const sd_vae_resnet *r, sq_arena *a, const sq_tensor *x, sq_tensor *out) {
    size_t mark = sq_arena_mark(a);
    int groups = v->cfg.groups;
    sq_tensor t, h;
    if (sq_arena_tensor(a, &t, v->dtype, 4, x->shape) || sq_arena_tensor(a, &h, v->dtype, 4, out->shape)) return SQ_FAIL;
    sq_groupnorm(&t, x, &r->gn1_w, &r->gn1_b, groups, GN_EPS);
    sq_silu(&t, &t);
    sd_vae_conv(&r->conv1, &t, &h, 1);
    sq_groupnorm(&h, &h, &r->gn2_w, &r->gn2_b, groups, GN_EPS);
    sq_silu(&h, &h);
    sd_vae_conv(&r->conv2, &h, out, 1);
    if (r->shortcut.w.data) {
        sd_vae_conv(&r->shortcut, x, &h, 0);   // 1x1 projection of the input to Cout
        sq_add(out, out, &h);
    } else {
        sq_add(out, out, x);
    }
    sq_arena_reset(a, mark);
    return SQ_OK;
}

int sd_vae_attention_forward(const sd_vae *v, const sd_vae_attention *at, sq_arena *a, const sq_tensor *x, sq_tensor *out) {
    size_t mark = sq_arena_mark(a);
    int64_t B = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    sq_tensor n, tok, q, k, v4, o, proj;
    const int64_t tshape[3] = {B, HW, C};
    if (sq_arena_tensor(a, &n, v->dtype, 4, x->shape) || sq_arena_tensor(a, &tok, v->dtype, 3, tshape) ||
        sq_arena_tensor(a, &q, v->dtype, 3, tshape) || sq_arena_tensor(a, &k, v->dtype, 3, tshape) ||
        sq_arena_tensor(a, &v4, v->dtype, 3, tshape) || sq_arena_tensor(a, &o, v->dtype, 3, tshape) ||
        sq_arena_tensor(a, &proj, v->dtype, 3, tshape))
        return SQ_FAIL;
    sq_groupnorm(&n, x, &at->gn_w, &at->gn_b, v->cfg.groups, GN_EPS);
    // (B,C,H·W) -> (B,H·W,C) tokens
    sq_tensor n3 = sq_tensor_reshape(&n, 3, (int64_t[]){B, C, HW});
    sq_permute(&tok, &n3, (const int[]){0, 2, 1});
    if (sq_linear_forward(&q, &tok, &at->q, NULL, a) || sq_linear_forward(&k, &tok, &at->k, NULL, a) ||
        sq_linear_forward(&v4, &tok, &at->v, NULL, a))
        return SQ_FAIL;
    const int64_t hshape[4] = {B, HW, 1, C};
    sq_tensor q4 = sq_tensor_reshape(&q, 4, hshape), k4 = sq_tensor_reshape(&k, 4, hshape);
    sq_tensor vv = sq_tensor_reshape(&v4, 4, hshape), o4 = sq_tensor_reshape(&o, 4, hshape);
    sq_attention(&o4, &q4, &k4, &vv, NULL, NULL, false, 1.0f / sqrtf((float)C));
    if (sq_linear_forward(&proj, &o, &at->out, NULL, a)) return SQ_FAIL;
    // back to (B,C,H,W), plus the residual
    sq_tensor out3 = sq_tensor_reshape(out, 3, (int64_t[]){B, C, HW});
    sq_permute(&out3, &proj, (const int[]){0, 2, 1});
    sq_add(out, out, x);
    sq_arena_reset(a, mark);
    return SQ_OK;
}
