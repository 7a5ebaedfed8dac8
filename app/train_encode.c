// app/train_encode.c: the frozen-encoder phase of a training run. It walks every
// batch the run will see (the data plan is deterministic, so this is known up
// front), collects the cache keys of their latents and caption embeddings plus the
// validation set's and the preview prompts', and runs the VAE encoder and the text
// encoders only over the keys the cache does not hold yet. After that the encoders
// are freed: the MMDiT passes never share the device with them.
// With several processes each encodes its share of the missing keys; after a
// barrier each encodes whatever it still cannot see (a cache folder that is not
// shared between hosts), so every process ends with every entry it reads.
#include <stdlib.h>
#include <string.h>

#include "app/train.h"
#include "core/error.h"
#include "core/log.h"
#include "core/progress.h"
#include "kernels/ops.h"
#include "text_encoders/conditioning.h"
#include "vae/model.h"

void sd_train_share(int n, int r, int w, int *lo, int *hi) {
    *lo = (int)((int64_t)n * r / w);
    *hi = (int)((int64_t)n * (r + 1) / w);
}

void sd_train_step_batch(const sd_trainer *t, int64_t step, int *epoch, int *batch) {
    *epoch = (int)(step / t->batches_per_epoch);
    *batch = (int)(step % t->batches_per_epoch);
}

void sd_train_text_key(const sd_trainer *t, const char *prompt, sd_cache_key *key) {
    sd_cache_key_text(key, prompt, t->text_hash);
}

int sd_train_load_cached(const sd_trainer *t, const sd_cache_key *key, const sd_cache_item *items, int n, const char *what) {
    bool hit = false;
    if (sd_cache_load(t->cache, key, items, n, &hit) != SQ_OK) return SQ_FAIL;
    if (!hit)
        return sq_errorf("the cache entry of %s is missing or unusable (was %s changed during the run?); rerun to re-encode",
                         what, t->cache_dir);
    return SQ_OK;
}

sq_tensor sd_train_slice(const sq_tensor *buf, int64_t offset_elems, int ndim, const int64_t *shape) {
    size_t es = sq_dtype_bytes(buf->dtype, 1);
    return sq_tensor_view((char *)buf->data + (size_t)offset_elems * es, buf->dtype, buf->device, ndim, shape);
}

int sd_train_item_keys(sd_trainer *t, sd_dataset *ds, int index, int epoch, sd_cache_key *latent, sd_cache_key *text,
                       int *w, int *h) {
    sd_dataset_item it;
    if (sd_dataset_describe_item(ds, index, epoch, &it) != SQ_OK) return SQ_FAIL;
    int rc = sd_dataset_latent_key(ds, &it, t->vae_hash, latent);
    if (rc == SQ_OK) sd_train_text_key(t, it.caption, text);
    *w = it.width;
    *h = it.height;
    sd_dataset_item_free(&it);
    return rc;
}

int sd_train_mask_key(sd_trainer *t, sd_dataset *ds, int index, int epoch, sd_cache_key *key, bool *masked) {
    *masked = sd_dataset_mask_source(ds, index) != SD_MASK_SRC_NONE;
    if (!*masked) return SQ_OK;
    sd_dataset_item it;
    if (sd_dataset_describe_item(ds, index, epoch, &it) != SQ_OK) return SQ_FAIL;
    int rc = sd_dataset_mask_key(ds, &it, t->vae_factor, key);
    sd_dataset_item_free(&it);
    return rc;
}

// ---- the work list: unique keys, each with what is needed to compute it ----

typedef struct {
    sd_cache_key key;
    sd_dataset *ds;     // latent jobs: which item of which epoch
    int index, epoch;
    char *prompt;       // text jobs
} job;

typedef struct {
    job *jobs;
    int count, cap;
} job_list;

static int key_cmp(const void *a, const void *b) { return strcmp(((const job *)a)->key.hex, ((const job *)b)->key.hex); }

static int add_job(job_list *l, const job *j) {
    if (l->count == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        job *n = realloc(l->jobs, (size_t)cap * sizeof *n);
        if (!n) return sq_errorf("out of host memory");
        l->jobs = n;
        l->cap = cap;
    }
    l->jobs[l->count++] = *j;
    return SQ_OK;
}

