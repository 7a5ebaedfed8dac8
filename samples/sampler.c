// samples/sampler.c: the SD3 flow-matching Euler loop with classifier-free guidance
// and the VAE decode to [0,1] images (see sampler.h for the recipe and the RNG).
// Everything per step runs through kernels/ops.h on the model's device; only the
// initial latents and the final result cross to the host.
#include "samples/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "kernels/ops.h"
#include "kernels/rng.h"

void sd_sample_noise(uint64_t seed, int B, int C, int h, int w, float *out) {
    int64_t n = (int64_t)C * h * w;
    for (int b = 0; b < B; b++)
        for (int64_t i = 0; i < n; i++) out[b * n + i] = sq_rng_normal(seed + (uint64_t)b, SD_SAMPLE_RNG_STREAM, (uint64_t)i);
}

// Rows [first, first + count) of a tensor along dim 0, as a view.
static sq_tensor rows(const sq_tensor *t, int64_t first, int64_t count) {
    int64_t shape[SQ_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    int64_t row = sq_tensor_numel(t) / t->shape[0];
    shape[0] = count;
    return sq_tensor_view((char *)t->data + sq_dtype_bytes(t->dtype, first * row), t->dtype, t->device, t->ndim, shape);
}

static int check_cond(const sd_mmdit *m, const sd_sample_cond *c, const char *which, int B) {
    if (!c || !c->context || !c->pooled) return sq_errorf("sampler: no %s conditioning given", which);
    const sq_tensor *x = c->context, *p = c->pooled;
    char b1[96], b2[96];
    if (x->ndim != 3 || (x->shape[0] != 1 && x->shape[0] != B) || x->shape[2] != m->cfg.joint_attention_dim ||
        p->ndim != 2 || p->shape[0] != x->shape[0] || p->shape[1] != m->cfg.pooled_projection_dim)
        return sq_errorf("sampler: %s conditioning context %s / pooled %s does not fit a batch of %d for this model "
                         "(context (B,T,%d), pooled (B,%d))", which, sq_tensor_describe(x, b1, sizeof b1),
                         sq_tensor_describe(p, b2, sizeof b2), B, m->cfg.joint_attention_dim,
                         m->cfg.pooled_projection_dim);
    if (x->device != m->device || p->device != m->device || x->dtype != m->dtype || p->dtype != m->dtype)
        return sq_errorf("sampler: %s conditioning must be %s on the model's device", which, sq_dtype_name(m->dtype));
    return SQ_OK;
}

// dst rows [first, first+B) = src broadcast from 1 row or copied from B rows.
static void fill_rows(sq_tensor *dst, int64_t first, int B, const sq_tensor *src) {
    for (int b = 0; b < B; b++) {
        sq_tensor d = rows(dst, first + b, 1), s = rows(src, src->shape[0] == 1 ? 0 : b, 1);
        sq_copy(&d, &s);
    }
}

static int alloc(sq_arena *a, sq_tensor *t, sq_dtype dt, int ndim, const int64_t *shape) {
    if (sq_arena_tensor(a, t, dt, ndim, shape) != SQ_OK) return sq_error_context("sampler");
    return SQ_OK;
}

int sd_sample_latents(const sd_mmdit *m, const sd_flow_scheduler *sch, sq_arena *scratch, const sd_sample_cond *cond,
                      const sd_sample_cond *uncond, const sd_sample_options *o, float *latents_out) {
    const int B = o->batch, p = m->cfg.patch_size, f = o->vae_factor > 0 ? o->vae_factor : SD_SAMPLE_SD3_VAE_FACTOR;
    const int mult = f * p;
    if (B < 1) return sq_errorf("sampler: batch must be at least 1 (got %d)", B);
    if (o->steps < 1) return sq_errorf("sampler: steps must be at least 1 (got %d)", o->steps);
    if (o->width <= 0 || o->height <= 0 || o->width % mult || o->height % mult)
        return sq_errorf("sampler: image size %dx%d is not a positive multiple of %d (VAE factor %d x patch size %d); "
                         "try %dx%d", o->width, o->height, mult, f, p,
                         o->width < mult ? mult : o->width / mult * mult, o->height < mult ? mult : o->height / mult * mult);
    if (!isfinite(o->guidance)) return sq_errorf("sampler: guidance scale is not a finite number");
    if (scratch->device != m->device) return sq_errorf("sampler: the scratch arena is not on the model's device");
    const bool cfg = o->guidance > 1.0f;   // diffusers: do_classifier_free_guidance = guidance_scale > 1
    if (check_cond(m, cond, "positive", B) != SQ_OK) return SQ_FAIL;
    if (cfg) {
        if (check_cond(m, uncond, "negative (unconditional)", B) != SQ_OK) return SQ_FAIL;
        if (uncond->context->shape[1] != cond->context->shape[1])
            return sq_errorf("sampler: positive and negative contexts have %lld and %lld tokens; CFG runs them as one "
                             "batch, so they must match", (long long)cond->context->shape[1],
                             (long long)uncond->context->shape[1]);
    }
    const int C = m->cfg.in_channels, h = o->height / f, w = o->width / f;
    const int NB = cfg ? 2 * B : B;
    const int64_t T = cond->context->shape[1], n_lat = (int64_t)B * C * h * w;
    const int64_t lat_shape[4] = {B, C, h, w}, in_shape[4] = {NB, C, h, w};

    float *sigmas = malloc(sizeof(float) * (size_t)(o->steps + 1)), *ts = malloc(sizeof(float) * (size_t)o->steps);
    float *tvec = malloc(sizeof(float) * (size_t)NB), *host = NULL;
    size_t mark = sq_arena_mark(scratch);
    int rc = SQ_FAIL;
    if (!sigmas || !ts || !tvec) { sq_errorf("sampler: out of host memory"); goto done; }
    if (sd_scheduler_sigmas(sch, o->steps, (h / p) * (w / p), sigmas, ts) != SQ_OK) goto done;

    sq_tensor lat, in, out, vel, ctx, pooled;
    if (alloc(scratch, &lat, SQ_F32, 4, lat_shape) || alloc(scratch, &in, m->dtype, 4, in_shape) ||
        alloc(scratch, &out, m->dtype, 4, in_shape) ||
        alloc(scratch, &ctx, m->dtype, 3, (int64_t[]){NB, T, m->cfg.joint_attention_dim}) ||
        alloc(scratch, &pooled, m->dtype, 2, (int64_t[]){NB, m->cfg.pooled_projection_dim}))
        goto done;
    if (m->dtype == SQ_F32) vel = out;
    else if (alloc(scratch, &vel, SQ_F32, 4, in_shape)) goto done;
    // uncond first, then cond: the order of diffusers' torch.cat([negative, positive])
    if (cfg) {
        fill_rows(&ctx, 0, B, uncond->context);
        fill_rows(&pooled, 0, B, uncond->pooled);
    }
    fill_rows(&ctx, NB - B, B, cond->context);
    fill_rows(&pooled, NB - B, B, cond->pooled);

    if (o->init_latents) {
        if (sq_tensor_from_host_f32(&lat, o->init_latents) != SQ_OK) goto done;
    } else {
        if (!(host = sq_malloc(sizeof(float) * (size_t)n_lat))) goto done;
        sd_sample_noise(o->seed, B, C, h, w, host);
        if (sq_tensor_from_host_f32(&lat, host) != SQ_OK) goto done;
    }

    for (int i = 0; i < o->steps; i++) {
        for (int k = 0; k < NB / B; k++) {
            sq_tensor half = rows(&in, (int64_t)k * B, B);
            sq_copy(&half, &lat);   // rounds to bf16 on CUDA
        }
        for (int k = 0; k < NB; k++) tvec[k] = ts[i];
        if (sd_mmdit_forward(m, scratch, &in, tvec, &ctx, &pooled, NULL, &out, NULL) != SQ_OK) {
            sq_error_context("sampler step %d/%d", i + 1, o->steps);
            goto done;
        }
        if (vel.data != out.data) sq_copy(&vel, &out);
        sq_tensor v = rows(&vel, 0, B);
        if (cfg) {
            sq_tensor vc = rows(&vel, B, B);
            sq_sub(&vc, &vc, &v);                         // v_c - v_u
            sq_axpby(&v, 1.0f, &v, o->guidance, &vc);     // v_u + g (v_c - v_u)
        }
        float dt = sigmas[i + 1] - sigmas[i];             // float32, as the scheduler
        sq_axpby(&lat, 1.0f, &lat, dt, &v);
        if (o->on_step && o->on_step(o->on_step_ctx, i, o->steps, ts[i], &lat) != SQ_OK) {
            sq_error_context("sampler step %d/%d callback", i + 1, o->steps);
            goto done;
        }
    }
    if (sq_tensor_to_host_f32(latents_out, &lat) != SQ_OK) goto done;
    rc = SQ_OK;
done:
    sq_arena_reset(scratch, mark);
    free(sigmas);
    free(ts);
    free(tvec);
    free(host);
    return rc;
}

int sd_decode_latents(const sd_vae *v, sq_arena *scratch, const float *latents, int B, int C, int h, int w,
                      float *images_out) {
    if (C != v->cfg.latent_channels)
        return sq_errorf("sampler: latents have %d channels, the VAE expects %d", C, v->cfg.latent_channels);
    if (scratch->device != v->device) return sq_errorf("sampler: the scratch arena is not on the VAE's device");
    const int f = sd_vae_factor(&v->cfg), H = h * f, W = w * f;
    const int64_t n_lat = (int64_t)C * h * w, n_img = (int64_t)3 * H * W;
    size_t mark = sq_arena_mark(scratch);
    int rc = SQ_FAIL;
    sq_tensor lat, img;
    if (alloc(scratch, &lat, v->dtype, 4, (int64_t[]){1, C, h, w}) ||
        alloc(scratch, &img, v->dtype, 4, (int64_t[]){1, v->cfg.out_channels, H, W}))
        goto done;
    if (v->cfg.out_channels != 3) { sq_errorf("sampler: the VAE decodes %d channels, not RGB", v->cfg.out_channels); goto done; }
    // one image at a time: a 1024² decode's activations are GBs per image
    for (int b = 0; b < B; b++) {
        if (sq_tensor_from_host_f32(&lat, latents + b * n_lat) != SQ_OK) goto done;
        if (sd_vae_decode(v, scratch, &lat, &img) != SQ_OK) { sq_error_context("sampler: decoding image %d", b); goto done; }
        float *o = images_out + b * n_img;
        if (sq_tensor_to_host_f32(o, &img) != SQ_OK) goto done;
        for (int64_t i = 0; i < n_img; i++) {
            float x = o[i] / 2.0f + 0.5f;
            o[i] = x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x;   // NaN stays NaN: a broken model shows
        }
    }
    rc = SQ_OK;
done:
    sq_arena_reset(scratch, mark);
    return rc;
}

int sd_sample(const sd_mmdit *m, const sd_vae *v, const sd_flow_scheduler *sch, sq_arena *mmdit_scratch,
              sq_arena *vae_scratch, const sd_sample_cond *cond, const sd_sample_cond *uncond,
              const sd_sample_options *o, float *images_out) {
    sd_sample_options oo = *o;
    oo.vae_factor = sd_vae_factor(&v->cfg);
    const int C = m->cfg.in_channels, h = o->height > 0 ? o->height / oo.vae_factor : 0,
              w = o->width > 0 ? o->width / oo.vae_factor : 0;
    float *lat = sq_malloc(sizeof(float) * (size_t)((int64_t)(o->batch > 0 ? o->batch : 1) * C * h * w + 1));
    if (!lat) return SQ_FAIL;
    int rc = sd_sample_latents(m, sch, mmdit_scratch, cond, uncond, &oo, lat);
    if (rc == SQ_OK) rc = sd_decode_latents(v, vae_scratch, lat, o->batch, C, h, w, images_out);
    free(lat);
    return rc;
}

size_t sd_sample_scratch_bytes(const sd_mmdit_config *c, const sd_vae_config *vae, int B, bool cfg, int W, int H,
                               int vae_factor, int T, int elem_bytes) {
    const int f = vae_factor > 0 ? vae_factor : SD_SAMPLE_SD3_VAE_FACTOR, NB = cfg ? 2 * B : B;
    const int h = H / f, w = W / f, N = (h / c->patch_size) * (w / c->patch_size);
    const size_t es = (size_t)elem_bytes, A = SQ_ARENA_ALIGN;
    size_t lat = (size_t)NB * (size_t)c->in_channels * (size_t)h * (size_t)w;
    // lat (f32, B rows), in + out (model dtype), vel (f32), ctx, pooled: sd_sample_latents' buffers
    size_t own = lat * (4 + 2 * es + 4) + (size_t)NB * (size_t)T * (size_t)c->joint_attention_dim * es +
                 (size_t)NB * (size_t)c->pooled_projection_dim * es + 8 * A;
    size_t need = sd_mmdit_scratch_estimate(c, NB, N, T, elem_bytes) + own;
    if (vae) {
        size_t dec = sd_vae_scratch_estimate(vae, 1, H, W, 4) + lat * 4 / (size_t)NB + (size_t)3 * H * W * 4 + 4 * A;
        if (dec > need) need = dec;
    }
    return need;
}

void sd_images_to_rgb8(const float *images, int B, int H, int W, uint8_t *rgb) {
    const int64_t plane = (int64_t)H * W;
    for (int b = 0; b < B; b++)
        for (int64_t i = 0; i < plane; i++)
            for (int c = 0; c < 3; c++) {
                float x = images[(b * 3 + c) * plane + i];
                x = isnan(x) ? 0.0f : rintf(x * 255.0f);
                rgb[(b * plane + i) * 3 + c] = (uint8_t)(x < 0 ? 0 : x > 255 ? 255 : x);
            }
}
