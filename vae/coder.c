// vae/coder.c: the encoder and decoder passes. Activations ping-pong between two
// buffers sized for the largest activation (taken once from the arena), and each
// block rewinds its own scratch, so the peak is about four full-resolution
// activations whatever the depth.
#include <string.h>

#include "core/error.h"
#include "kernels/ops.h"
#include "vae/vae_internal.h"

// Elements of the largest activation a pass holds in its ping-pong buffers: at each
// level's resolution, the widest of that level's channels and the previous level's
// (a level's first resnet reads the previous width at the new resolution).
static int64_t max_activation(const sd_vae_config *c, int64_t B, int64_t H, int64_t W, bool encoder) {
    int64_t best = 0;
    int L = c->levels;
    for (int i = 0; i < L; i++) {
        int64_t h = encoder ? H >> i : H << i, w = encoder ? W >> i : W << i;
        int here = encoder ? c->block_out[i] : c->block_out[L - 1 - i];
        int prev = encoder ? c->block_out[i > 0 ? i - 1 : 0] : c->block_out[i > 0 ? L - i : L - 1];
        int64_t ch = here > prev ? here : prev;
        if (encoder && i == L - 1 && 2 * c->latent_channels > ch) ch = 2 * c->latent_channels;
        if (B * ch * h * w > best) best = B * ch * h * w;
    }
    return best;
}

static sq_tensor view4(const sq_tensor *buf, int64_t B, int64_t C, int64_t H, int64_t W) {
    return sq_tensor_view(buf->data, buf->dtype, buf->device, 4, (int64_t[]){B, C, H, W});
}

int sd_vae_encode(const sd_vae *v, sq_arena *a, const sq_tensor *image, sq_tensor *latent_out) {
    const sd_vae_config *c = &v->cfg;
    int f = sd_vae_factor(c);
    if (image->ndim != 4 || image->shape[1] != c->in_channels)
        return sq_errorf("vae encode: image must be (B,%d,H,W)", c->in_channels);
    int64_t B = image->shape[0], H = image->shape[2], W = image->shape[3];
    if (H % f || W % f) return sq_errorf("vae encode: image %lldx%lld is not a multiple of %d", (long long)H, (long long)W, f);
    if (latent_out->ndim != 4 || latent_out->shape[0] != B || latent_out->shape[1] != c->latent_channels ||
        latent_out->shape[2] != H / f || latent_out->shape[3] != W / f)
        return sq_errorf("vae encode: latent must be (%lld,%d,%lld,%lld)", (long long)B, c->latent_channels, (long long)(H / f), (long long)(W / f));
    size_t mark = sq_arena_mark(a);
    int64_t cap = max_activation(c, B, H, W, true);
    sq_tensor bufa, bufb;
    int rc = SQ_FAIL;
    if (sq_arena_tensor(a, &bufa, v->dtype, 1, &cap) || sq_arena_tensor(a, &bufb, v->dtype, 1, &cap)) goto done;
    sq_tensor cur = view4(&bufa, B, c->block_out[0], H, W), nxt;
    sd_vae_conv(&v->enc.conv_in, image, &cur, 1);
    int64_t h = H, w = W, ch = c->block_out[0];
    for (int i = 0; i < c->levels; i++) {
        for (int j = 0; j < c->layers_per_block; j++) {
            nxt = view4(cur.data == bufa.data ? &bufb : &bufa, B, c->block_out[i], h, w);
            if (sd_vae_resnet_forward(v, &v->enc.resnets[i][j], a, &cur, &nxt)) goto done;
            cur = nxt;
            ch = c->block_out[i];
        }
        if (i < c->levels - 1) {   // conv 3x3 stride 2 with the asymmetric (0,1,0,1) pad of Downsample2D
            nxt = view4(cur.data == bufa.data ? &bufb : &bufa, B, ch, h / 2, w / 2);
            sq_conv2d(&nxt, &cur, &v->enc.resample[i].w, &v->enc.resample[i].b, 2, 0, 1, 0, 1);
            cur = nxt;
            h /= 2;
            w /= 2;
        }
    }
    nxt = view4(cur.data == bufa.data ? &bufb : &bufa, B, ch, h, w);
    if (sd_vae_resnet_forward(v, &v->enc.mid1, a, &cur, &nxt)) goto done;
    cur = nxt;
    if (c->mid_attention) {
        nxt = view4(cur.data == bufa.data ? &bufb : &bufa, B, ch, h, w);
        if (sd_vae_attention_forward(v, &v->enc.mid_attn, a, &cur, &nxt)) goto done;
        cur = nxt;
    }
    nxt = view4(cur.data == bufa.data ? &bufb : &bufa, B, ch, h, w);
    if (sd_vae_resnet_forward(v, &v->enc.mid2, a, &cur, &nxt)) goto done;
    cur = nxt;
    sq_groupnorm(&cur, &cur, &v->enc.norm_out_w, &v->enc.norm_out_b, c->groups, 1e-6f);
    sq_silu(&cur, &cur);
    nxt = view4(cur.data == bufa.data ? &bufb : &bufa, B, 2 * c->latent_channels, h, w);
    sd_vae_conv(&v->enc.conv_out, &cur, &nxt, 1);
    // the mean is the first half of the channels; normalise as SD3 training does
    sq_slice(latent_out, &nxt, 1, 0);
    sq_scale(latent_out, latent_out, c->scaling_factor, -c->shift_factor * c->scaling_factor);
    rc = SQ_OK;
done:
    sq_arena_reset(a, mark);
    return rc == SQ_OK ? SQ_OK : sq_error_context("vae encode");
}