// Sorts, drops duplicates, and keeps only keys the cache does not hold.
static void keep_misses(job_list *l, const sd_cache *cache) {
    if (l->count == 0) return;   // an empty list has no array (qsort wants one)
    qsort(l->jobs, (size_t)l->count, sizeof *l->jobs, key_cmp);
    int n = 0;
    for (int i = 0; i < l->count; i++) {
        bool dup = n > 0 && !strcmp(l->jobs[n - 1].key.hex, l->jobs[i].key.hex);
        if (dup || sd_cache_exists(cache, &l->jobs[i].key)) {
            free(l->jobs[i].prompt);
            continue;
        }
        l->jobs[n++] = l->jobs[i];
    }
    l->count = n;
}

// Keeps jobs i with i % w == r: interleaved, so each process gets a mix of the
// sorted keys' images (sizes differ between buckets).
static void keep_share(job_list *l, int r, int w) {
    int n = 0;
    for (int i = 0; i < l->count; i++) {
        if (i % w == r) l->jobs[n++] = l->jobs[i];
        else free(l->jobs[i].prompt);
    }
    l->count = n;
}

static void free_jobs(job_list *l) {
    for (int i = 0; i < l->count; i++) free(l->jobs[i].prompt);
    free(l->jobs);
    memset(l, 0, sizeof *l);
}

// msk: the item's loss mask, when it has one (training items only; NULL for the
// validation set, whose loss is unmasked).
static int add_item(sd_trainer *t, job_list *lat, job_list *txt, job_list *msk, sd_dataset *ds, int index, int epoch) {
    sd_dataset_item it;
    if (sd_dataset_describe_item(ds, index, epoch, &it) != SQ_OK) return SQ_FAIL;
    job jl = {.ds = ds, .index = index, .epoch = epoch};
    job jt = {0};
    int rc = sd_dataset_latent_key(ds, &it, t->vae_hash, &jl.key);
    if (rc == SQ_OK && msk && sd_dataset_mask_source(ds, index) != SD_MASK_SRC_NONE) {
        job jm = {.ds = ds, .index = index, .epoch = epoch};
        rc = sd_dataset_mask_key(ds, &it, t->vae_factor, &jm.key);
        if (rc == SQ_OK) rc = add_job(msk, &jm);
    }
    if (rc == SQ_OK) {
        sd_train_text_key(t, it.caption, &jt.key);
        jt.prompt = strdup(it.caption);
        rc = jt.prompt ? add_job(lat, &jl) : sq_errorf("out of host memory");
        if (rc == SQ_OK) rc = add_job(txt, &jt);
        else free(jt.prompt);
    }
    sd_dataset_item_free(&it);
    return rc;
}

static int add_prompt(sd_trainer *t, job_list *txt, const char *prompt) {
    job j = {.prompt = strdup(prompt)};
    if (!j.prompt) return sq_errorf("out of host memory");
    sd_train_text_key(t, prompt, &j.key);
    return add_job(txt, &j);
}

static int collect(sd_trainer *t, int64_t first_step, job_list *lat, job_list *txt, job_list *msk) {
    int cur_epoch = -1;
    sd_epoch_plan plan = {0};
    for (int64_t s = first_step; s < t->opt.steps; s++) {
        int epoch, b;
        sd_train_step_batch(t, s, &epoch, &b);
        if (epoch != cur_epoch) {
            if (cur_epoch >= 0) sd_epoch_plan_free(&plan);
            if (sd_dataset_epoch(t->data, epoch, &plan) != SQ_OK) return SQ_FAIL;
            cur_epoch = epoch;
        }
        for (int j = 0; j < plan.batches[b].count; j++)
            if (add_item(t, lat, txt, msk, t->data, plan.batches[b].items[j], epoch) != SQ_OK) {
                sd_epoch_plan_free(&plan);
                return SQ_FAIL;
            }
    }
    if (cur_epoch >= 0) sd_epoch_plan_free(&plan);
    for (int i = 0; t->val && i < sd_dataset_count(t->val); i++)
        if (add_item(t, lat, txt, NULL, t->val, i, 0) != SQ_OK) return SQ_FAIL;
    if (add_prompt(t, txt, "") != SQ_OK) return SQ_FAIL;   // the unconditional branch
    for (int i = 0; i < t->n_prompts; i++)
        if (add_prompt(t, txt, t->prompts[i]) != SQ_OK) return SQ_FAIL;
    return SQ_OK;
}

// ---- the encoders ----

