// app/train_eval.c: the validation loss and the preview images of a training run
// (see app/train_eval.h).
#include "app/train_eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/path.h"
#include "qzo/flow_loss.h"
#include "samples/grid.h"
#include "samples/png.h"
#include "samples/sampler.h"

// One validation image: its cached latent and embeddings, and its fixed draws.
struct sd_val_item {
    sq_tensor x0, ctx, pooled;   // one cached item
    float sigma[SD_VAL_SIGMAS];
    sq_tensor noise[SD_VAL_SIGMAS];
};

static int load_val(sd_train_eval *e) {
    sd_trainer *t = e->t;
    if (!t->val) return SQ_OK;
    e->n_val = sd_dataset_count(t->val);
    e->val = calloc((size_t)e->n_val, sizeof *e->val);
    if (!e->val) return sq_errorf("out of host memory");
    // noise and σ on streams of their own: sharing one key made image i's σ a draw of image 0's noise
    uint64_t key = sq_rng_stream_key(t->opt.seed, SQ_RNG_STREAM_VAL),
             key_sigma = sq_rng_stream_key(t->opt.seed, SQ_RNG_STREAM_VAL_SIGMA);
    for (int i = 0; i < e->n_val; i++) {
        struct sd_val_item *v = &e->val[i];
        sd_cache_key kl, kt;
        int w, h, C = t->latent_channels, f = t->vae_factor;
        if (sd_train_item_keys(t, t->val, i, 0, &kl, &kt, &w, &h) != SQ_OK) return SQ_FAIL;
        const int64_t *shape = SQ_SHAPE(1, C, h / f, w / f);
        if (sq_tensor_alloc(&v->x0, t->dtype, t->device, 4, shape) ||
            sq_tensor_alloc(&v->ctx, t->dtype, t->device, 3, SQ_SHAPE(1, t->ctx_tokens, t->ctx_dim)) ||
            sq_tensor_alloc(&v->pooled, t->dtype, t->device, 2, SQ_SHAPE(1, t->pooled_dim)))
            return SQ_FAIL;
        const char *path = sd_dataset_entry(t->val, i)->path;
        sd_cache_item li = {"latent", &v->x0};
        sd_cache_item ti[2] = {{"context", &v->ctx}, {"pooled", &v->pooled}};
        if (sd_train_load_cached(t, &kl, &li, 1, path) != SQ_OK || sd_train_load_cached(t, &kt, ti, 2, path) != SQ_OK) return SQ_FAIL;
        int64_t per = sq_tensor_numel(&v->x0);
        float *noise = malloc((size_t)per * sizeof(float));
        if (!noise) return sq_errorf("out of host memory");
        for (int k = 0; k < SD_VAL_SIGMAS; k++) {
            // σ k and noise k of image i: counter "step" k on their two streams, sample i
            v->sigma[k] = sd_draw_sigma(&t->sigma, key_sigma, (uint64_t)k, i);
            sd_draw_noise(noise, per, key, (uint64_t)k, i);
            if (sq_tensor_alloc(&v->noise[k], t->dtype, t->device, 4, shape) ||
                sq_tensor_from_host_f32(&v->noise[k], noise)) {
                free(noise);
                return SQ_FAIL;
            }
        }
        free(noise);
    }
    return SQ_OK;
}

int sd_train_val_loss(sd_train_eval *e, const sd_mmdit *m, sq_arena *scratch, double *out) {
    double sum = 0;
    int n = 0;
    for (int i = 0; i < e->n_val; i++)
        for (int k = 0; k < SD_VAL_SIGMAS; k++) {
            struct sd_val_item *v = &e->val[i];
            sd_flow_batch fb;
            if (sd_flow_batch_init(&fb, m, scratch, &v->x0, &v->noise[k], &v->sigma[k], &v->ctx, &v->pooled) != SQ_OK)
                return SQ_FAIL;
            double l;
            int rc = sd_flow_loss(&fb, NULL, &l);
            sd_flow_batch_free(&fb);
            if (rc != SQ_OK) return sq_error_context("validation loss");
            sum += l;
            n++;
        }
    *out = sum / n;
    return SQ_OK;
}

