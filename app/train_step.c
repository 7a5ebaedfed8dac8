// app/train_step.c: one QZO step of the MMDiT phase (app/train_loop_state.h):
// its batch, loaded from the cache (latents, text embeddings, loss masks) into
// buffers sized for the largest bucket, the noise and σ of (seed, step, place in the
// batch), and the flow-matching loss handed to the optimiser; with several processes
// each runs its share and the losses are combined inside the step (app/train_ranks.c).
#include <stdlib.h>
#include <string.h>

#include "app/train_loop_state.h"
#include "core/error.h"
#include "kernels/backend.h"
#include "qzo/flow_loss.h"

int sd_train_alloc_batch_buffers(loop *L) {
    sd_trainer *t = L->t;
    int64_t B = t->opt.batch_size, C = t->latent_channels, f = t->vae_factor, R = t->opt.resolution;
    int64_t lat = B * C * (R / f) * (R / f);
    // a bucket may be wider than R but never larger in area than R²
    if (sq_tensor_alloc(&L->x0_buf, t->dtype, t->device, 1, &lat) || sq_tensor_alloc(&L->noise_buf, t->dtype, t->device, 1, &lat) ||
        sq_tensor_alloc(&L->ctx_buf, t->dtype, t->device, 3, SQ_SHAPE(B, t->ctx_tokens, t->ctx_dim)) ||
        sq_tensor_alloc(&L->pooled_buf, t->dtype, t->device, 2, SQ_SHAPE(B, t->pooled_dim)))
        return SQ_FAIL;
    L->noise_host = malloc((size_t)lat * sizeof(float));
    if (!L->noise_host) return sq_errorf("out of host memory");
    if (sd_dataset_mask_mode(t->data) != SD_MASKS_NONE) {
        int64_t px = B * (R / f) * (R / f);
        if (sq_tensor_alloc(&L->mask_buf, SQ_F32, t->device, 1, &px)) return SQ_FAIL;
        L->mask_host = malloc((size_t)px * sizeof(float));
        if (!L->mask_host) return sq_errorf("out of host memory");
    }
    L->cur_epoch = -1;
    return SQ_OK;
}

typedef struct {
    sq_tensor x0, noise, ctx, pooled;
    sq_tensor weights;           // (B,1,h,w) loss weights; data NULL without masks
    float sigma[64];
    int B;
} batch;

// Item j's loss weights into L->mask_host: its cached mask, or 1 everywhere for an
// image without one. The encode phase refused all-zero masks; a cache entry that
// says otherwise was not written by it.
static int load_weights(loop *L, int index, int epoch, int j, int64_t h, int64_t w, const char *path) {
    sd_trainer *t = L->t;
    float *dst = L->mask_host + j * h * w;
    sd_cache_key km;
    bool masked;
    if (sd_train_mask_key(t, t->data, index, epoch, &km, &masked) != SQ_OK) return SQ_FAIL;
    if (!masked) {
        for (int64_t k = 0; k < h * w; k++) dst[k] = 1.0f;
        return SQ_OK;
    }
    sq_tensor m = sq_tensor_view(dst, SQ_F32, SQ_CPU, 4, SQ_SHAPE(1, 1, h, w));
    sd_cache_item mi = {"mask", &m};
    if (sd_train_load_cached(t, &km, &mi, 1, path) != SQ_OK) return SQ_FAIL;
    double sum = 0;
    for (int64_t k = 0; k < h * w; k++) sum += dst[k];
    if (!(sum > 0)) return sq_errorf("%s: its cached loss mask is 0 everywhere; remove the cache folder %s", path, t->cache_dir);
    return SQ_OK;
}

// The step's batch in the epoch's plan (loaded when the epoch changes).
static int step_batch(loop *L, int64_t step, const sd_batch **b, int *epoch) {
    int bi;
    sd_train_step_batch(L->t, step, epoch, &bi);
    if (*epoch != L->cur_epoch) {
        if (L->cur_epoch >= 0) sd_epoch_plan_free(&L->plan);
        L->cur_epoch = -1;
        if (sd_dataset_epoch(L->t->data, *epoch, &L->plan) != SQ_OK) return SQ_FAIL;
        L->cur_epoch = *epoch;
    }
    *b = &L->plan.batches[bi];
    return SQ_OK;
}