static int encode_latents(sd_trainer *t, const job_list *jobs) {
    sd_vae vae;
    if (sd_train_load_vae(t, &vae) != SQ_OK) return SQ_FAIL;
    int rc = SQ_OK;
    sq_arena arena = {0};
    sq_progress pr;
    sq_progress_begin(&pr, "encoding latents", jobs->count);
    for (int i = 0; i < jobs->count && rc == SQ_OK; i++) {
        if (*t->stop) { rc = sq_errorf("interrupted while encoding latents (the ones done are cached)"); break; }
        const job *j = &jobs->jobs[i];
        sd_dataset_item it;
        if (sd_dataset_load_item(j->ds, j->index, j->epoch, &it) != SQ_OK) { rc = SQ_FAIL; break; }
        int f = sd_vae_factor(&vae.cfg), C = vae.cfg.latent_channels;
        sq_tensor img = {0}, lat = {0};
        size_t need = sd_vae_scratch_estimate(&vae.cfg, 1, it.height, it.width, (int)sq_dtype_bytes(t->dtype, 1));
        if (arena.size < need) {
            sq_arena_free(&arena);
            rc = sq_arena_init(&arena, t->device, need);
        }
        if (rc == SQ_OK) rc = sq_tensor_alloc(&img, t->dtype, t->device, 4, SQ_SHAPE(1, 3, it.height, it.width));
        if (rc == SQ_OK) rc = sq_tensor_alloc(&lat, t->dtype, t->device, 4, SQ_SHAPE(1, C, it.height / f, it.width / f));
        if (rc == SQ_OK) rc = sq_tensor_copy(&img, &it.image);
        if (rc == SQ_OK) rc = sd_vae_encode(&vae, &arena, &img, &lat);
        if (rc == SQ_OK) {
            sd_cache_item ci = {"latent", &lat};
            rc = sd_cache_store(t->cache, &j->key, &ci, 1);
        }
        if (rc != SQ_OK) sq_error_context("%s", it.path);
        sq_tensor_free(&img);
        sq_tensor_free(&lat);
        sd_dataset_item_free(&it);
        sq_progress_update(&pr, i + 1, NULL);
    }
    sq_progress_end(&pr);
    sq_arena_free(&arena);
    sd_vae_free(&vae);
    return rc;
}

// Loss masks need no model: decoded, transformed and area-averaged on the host.
static int encode_masks(sd_trainer *t, const job_list *jobs) {
    int rc = SQ_OK;
    sq_progress pr;
    sq_progress_begin(&pr, "preparing loss masks", jobs->count);
    for (int i = 0; i < jobs->count && rc == SQ_OK; i++) {
        if (*t->stop) { rc = sq_errorf("interrupted while preparing loss masks (the ones done are cached)"); break; }
        const job *j = &jobs->jobs[i];
        sd_dataset_item it;
        sq_tensor m = {0};
        if (sd_dataset_describe_item(j->ds, j->index, j->epoch, &it) != SQ_OK) { rc = SQ_FAIL; break; }
        rc = sd_dataset_load_mask(j->ds, &it, t->vae_factor, &m);
        if (rc == SQ_OK) {
            sd_cache_item ci = {"mask", &m};
            rc = sd_cache_store(t->cache, &j->key, &ci, 1);
        }
        sq_tensor_free(&m);
        sd_dataset_item_free(&it);
        sq_progress_update(&pr, i + 1, NULL);
    }
    sq_progress_end(&pr);
    return rc;
}

static int encode_texts(sd_trainer *t, const job_list *jobs, sd_text_encoders *te) {
    int rc = SQ_OK;
    sq_arena arena;
    if (sq_arena_init(&arena, t->device, sd_text_scratch_bytes(te, 1)) != SQ_OK) return SQ_FAIL;
    sq_tensor ctx = {0}, pooled = {0};
    rc = sq_tensor_alloc(&ctx, t->dtype, t->device, 3, SQ_SHAPE(1, t->ctx_tokens, t->ctx_dim));
    if (rc == SQ_OK) rc = sq_tensor_alloc(&pooled, t->dtype, t->device, 2, SQ_SHAPE(1, t->pooled_dim));
    sq_progress pr;
    sq_progress_begin(&pr, "encoding captions", jobs->count);
    for (int i = 0; i < jobs->count && rc == SQ_OK; i++) {
        if (*t->stop) { rc = sq_errorf("interrupted while encoding captions (the ones done are cached)"); break; }
        const char *p = jobs->jobs[i].prompt;
        rc = sd_encode_prompts(te, &arena, &p, 1, &ctx, &pooled);
        if (rc == SQ_OK) {
            sd_cache_item ci[2] = {{"context", &ctx}, {"pooled", &pooled}};
            rc = sd_cache_store(t->cache, &jobs->jobs[i].key, ci, 2);
        }
        if (rc != SQ_OK) sq_error_context("caption \"%.60s\"", p);
        sq_progress_update(&pr, i + 1, NULL);
    }
    sq_progress_end(&pr);
    sq_tensor_free(&ctx);
    sq_tensor_free(&pooled);
    sq_arena_free(&arena);
    return rc;
}