int sd_vae_decode(const sd_vae *v, sq_arena *a, const sq_tensor *latent, sq_tensor *image_out) {
    const sd_vae_config *c = &v->cfg;
    int f = sd_vae_factor(c), L = c->levels;
    if (latent->ndim != 4 || latent->shape[1] != c->latent_channels)
        return sq_errorf("vae decode: latent must be (B,%d,h,w)", c->latent_channels);
    int64_t B = latent->shape[0], h = latent->shape[2], w = latent->shape[3];
    if (image_out->ndim != 4 || image_out->shape[0] != B || image_out->shape[1] != c->out_channels ||
        image_out->shape[2] != h * f || image_out->shape[3] != w * f)
        return sq_errorf("vae decode: image must be (%lld,%d,%lld,%lld)", (long long)B, c->out_channels, (long long)(h * f), (long long)(w * f));
    size_t mark = sq_arena_mark(a);
    int64_t cap = max_activation(c, B, h, w, false);
    sq_tensor bufa, bufb, z;
    int rc = SQ_FAIL;
    if (sq_arena_tensor(a, &bufa, v->dtype, 1, &cap) || sq_arena_tensor(a, &bufb, v->dtype, 1, &cap) ||
        sq_arena_tensor(a, &z, v->dtype, 4, latent->shape))
        goto done;
    sq_scale(&z, latent, 1.0f / c->scaling_factor, c->shift_factor);   // undo the normalisation
    int64_t ch = c->block_out[L - 1];
    sq_tensor cur = view4(&bufa, B, ch, h, w), nxt;
    sd_vae_conv(&v->dec.conv_in, &z, &cur, 1);
    nxt = view4(&bufb, B, ch, h, w);
    if (sd_vae_resnet_forward(v, &v->dec.mid1, a, &cur, &nxt)) goto done;
    cur = nxt;
    if (c->mid_attention) {
        nxt = view4(cur.data == bufa.data ? &bufb : &bufa, B, ch, h, w);
        if (sd_vae_attention_forward(v, &v->dec.mid_attn, a, &cur, &nxt)) goto done;
        cur = nxt;
    }
    nxt = view4(cur.data == bufa.data ? &bufb : &bufa, B, ch, h, w);
    if (sd_vae_resnet_forward(v, &v->dec.mid2, a, &cur, &nxt)) goto done;
    cur = nxt;
    for (int i = 0; i < L; i++) {
        int64_t out_ch = c->block_out[L - 1 - i];
        for (int j = 0; j < c->layers_per_block + 1; j++) {
            nxt = view4(cur.data == bufa.data ? &bufb : &bufa, B, out_ch, h, w);
            if (sd_vae_resnet_forward(v, &v->dec.resnets[i][j], a, &cur, &nxt)) goto done;
            cur = nxt;
        }
        if (i < L - 1) {   // nearest x2, then conv 3x3 (Upsample2D)
            size_t m2 = sq_arena_mark(a);
            sq_tensor up;
            if (sq_arena_tensor(a, &up, v->dtype, 4, (int64_t[]){B, out_ch, 2 * h, 2 * w})) goto done;
            sq_upsample_nearest2x(&up, &cur);
            h *= 2;
            w *= 2;
            nxt = view4(cur.data == bufa.data ? &bufb : &bufa, B, out_ch, h, w);
            sd_vae_conv(&v->dec.resample[i], &up, &nxt, 1);
            sq_arena_reset(a, m2);
            cur = nxt;
        }
    }
    sq_groupnorm(&cur, &cur, &v->dec.norm_out_w, &v->dec.norm_out_b, c->groups, 1e-6f);
    sq_silu(&cur, &cur);
    sd_vae_conv(&v->dec.conv_out, &cur, image_out, 1);
    rc = SQ_OK;
done:
    sq_arena_reset(a, mark);
    return rc == SQ_OK ? SQ_OK : sq_error_context("vae decode");
}