static int load_prompt_embeddings(sd_train_eval *e) {
    sd_trainer *t = e->t;
    int n = t->n_prompts;
    if (n == 0) return SQ_OK;
    if (sq_tensor_alloc(&e->prompt_ctx, t->dtype, t->device, 3, SQ_SHAPE(n, t->ctx_tokens, t->ctx_dim)) ||
        sq_tensor_alloc(&e->prompt_pooled, t->dtype, t->device, 2, SQ_SHAPE(n, t->pooled_dim)) ||
        sq_tensor_alloc(&e->uncond_ctx, t->dtype, t->device, 3, SQ_SHAPE(1, t->ctx_tokens, t->ctx_dim)) ||
        sq_tensor_alloc(&e->uncond_pooled, t->dtype, t->device, 2, SQ_SHAPE(1, t->pooled_dim)))
        return SQ_FAIL;
    for (int i = -1; i < n; i++) {
        const char *p = i < 0 ? "" : t->prompts[i];
        sd_cache_key k;
        sd_train_text_key(t, p, &k);
        sq_tensor c = i < 0 ? e->uncond_ctx : sd_train_slice(&e->prompt_ctx, (int64_t)i * t->ctx_tokens * t->ctx_dim, 3, SQ_SHAPE(1, t->ctx_tokens, t->ctx_dim));
        sq_tensor pl = i < 0 ? e->uncond_pooled : sd_train_slice(&e->prompt_pooled, (int64_t)i * t->pooled_dim, 2, SQ_SHAPE(1, t->pooled_dim));
        sd_cache_item ti[2] = {{"context", &c}, {"pooled", &pl}};
        if (sd_train_load_cached(t, &k, ti, 2, i < 0 ? "the empty prompt" : p) != SQ_OK) return SQ_FAIL;
    }
    return SQ_OK;
}

int sd_train_previews(sd_train_eval *e, const sd_mmdit *m, sq_arena *scratch, int64_t step) {
    sd_trainer *t = e->t;
    if (t->n_prompts == 0) return SQ_OK;
    if (!e->vae_loaded) {
        if (sd_train_load_vae(t, &e->vae) != SQ_OK) return sq_error_context("previews");
        e->vae_loaded = true;
    }
    int R = t->opt.resolution, n = t->n_prompts;
    sq_arena vae_scratch;
    if (sq_arena_init(&vae_scratch, t->device, sd_vae_scratch_estimate(&e->vae.cfg, 1, R, R, (int)sq_dtype_bytes(t->dtype, 1))) != SQ_OK)
        return sq_error_context("preview decode scratch");
    float *img = malloc((size_t)3 * R * R * sizeof(float));
    uint8_t **rgb = calloc((size_t)n, sizeof *rgb);
    int rc = img && rgb ? SQ_OK : sq_errorf("out of host memory");
    for (int i = 0; i < n && rc == SQ_OK; i++) {
        sq_tensor c = sd_train_slice(&e->prompt_ctx, (int64_t)i * t->ctx_tokens * t->ctx_dim, 3, SQ_SHAPE(1, t->ctx_tokens, t->ctx_dim));
        sq_tensor pl = sd_train_slice(&e->prompt_pooled, (int64_t)i * t->pooled_dim, 2, SQ_SHAPE(1, t->pooled_dim));
        sd_sample_cond cond = {&c, &pl}, uncond = {&e->uncond_ctx, &e->uncond_pooled};
        sd_sample_options so = {.batch = 1, .steps = t->opt.sample_steps, .guidance = t->opt.sample_cfg, .width = R,
                                .height = R, .seed = t->opt.seed + (uint64_t)i};
        rc = sd_sample(m, &e->vae, &t->scheduler, scratch, &vae_scratch, &cond, &uncond, &so, img);
        if (rc == SQ_OK) {
            rgb[i] = malloc((size_t)3 * R * R);
            if (!rgb[i]) rc = sq_errorf("out of host memory");
            else sd_images_to_rgb8(img, 1, R, R, rgb[i]);
        }
    }
    if (rc == SQ_OK) {
        uint8_t *grid = NULL;
        int gw, gh;
        rc = sd_grid((const uint8_t *const *)rgb, n, R, R, sd_grid_default_cols(n), 4, 255, &grid, &gw, &gh);
        char dir[1100], path[1200], extra[64];
        snprintf(dir, sizeof dir, "%s/previews", t->opt.output);
        snprintf(path, sizeof path, "%s/step_%06lld.png", dir, (long long)step);
        snprintf(extra, sizeof extra, "Step: %lld", (long long)step);
        sd_png_params pp = {.prompt = t->prompts[0], .steps = t->opt.sample_steps, .cfg = t->opt.sample_cfg,
                            .seed = t->opt.seed, .width = R, .height = R, .model = t->opt.model, .extra = extra};
        if (rc == SQ_OK) rc = sq_mkdirs(dir);
        char *text = rc == SQ_OK ? sd_png_parameters_text(&pp) : NULL;
        if (rc == SQ_OK) rc = sd_png_write(path, grid, gw, gh, "parameters", text);
        free(text);
        free(grid);
        if (rc == SQ_OK) {
            sd_report_preview *np = realloc(e->previews, (size_t)(e->n_previews + 1) * sizeof *np);
            if (!np) rc = sq_errorf("out of host memory");
            else {
                e->previews = np;
                np[e->n_previews].step = step;
                snprintf(np[e->n_previews].png_path, sizeof np[e->n_previews].png_path, "%s", path);
                e->n_previews++;
            }
        }
    }
    for (int i = 0; rgb && i < n; i++) free(rgb[i]);
    free(rgb);
    free(img);
    sq_arena_free(&vae_scratch);
    return rc == SQ_OK ? SQ_OK : sq_error_context("previews at step %lld", (long long)step);
}