int sd_train_encode(sd_trainer *t, int64_t first_step) {
    sd_vae_config vcfg;
    if (sd_train_vae_config(t, &vcfg) != SQ_OK) return SQ_FAIL;
    t->latent_channels = vcfg.latent_channels;
    t->vae_factor = sd_vae_factor(&vcfg);
    if (sd_train_vae_hash(t, t->vae_hash) != SQ_OK) return SQ_FAIL;

    // Every caption key includes the text encoders' hash, so they are loaded before
    // the work list is built and kept until the captions are encoded.
    sd_text_encoders te;
    if (sd_train_load_text(t, &te) != SQ_OK) return SQ_FAIL;
    if (sd_text_encoders_hash(&te, t->text_hash) != SQ_OK) { sd_text_encoders_free(&te); return SQ_FAIL; }
    t->ctx_tokens = sd_text_context_tokens(&te);
    t->ctx_dim = sd_text_context_dim(&te);
    t->pooled_dim = sd_text_pooled_dim(&te);

    job_list lat = {0}, txt = {0}, msk = {0};
    int rc = collect(t, first_step, &lat, &txt, &msk);
    int W = sq_dist_world(t->dist);
    if (rc == SQ_OK) {
        keep_misses(&lat, t->cache);
        keep_misses(&txt, t->cache);
        keep_misses(&msk, t->cache);
        const char *shared = W > 1 ? ", shared out among the processes" : "";
        if (sd_dataset_mask_mode(t->data) != SD_MASKS_NONE)
            sq_log_info("cache %s: %d latents, %d caption embeddings and %d loss masks to compute%s", t->cache_dir,
                        lat.count, txt.count, msk.count, shared);
        else
            sq_log_info("cache %s: %d latents and %d caption embeddings to compute%s", t->cache_dir, lat.count, txt.count,
                        shared);
        // nobody writes before every process has listed its misses: the lists agree
        if (W > 1 && (rc = sq_dist_barrier_within(t->dist, "encode plan", SD_PHASE_TIMEOUT_S)) == SQ_OK) {
            keep_share(&lat, sq_dist_rank(t->dist), W);
            keep_share(&txt, sq_dist_rank(t->dist), W);
            keep_share(&msk, sq_dist_rank(t->dist), W);
        }
        // the masks first: a bad one (all zero in its crop) stops the run before any encoder works
        if (rc == SQ_OK && msk.count) rc = encode_masks(t, &msk);
        if (rc == SQ_OK && txt.count) rc = encode_texts(t, &txt, &te);
    }
    sd_text_encoders_free(&te);   // before the VAE: never both on the device
    if (rc == SQ_OK && lat.count) rc = encode_latents(t, &lat);
    free_jobs(&lat);
    free_jobs(&txt);
    free_jobs(&msk);
    if (rc != SQ_OK || W == 1) return rc;
    if (sq_dist_barrier_within(t->dist, "encode done", SD_PHASE_TIMEOUT_S) != SQ_OK) return SQ_FAIL;
    // what this process still misses was encoded by another on a cache it cannot see
    if (collect(t, first_step, &lat, &txt, &msk) != SQ_OK) {
        free_jobs(&lat); free_jobs(&txt); free_jobs(&msk);
        return SQ_FAIL;
    }
    keep_misses(&lat, t->cache);
    keep_misses(&txt, t->cache);
    keep_misses(&msk, t->cache);
    if (lat.count || txt.count || msk.count)
        sq_log_warn("%d latents, %d caption embeddings and %d loss masks encoded by other processes are not in %s (a cache "
                    "folder not shared between hosts?): encoding them here", lat.count, txt.count, msk.count, t->cache_dir);
    if (msk.count) rc = encode_masks(t, &msk);
    if (rc == SQ_OK && txt.count && (rc = sd_train_load_text(t, &te)) == SQ_OK) {
        rc = encode_texts(t, &txt, &te);
        sd_text_encoders_free(&te);
    }
    if (rc == SQ_OK && lat.count) rc = encode_latents(t, &lat);
    free_jobs(&lat);
    free_jobs(&txt);
    free_jobs(&msk);
    return rc;
}