static int build_batch(loop *L, int64_t step, batch *bt) {
    sd_trainer *t = L->t;
    int epoch;
    const sd_batch *b;
    if (step_batch(L, step, &b, &epoch) != SQ_OK) return SQ_FAIL;
    int C = t->latent_channels, f = t->vae_factor;
    if (b->count > 64) return sq_errorf("--batch-size above 64 is not supported");
    // split batch: this process's samples [lo, hi) of the step's batch; the noise and
    // σ of sample j are those of its place in the whole batch, as in one process
    int lo = 0, hi = b->count;
    if (t->opt.split == SD_SPLIT_BATCH) sd_train_share(b->count, L->rank, L->world, &lo, &hi);
    int B = hi - lo;
    int64_t per = 0, h = 0, w = 0;
    for (int j = 0; j < B; j++) {
        sd_cache_key kl, kt;
        int iw, ih, item = b->items[lo + j];
        if (sd_train_item_keys(t, t->data, item, epoch, &kl, &kt, &iw, &ih) != SQ_OK) return SQ_FAIL;
        h = ih / f;
        w = iw / f;
        per = C * h * w;
        sq_tensor lat = sd_train_slice(&L->x0_buf, j * per, 4, SQ_SHAPE(1, C, h, w));
        sq_tensor ctx = sd_train_slice(&L->ctx_buf, (int64_t)j * t->ctx_tokens * t->ctx_dim, 3, SQ_SHAPE(1, t->ctx_tokens, t->ctx_dim));
        sq_tensor pooled = sd_train_slice(&L->pooled_buf, (int64_t)j * t->pooled_dim, 2, SQ_SHAPE(1, t->pooled_dim));
        const char *path = sd_dataset_entry(t->data, item)->path;
        sd_cache_item li = {"latent", &lat};
        sd_cache_item ti[2] = {{"context", &ctx}, {"pooled", &pooled}};
        if (sd_train_load_cached(t, &kl, &li, 1, path) != SQ_OK || sd_train_load_cached(t, &kt, ti, 2, path) != SQ_OK)
            return SQ_FAIL;
        if (L->mask_host && load_weights(L, item, epoch, j, h, w, path) != SQ_OK) return SQ_FAIL;
        uint64_t key_noise = sq_rng_stream_key(t->opt.seed, SQ_RNG_STREAM_NOISE), key_sigma = sq_rng_stream_key(t->opt.seed, SQ_RNG_STREAM_SIGMA);
        sd_draw_noise(L->noise_host + j * per, per, key_noise, (uint64_t)step, lo + j);
        bt->sigma[j] = sd_draw_sigma(&t->sigma, key_sigma, (uint64_t)step, lo + j);
    }
    bt->B = B;
    bt->x0 = sd_train_slice(&L->x0_buf, 0, 4, SQ_SHAPE(B, C, h, w));
    bt->noise = sd_train_slice(&L->noise_buf, 0, 4, SQ_SHAPE(B, C, h, w));
    bt->ctx = sd_train_slice(&L->ctx_buf, 0, 3, SQ_SHAPE(B, t->ctx_tokens, t->ctx_dim));
    bt->pooled = sd_train_slice(&L->pooled_buf, 0, 2, SQ_SHAPE(B, t->pooled_dim));
    memset(&bt->weights, 0, sizeof bt->weights);
    if (L->mask_host) {
        bt->weights = sd_train_slice(&L->mask_buf, 0, 4, SQ_SHAPE(B, 1, h, w));
        if (sq_tensor_from_host_f32(&bt->weights, L->mask_host) != SQ_OK) return SQ_FAIL;
    }
    return sq_tensor_from_host_f32(&bt->noise, L->noise_host);
}

int sd_train_run_step(loop *L, const sq_qzo_config *qc, sq_qzo_step_info *info) {
    batch bt;
    sd_flow_batch fb;
    sq_qzo_params params = {L->tl.scales, L->tl.index_base, L->tl.count};   // frozen layers: no update
    int64_t step = L->qs.step;
    // a batch smaller than the processes (an epoch's last, or a bucket's) leaves
    // some without samples: they evaluate nothing and take part in the exchange
    bool idle = false;
    if (L->world > 1 && L->t->opt.split == SD_SPLIT_BATCH) {
        int epoch, lo, hi;
        const sd_batch *b;
        if (step_batch(L, step, &b, &epoch) != SQ_OK) return SQ_FAIL;
        sd_train_share(b->count, L->rank, L->world, &lo, &hi);
        idle = hi == lo;
    }
    memset(&fb, 0, sizeof fb);
    bt.B = 0;
    if (!idle) {
        if (build_batch(L, step, &bt) != SQ_OK) return SQ_FAIL;
        if (sd_flow_batch_init(&fb, &L->m, &L->scratch, &bt.x0, &bt.noise, bt.sigma, &bt.ctx, &bt.pooled) != SQ_OK)
            return SQ_FAIL;
        if (sd_flow_batch_set_weights(&fb, bt.weights.data ? &bt.weights : NULL) != SQ_OK) {
            sd_flow_batch_free(&fb);
            return SQ_FAIL;
        }
    }
    L->last_batch = bt.B;
    int rc;
    if (L->world > 1) {
        combine_ctx cc = {L, bt.B, calloc((size_t)L->world, sizeof(step_record))};
        int q0 = 0, q1 = idle ? 0 : qc->queries;
        if (L->t->opt.split == SD_SPLIT_QUERIES) sd_train_share(qc->queries, L->rank, L->world, &q0, &q1);
        sq_qzo_split sp = {q0, q1 - q0, sd_train_combine_losses, &cc};
        rc = cc.all ? sq_qzo_step_split(qc, &L->qs, &params, sd_flow_loss, &fb, &sp, info) : sq_errorf("out of host memory");
        free(cc.all);
    } else {
        rc = sq_qzo_step(qc, &L->qs, &params, sd_flow_loss, &fb, info);
    }
    if (!idle) sd_flow_batch_free(&fb);
    if (rc != SQ_OK) return sq_error_context("step %lld", (long long)step);
    sq_device_synchronize(L->t->device);
    return SQ_OK;
}