void sd_train_val_summary(const sd_train_log *log, char *buf, size_t size) {
    double first = NAN, last = NAN;
    int64_t s_first = 0, s_last = 0;
    for (int i = 0; i < log->count; i++)
        if (!isnan(log->rec[i].val_loss)) {
            if (isnan(first)) { first = log->rec[i].val_loss; s_first = log->rec[i].step; }
            last = log->rec[i].val_loss;
            s_last = log->rec[i].step;
        }
    if (!isnan(first))
        snprintf(buf, size, "Validation loss %.6f at step %lld, %.6f at step %lld (%+.2f%%).", first, (long long)s_first,
                 last, (long long)s_last, 100.0 * (last - first) / first);
    else snprintf(buf, size, "No validation set (--val-images).");
    // --ema: the EMA's last value against the same first value (the EMA starts at the scales)
    double ema_last = NAN;
    int64_t s_ema = 0;
    for (int i = 0; i < log->count; i++)
        if (!isnan(log->rec[i].val_loss_ema)) {
            ema_last = log->rec[i].val_loss_ema;
            s_ema = log->rec[i].step;
        }
    size_t n = strlen(buf);
    if (!isnan(first) && !isnan(ema_last) && n < size)
        snprintf(buf + n, size - n, " EMA of the scales: %.6f at step %lld (%+.2f%%).", ema_last, (long long)s_ema,
                 100.0 * (ema_last - first) / first);
}

// Previews of earlier steps of a resumed run are still on disk: keep them in the report.
static int list_old_previews(sd_train_eval *e, int64_t first_step) {
    sd_trainer *t = e->t;
    for (int64_t s = 0; s < first_step && t->opt.sample_every > 0; s += t->opt.sample_every) {
        char path[1200];
        struct stat st;
        snprintf(path, sizeof path, "%s/previews/step_%06lld.png", t->opt.output, (long long)s);
        if (stat(path, &st) != 0) continue;
        sd_report_preview *np = realloc(e->previews, (size_t)(e->n_previews + 1) * sizeof *np);
        if (!np) return sq_errorf("out of host memory");
        e->previews = np;
        np[e->n_previews].step = s;
        snprintf(np[e->n_previews].png_path, sizeof np[e->n_previews].png_path, "%s", path);
        e->n_previews++;
    }
    return SQ_OK;
}

int sd_train_eval_init(sd_train_eval *e, sd_trainer *t, int64_t first_step) {
    memset(e, 0, sizeof *e);
    e->t = t;
    if (load_val(e) != SQ_OK || load_prompt_embeddings(e) != SQ_OK) return SQ_FAIL;
    return list_old_previews(e, first_step);
}

void sd_train_eval_free(sd_train_eval *e) {
    for (int i = 0; e->val && i < e->n_val; i++) {
        sq_tensor_free(&e->val[i].x0);
        sq_tensor_free(&e->val[i].ctx);
        sq_tensor_free(&e->val[i].pooled);
        for (int k = 0; k < SD_VAL_SIGMAS; k++) sq_tensor_free(&e->val[i].noise[k]);
    }
    free(e->val);
    sq_tensor_free(&e->prompt_ctx);
    sq_tensor_free(&e->prompt_pooled);
    sq_tensor_free(&e->uncond_ctx);
    sq_tensor_free(&e->uncond_pooled);
    free(e->previews);
    if (e->vae_loaded) sd_vae_free(&e->vae);
    memset(e, 0, sizeof *e);
}
