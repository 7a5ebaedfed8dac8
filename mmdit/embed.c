// mmdit/embed.c: the MMDiT's input embeddings: patchify + cropped 2-D position
// table (diffusers PatchEmbed with pos_embed_max_size), and the timestep +
// pooled-text conditioning vector (CombinedTimestepTextProjEmbeddings).
#include <math.h>
#include <stdlib.h>

#include "core/error.h"
#include "kernels/ops.h"
#include "mmdit/blocks.h"

int sd_tmp(sq_arena *a, const sd_mmdit *m, sq_tensor *t, int ndim, const int64_t *shape) {
    return sq_arena_tensor(a, t, m->dtype, ndim, shape);
}

int sd_chunk(sq_arena *a, const sd_mmdit *m, const sq_tensor *x, int n, int i, sq_tensor *out) {
    int64_t B = x->shape[0], D = x->shape[1] / n;
    if (B == 1) {   // one sample: chunk i is contiguous, so a view does (no copy kernel)
        size_t es = sq_dtype_bytes(x->dtype, 1);
        *out = sq_tensor_view((char *)x->data + (size_t)(i * D) * es, x->dtype, x->device, 2, (int64_t[]){1, D});
        return SQ_OK;
    }
    if (sd_tmp(a, m, out, 2, (int64_t[]){B, D}) != SQ_OK) return SQ_FAIL;
    sq_slice(out, x, 1, (int64_t)i * D);
    return SQ_OK;
}

int sd_embed_patches(const sd_mmdit *m, sq_arena *a, const sq_tensor *latent, sq_tensor *x) {
    const sd_mmdit_config *c = &m->cfg;
    int64_t B = latent->shape[0], p = c->patch_size, D = c->hidden, max = c->pos_embed_max_size;
    int64_t h = latent->shape[2] / p, w = latent->shape[3] / p, N = h * w;
    size_t mark = sq_arena_mark(a);
    sq_tensor conv, pos_rows, pos;
    if (sd_tmp(a, m, &conv, 4, (int64_t[]){B, D, h, w}) != SQ_OK) return SQ_FAIL;
    sq_conv2d(&conv, latent, &m->patch_w, &m->patch_b, (int)p, 0, 0, 0, 0);
    // (B,D,h,w) -> (B,h,w,D): token n = row * w + col, as flatten(2).transpose(1,2)
    sq_tensor xv = sq_tensor_reshape(x, 4, (int64_t[]){B, h, w, D});
    sq_permute(&xv, &conv, (const int[]){0, 2, 3, 1});
    // the centred h x w window of the max x max table
    int64_t top = (max - h) / 2, left = (max - w) / 2;
    sq_tensor table = sq_tensor_reshape(&m->pos_embed, 3, (int64_t[]){max, max, D});
    if (sd_tmp(a, m, &pos_rows, 3, (int64_t[]){h, max, D}) != SQ_OK || sd_tmp(a, m, &pos, 3, (int64_t[]){h, w, D}) != SQ_OK)
        return SQ_FAIL;
    sq_slice(&pos_rows, &table, 0, top);
    sq_slice(&pos, &pos_rows, 1, left);
    sq_tensor pos2 = sq_tensor_reshape(&pos, 2, (int64_t[]){N, D});
    size_t es = sq_dtype_bytes(x->dtype, 1);
    for (int64_t b = 0; b < B; b++) {
        sq_tensor xb = sq_tensor_view((char *)x->data + b * N * D * (int64_t)es, x->dtype, x->device, 2, (int64_t[]){N, D});
        sq_add(&xb, &xb, &pos2);
    }
    sq_arena_reset(a, mark);
    return SQ_OK;
}

// Sinusoidal timestep features as diffusers' get_timestep_embedding(t, 256,
// flip_sin_to_cos=True, downscale_freq_shift=0): [cos(t f_k), sin(t f_k)] with
// f_k = exp(-ln(10000) k / 128). f_k is rounded to fp32 and t·f_k is an fp32
// product, as PyTorch computes them; sin/cos are then evaluated in double.
static void timestep_features(const float *t, int64_t B, float *out) {
    const int half = 128;
    for (int64_t b = 0; b < B; b++)
        for (int k = 0; k < half; k++) {
            float f = (float)exp(-log(10000.0) * (double)k / (double)half);
            float arg = t[b] * f;
            out[b * 2 * half + k] = (float)cos((double)arg);
            out[b * 2 * half + half + k] = (float)sin((double)arg);
        }
}

int sd_time_features_upload(const float *timestep, sq_tensor *feat) {
    int64_t B = feat->shape[0];
    float *host = malloc((size_t)B * 256 * sizeof(float));
    if (!host) return sq_errorf("out of host memory");
    timestep_features(timestep, B, host);
    int rc = sq_tensor_from_host_f32(feat, host);
    free(host);
    return rc;
}

int sd_embed_time_text(const sd_mmdit *m, sq_arena *a, const sq_tensor *time_features, const sq_tensor *pooled,
                       const sq_perturb *p, sq_tensor *temb) {
    int64_t B = pooled->shape[0], D = m->cfg.hidden;
    size_t mark = sq_arena_mark(a);
    sq_tensor h1, t_emb, y1;
    if (sd_tmp(a, m, &h1, 2, (int64_t[]){B, D}) || sd_tmp(a, m, &t_emb, 2, (int64_t[]){B, D}) ||
        sd_tmp(a, m, &y1, 2, (int64_t[]){B, D}))
        return SQ_FAIL;
    if (sq_linear_forward(&h1, time_features, &m->t_linear1, p, a) != SQ_OK) return SQ_FAIL;
    sq_silu(&h1, &h1);
    if (sq_linear_forward(&t_emb, &h1, &m->t_linear2, p, a) != SQ_OK) return SQ_FAIL;
    if (sq_linear_forward(&y1, pooled, &m->y_linear1, p, a) != SQ_OK) return SQ_FAIL;
    sq_silu(&y1, &y1);
    if (sq_linear_forward(temb, &y1, &m->y_linear2, p, a) != SQ_OK) return SQ_FAIL;
    sq_add(temb, temb, &t_emb);
    sq_arena_reset(a, mark);
    return SQ_OK;
}
