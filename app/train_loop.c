// app/train_loop.c: the MMDiT phase of a training run (see app/train.h). The
// transformer is int4 (quantised once into the cache folder, or an `sd-qzo quantize`
// file); every step loads its batch's latents and embeddings from the cache, draws
// the noise and σ of (seed, step), and hands the flow-matching loss to the QZO
// optimiser. Around the steps: the fixed-noise validation loss and preview images
// (app/train_eval.h), atomic checkpoints (also on Ctrl-C), the step log (and
// TensorBoard with --tensorboard), report.html, and the time each phase takes
// (app/train_timing.h: the progress line's ETA and the closing summary).
// --train-blocks / --train-layers freeze the layers they leave out
// (qzo/train_selection.h); --ema keeps an fp32 EMA of the trained scales on the
// scales' device, updated after every accepted step, validated beside them and saved
// in the checkpoint (docs/QZO.md).
// With several processes (app/train.h) every one runs every step on its share
// (opt.split) and the step's losses are exchanged inside the step (combine below);
// rank 0 alone measures the validation loss, draws previews and writes OUT. Every
// SD_SCALE_CHECK_EVERY steps, at each checkpoint and at the end, the processes
// compare a hash of their scales: they must hold the same bits.
#include <math.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "app/train.h"
#include "app/train_eval.h"
#include "app/train_lr_auto.h"
#include "app/train_tensorboard.h"
#include "core/error.h"
#include "core/log.h"
#include "core/path.h"
#include "core/progress.h"
#include "core/safetensors.h"
#include "core/sha256.h"
#include "kernels/backend.h"
#include "kernels/ops.h"
#include "mmdit/base_model.h"
#include "mmdit/quantize.h"
#include "mmdit/quantize_file.h"
#include "qzo/checkpoint.h"
#include "qzo/diagnostics.h"
#include "qzo/flow_loss.h"
#include "qzo/train_selection.h"
#include "qzo/trained_scales.h"

typedef struct {
    sd_trainer *t;
    sd_mmdit m;
    sq_arena scratch;
    sd_scale_list sl;            // every int4 layer's scales, as checkpoints name them
    sd_scale_list tl;            // the trained ones (all of sl unless --train-blocks / --train-layers)
    sd_train_selection sel;
    sd_train_selection_count sel_count;
    // --ema: one F32 tensor per trained layer (tl's order) on the scales' device
    sq_tensor *ema;
    sq_named_scales *ema_named;
    char (*ema_names)[120];
    int64_t ema_updates;         // accepted steps averaged in
    sq_qzo_config qc;
    sq_qzo_state qs;
    // batch buffers, sized for the largest bucket
    sq_tensor x0_buf, ctx_buf, pooled_buf, noise_buf;
    float *noise_host;
    sq_tensor mask_buf;          // loss weights (B,1,h,w) F32 on the device; empty without masks
    float *mask_host;
    int cur_epoch;
    sd_epoch_plan plan;
    sd_train_eval eval;          // validation loss and previews
    sd_train_log log;
    sd_train_tb tb;              // --tensorboard
    int last_batch;              // images in the last step's batch
    bool lr_auto;                // --lr auto: calibrate before the first step
    sd_lr_auto_result lr_auto_result;
    bool lr_auto_valid;          // lr_auto_result holds the calibration (ran here, or read back for the report)
    bool lr_auto_resumed;        // a resumed --lr auto run: its calibration is in OUT/lr_auto.json
    float **start_scales;        // --lr auto: the scales before the first candidate (host)
    // several processes
    int world, rank;
    bool stop_all;               // some process was asked to stop (exchanged each step)
    float *hash_buf;             // host copy of one layer's scales, for the hash
    size_t hash_cap;
} loop;

#define SD_SCALE_CHECK_EVERY 100   // steps between the processes' scale-hash comparisons

static double gib(size_t b);

// ---- the int4 transformer ----

// The quantised copy of a dense checkpoint is keyed by the source files' names,
// sizes and modification times (hashing 16 GB of weights each run would cost more
// than it saves) and the group size. st: the base's weights (mmdit/base_model.h).
static int quantized_path(const sd_trainer *t, const sq_safetensors *st, char *out, size_t size) {
    sq_sha256 h;
    sq_sha256_init(&h);
    char buf[1400];
    for (int i = 0; i < sq_st_file_count(st); i++) {
        struct stat fs;
        const char *p = sq_st_file_path(st, i);
        if (stat(p, &fs) != 0) return sq_error_errno("%s", p);
        int n = snprintf(buf, sizeof buf, "%s|%lld|%lld|", p, (long long)fs.st_size, (long long)fs.st_mtime);
        sq_sha256_update(&h, buf, (size_t)n);
    }
    int n = snprintf(buf, sizeof buf, "group=%d", t->opt.group_size);
    sq_sha256_update(&h, buf, (size_t)n);
    uint8_t d[32];
    char hex[65];
    sq_sha256_final(&h, d);
    sq_sha256_hex(d, hex);
    snprintf(out, size, "%s/mmdit-int4-g%d-%.16s.safetensors", t->cache_dir, t->opt.group_size, hex);
    return SQ_OK;
}

// The int4 file training loads: --model itself when it is an `sd-qzo quantize` file
// (its group size must be --group-size, which the checkpoint records), else the
// cached quantised copy, made once.
static int int4_path(const sd_trainer *t, char *out, size_t size) {
    sd_base_model base;
    sq_safetensors *st;
    if (sd_base_open(t->opt.model, &base, &st) != SQ_OK) return sq_error_context("--model");
    int rc = SQ_OK;
    if (base.quantized) {
        if (base.group != t->opt.group_size)
            rc = sq_errorf("--model %s is int4 at group size %d: pass --group-size %d", t->opt.model, base.group, base.group);
        snprintf(out, size, "%s", t->opt.model);
    } else {
        rc = quantized_path(t, st, out, size);
    }
    sq_st_close(st);
    if (rc != SQ_OK || base.quantized || sq_is_file(out)) return rc;
    sq_log_info("quantising %s to int4 (group %d) once, into %s", t->opt.model, t->opt.group_size, out);
    // on the run's device: the GPU quantises in seconds, and gives the CPU's bits
    sd_quantize_options qo = {.device = t->device == SQ_CUDA ? SQ_DEVICE_CUDA : SQ_DEVICE_CPU};
    if (sd_quantize_checkpoint_ex(t->opt.model, out, t->opt.group_size, &qo, NULL) != SQ_OK)
        return sq_error_context("quantising --model");
    return SQ_OK;
}

static int load_mmdit(loop *L) {
    sd_trainer *t = L->t;
    char qpath[1200];
    if (t->synthetic) {
        if (sd_train_load_mmdit(t, &L->m) != SQ_OK) return SQ_FAIL;
        snprintf(qpath, sizeof qpath, "%s", t->opt.model);
    } else {
        // rank 0 quantises a dense --model (once, into the cache) while the others wait,
        // then they find it there (or, on a host that does not share it, make their own)
        int rc = L->world > 1 && !t->root ? sq_dist_barrier_within(t->dist, "int4 model", SD_PHASE_TIMEOUT_S) : SQ_OK;
        if (rc == SQ_OK) rc = int4_path(t, qpath, sizeof qpath);
        if (rc == SQ_OK && L->world > 1 && t->root) rc = sq_dist_barrier_within(t->dist, "int4 model", SD_PHASE_TIMEOUT_S);
        if (rc != SQ_OK) return SQ_FAIL;
    }
    if (!t->synthetic && t->device == SQ_CUDA) {
        // the int4 file is about what the weights take on the GPU: refuse before
        // filling the card rather than failing halfway through the load
        struct stat st;
        size_t fr, tot;
        if (stat(qpath, &st) == 0 && sq_cuda_mem_info(&fr, &tot) == SQ_OK && (size_t)st.st_size + ((size_t)512 << 20) > fr)
            return sq_errorf("not enough GPU memory for the int4 MMDiT: it needs about %.2f GiB and %.2f GiB are free; "
                             "free the GPU (other programs), or use a smaller model", gib((size_t)st.st_size + ((size_t)512 << 20)),
                             gib(fr));
    }
    if (!t->synthetic && sd_mmdit_load(&L->m, qpath, t->device, t->dtype) != SQ_OK) {
        if (strcmp(qpath, t->opt.model) == 0) return sq_error_context("loading the MMDiT");
        // The cached int4 copy holds what --model holds: its faults (a missing tensor, a
        // shape that contradicts the config) are --model's, so the message names the
        // user's file, and the copy goes, lest a fixed model meet a stale cache entry.
        char msg[2048], *at;
        snprintf(msg, sizeof msg, "%s", sq_error_message());
        size_t ql = strlen(qpath);
        if ((at = strstr(msg, qpath)) != NULL) memmove(at, at + ql, strlen(at + ql) + 1);
        if (unlink(qpath) != 0 && errno != ENOENT) sq_log_warn("could not remove %s", qpath);
        return sq_errorf("--model %s: its transformer does not load (found in its int4 copy%s%s)", t->opt.model,
                         msg[0] == ':' ? "" : ": ", msg);
    }
    const sd_mmdit_config *c = &L->m.cfg;
    if (c->joint_attention_dim != t->ctx_dim || c->pooled_projection_dim != t->pooled_dim || c->in_channels != t->latent_channels)
        return sq_errorf("the transformer (context %d, pooled %d, %d latent channels) does not fit the text encoders / VAE "
                         "(context %d, pooled %d, %d latent channels): --model and the encoders are different models",
                         c->joint_attention_dim, c->pooled_projection_dim, c->in_channels, t->ctx_dim, t->pooled_dim,
                         t->latent_channels);
    if (sd_scale_list_make(&L->m, qpath, &L->sl) != SQ_OK) return sq_error_context("QZO has nothing to train");
    // which layers train: the others are marked frozen and left out of tl
    if (sd_train_selection_parse(t->opt.train_blocks, t->opt.train_layers, &L->sel) != SQ_OK ||
        sd_train_selection_apply(&L->sel, &L->m, &L->sel_count) != SQ_OK || sd_scale_list_make_trained(&L->m, qpath, &L->tl) != SQ_OK)
        return SQ_FAIL;
    const sd_train_selection_count *n = &L->sel_count;
    sq_log_info("trainable scales: %lld of %lld (%.1f%%) in %d of %d int4 layers (--train-blocks %s, --train-layers %s)%s",
                (long long)n->scales, (long long)n->total_scales, 100.0 * (double)n->scales / (double)n->total_scales,
                n->layers, n->total_layers, t->opt.train_blocks, t->opt.train_layers,
                n->layers < n->total_layers ? "; the others stay frozen int4: no perturbation, no update" : "");
    return SQ_OK;
}

// ---- the EMA of the trained scales (--ema) ----

// One F32 copy of every trained layer's scales, on their device, named for the
// checkpoint; it starts equal to the scales (resume overwrites it with the saved one).
static int ema_init(loop *L) {
    int n = L->tl.count;
    L->ema = calloc((size_t)n + 1, sizeof *L->ema);
    L->ema_named = calloc((size_t)n + 1, sizeof *L->ema_named);
    L->ema_names = calloc((size_t)n + 1, sizeof *L->ema_names);
    if (!L->ema || !L->ema_named || !L->ema_names) return sq_errorf("out of host memory");
    for (int i = 0; i < n; i++) {
        const sq_tensor *s = L->tl.scales[i];
        if (sq_tensor_alloc(&L->ema[i], SQ_F32, s->device, s->ndim, s->shape) != SQ_OK)
            return sq_error_context("the EMA of the scales (--ema %g)", (double)L->t->opt.ema);
        if (sq_tensor_copy(&L->ema[i], s) != SQ_OK) return SQ_FAIL;
        snprintf(L->ema_names[i], sizeof L->ema_names[i], "%s%s", SQ_CHECKPOINT_EMA_PREFIX, L->tl.names[i]);
        L->ema_named[i] = (sq_named_scales){L->ema_names[i], &L->ema[i]};
    }
    return SQ_OK;
}

static void ema_free(loop *L) {
    for (int i = 0; L->ema && i < L->tl.count; i++) sq_tensor_free(&L->ema[i]);
    free(L->ema);
    free(L->ema_named);
    free(L->ema_names);
    L->ema = NULL;
    L->ema_named = NULL;
    L->ema_names = NULL;
}

static void ema_update(loop *L) {
    for (int i = 0; i < L->tl.count; i++) sq_ema_update(&L->ema[i], L->tl.scales[i], L->t->opt.ema);
    L->ema_updates++;
}

// Exchanges the trained scales with their EMA in the model (tensor handles only, no
// copy): the model then runs with the EMA; a second call puts the scales back.
static void ema_swap(loop *L) {
    for (int i = 0; i < L->tl.count; i++) {
        sq_tensor tmp = *L->tl.scales[i];
        *L->tl.scales[i] = L->ema[i];
        L->ema[i] = tmp;
    }
}

static int val_loss_ema(loop *L, double *out) {
    ema_swap(L);
    int rc = sd_train_val_loss(&L->eval, &L->m, &L->scratch, out);
    ema_swap(L);
    return rc;
}

// ---- memory ----

static double gib(size_t b) { return (double)b / 1073741824.0; }

static double device_used_gib(const sd_trainer *t) {
    size_t fr, tot;
    if (t->device != SQ_CUDA || sq_cuda_mem_info(&fr, &tot) != SQ_OK) return 0;
    return gib(tot - fr);
}

static int alloc_scratch(loop *L) {
    sd_trainer *t = L->t;
    const sd_mmdit_config *c = &L->m.cfg;
    int p = c->patch_size, f = t->vae_factor;
    int64_t R = t->opt.resolution, N = (R / f / p) * (R / f / p);
    int es = (int)sq_dtype_bytes(t->dtype, 1);
    // the training batch, or the cond + uncond pair of a preview when previews are on
    int B = t->opt.batch_size;
    if (t->opt.sample_every > 0 && t->n_prompts > 0 && t->opt.sample_cfg > 1 && B < 2) B = 2;
    size_t need = sd_mmdit_scratch_estimate(c, B, (int)N, t->ctx_tokens, es);
    // the encode phase's cuDNN workspace (VAE convolutions) is far larger than what the
    // MMDiT's attention needs: give it back before the MMDiT phase's peak
    size_t trimmed = sq_device_trim(t->device);
    if (trimmed) sq_log_info("released %.0f MiB of cuDNN workspace left by the encode phase", trimmed / 1048576.0);
    if (t->device == SQ_CUDA) {
        size_t fr, tot;
        if (sq_cuda_mem_info(&fr, &tot) == SQ_OK && need + ((size_t)256 << 20) > fr)
            return sq_errorf("not enough GPU memory: the MMDiT passes need %.2f GiB of scratch at %lldx%lld, batch %d, "
                             "and %.2f GiB are free after loading the weights; lower --resolution or --batch-size",
                             gib(need), (long long)R, (long long)R, t->opt.batch_size, gib(fr));
    }
    if (sq_arena_init(&L->scratch, t->device, need) != SQ_OK) return sq_error_context("MMDiT scratch");
    char mem[64] = "";
    if (t->device == SQ_CUDA) snprintf(mem, sizeof mem, "; GPU memory in use (all processes) %.2f GiB", device_used_gib(t));
    char ema[160] = "";
    if (t->opt.ema > 0 && t->root)   // the EMA is allocated in setup, after the scratch: its cost, said here
        snprintf(ema, sizeof ema, ", EMA of the %lld trained scales %.3g MiB (fp32, --ema %g)",
                 (long long)L->sel_count.scales, (double)L->sel_count.scales * sizeof(float) / 1048576.0, (double)t->opt.ema);
    sq_log_info("MMDiT: %d int4 layers (group %d); weights on %s, scratch %.2f GiB%s%s", L->sl.count, t->opt.group_size,
                t->device == SQ_CUDA ? "the GPU" : "the CPU", gib(need), ema, mem);
    return SQ_OK;
}

// ---- batches from the cache ----

static int alloc_batch_buffers(loop *L) {
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

// ---- checkpoint and report ----

static int save_checkpoint(loop *L) {
    sd_trainer *t = L->t;
    sq_checkpoint_info info = {.group_size = L->m.cfg.num_layers ? t->opt.group_size : 0, .config = L->qc, .state = L->qs};
    snprintf(info.base_sha256, sizeof info.base_sha256, "%s", L->m.source_sha256);
    snprintf(info.train_blocks, sizeof info.train_blocks, "%s", t->opt.train_blocks);
    snprintf(info.train_layers, sizeof info.train_layers, "%s", t->opt.train_layers);
    info.trained_scales = L->sel_count.scales;
    if (L->ema) {
        info.ema_beta = t->opt.ema;
        info.ema_updates = L->ema_updates;
    }
    info.loss_history = malloc(((size_t)L->log.count + 1) * sizeof(double));
    if (!info.loss_history) return sq_errorf("out of host memory");
    for (int i = 0; i < L->log.count; i++)
        if (L->log.rec[i].step > 0) info.loss_history[info.loss_count++] = L->log.rec[i].loss;
    char path[1100];
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", t->opt.output);
    int rc = sq_checkpoint_save_with_ema(path, L->sl.named, L->sl.count, L->ema_named, L->ema ? L->tl.count : 0, &info);
    free(info.loss_history);
    if (rc != SQ_OK)  // the write is atomic (temporary file, then rename): the old file stands
        return sq_error_context("saving the checkpoint of step %lld to %s (the previous one is kept)", (long long)L->qs.step,
                                path);
    return rc;
}

// timing: the closing summary (NULL: the time so far)
static int write_report(loop *L, const char *timing) {
    sd_trainer *t = L->t;
    char path[1100], summary[2048], val[256], now[768], masks[1200] = "";
    if (!timing) {
        sd_train_timing_summary(&t->timing, L->qs.step, now, sizeof now);
        timing = now;
    }
    snprintf(path, sizeof path, "%s/report.html", t->opt.output);
    sd_train_val_summary(&L->log, val, sizeof val);
    sd_mask_mode mm = sd_dataset_mask_mode(t->data);
    if (mm != SD_MASKS_NONE)
        snprintf(masks, sizeof masks, " Masked loss: %s%s, %d of %d training images masked (the others weigh 1); the "
                 "validation loss is unmasked.", mm == SD_MASKS_DIR ? "masks from " : "each image's alpha channel",
                 mm == SD_MASKS_DIR ? t->opt.masks : "", sd_dataset_masked_count(t->data), sd_dataset_count(t->data));
    snprintf(summary, sizeof summary, "%s %lld steps done.%s", val,
             L->log.count > 0 ? (long long)L->log.rec[L->log.count - 1].step : 0LL, masks);
    char *settings = sd_train_options_json(&t->opt);
    if (!L->lr_auto_valid && L->lr_auto_resumed) {   // once: the calibration of the interrupted run
        L->lr_auto_resumed = false;
        if (sd_lr_auto_read(t->opt.output, &L->lr_auto_result) == SQ_OK) L->lr_auto_valid = true;
        else {
            sq_log_warn("the report leaves out the --lr auto calibration: %s", sq_error_message());
            sq_error_clear();
        }
    }
    char training[700];
    const sd_train_selection_count *n = &L->sel_count;
    int len = snprintf(training, sizeof training, "Trained %lld of %lld scales (%.1f%%) in %d of %d int4 layers: --train-blocks %s, "
                       "--train-layers %s.", (long long)n->scales, (long long)n->total_scales,
                       100.0 * (double)n->scales / (double)(n->total_scales ? n->total_scales : 1), n->layers, n->total_layers,
                       t->opt.train_blocks, t->opt.train_layers);
    if (t->opt.ema > 0 && len > 0 && (size_t)len < sizeof training)
        snprintf(training + len, sizeof training - (size_t)len, " EMA of the trained scales: beta %g, %lld accepted steps "
                 "averaged in (validation loss of both above).", (double)t->opt.ema, (long long)L->ema_updates);
    sd_report r = {.title = t->opt.output, .settings_json = settings ? settings : "{}", .summary = summary,
                   .training = training, .log = &L->log,
                   .previews = L->eval.previews, .n_previews = L->eval.n_previews,
                   .lr_auto = L->lr_auto_valid ? &L->lr_auto_result : NULL, .timing = timing};
    int rc = sd_train_report_write(path, &r);
    free(settings);
    return rc;
}

// ---- one step, and what is measured around it ----

// What each process sends in a step's exchange: its share's losses and whether it
// was asked to stop (so that every process stops after the same step).
typedef struct {
    int64_t step;
    int32_t samples;             // split batch: the shard's size, the weight of its losses
    int32_t stop;
    double lp[64], lm[64];
} step_record;

typedef struct {
    loop *L;
    int samples;
    step_record *all;            // world records
} combine_ctx;

// sq_qzo_combine_fn: the step's losses from every process's share, summed in rank
// order so the bits are the same everywhere.
static int combine_losses(void *ctx, int64_t step, double *lp, double *lm, int queries) {
    combine_ctx *cc = ctx;
    loop *L = cc->L;
    step_record mine;
    memset(&mine, 0, sizeof mine);
    mine.step = step;
    mine.samples = cc->samples;
    mine.stop = *L->t->stop != 0;
    for (int j = 0; j < queries; j++) { mine.lp[j] = lp[j]; mine.lm[j] = lm[j]; }
    char what[48];
    snprintf(what, sizeof what, "step %lld losses", (long long)step + 1);
    if (sq_dist_allgather(L->t->dist, &mine, sizeof mine, cc->all, what) != SQ_OK) return SQ_FAIL;
    int total = 0;
    for (int r = 0; r < L->world; r++) {
        const step_record *o = &cc->all[r];
        if (o->step != step)
            return sq_errorf("rank %d is at step %lld and rank %d at step %lld: the processes no longer run the same steps",
                             r, (long long)o->step + 1, L->rank, (long long)step + 1);
        if (o->stop) L->stop_all = true;
        total += o->samples;
    }
    if (L->t->opt.split == SD_SPLIT_BATCH) {
        for (int j = 0; j < queries; j++) {
            double p = 0, m = 0;
            for (int r = 0; r < L->world; r++) {
                if (!cc->all[r].samples) continue;   // an idle process's losses are not numbers
                p += (double)cc->all[r].samples * cc->all[r].lp[j];
                m += (double)cc->all[r].samples * cc->all[r].lm[j];
            }
            lp[j] = p / total;
            lm[j] = m / total;
        }
    } else {
        for (int r = 0; r < L->world; r++) {
            int lo, hi;
            sd_train_share(queries, r, L->world, &lo, &hi);
            for (int j = lo; j < hi; j++) { lp[j] = cc->all[r].lp[j]; lm[j] = cc->all[r].lm[j]; }
        }
    }
    return SQ_OK;
}

static int run_step(loop *L, const sq_qzo_config *qc, sq_qzo_step_info *info) {
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
        sq_qzo_split sp = {q0, q1 - q0, combine_losses, &cc};
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

// The scale diagnostics into r; `announce`: also one log line per layer type and
// the warning when the perturbation is far from small.
static int diagnose(loop *L, sd_step_record *r, bool announce) {
    sd_qzo_diagnostics d;
    if (sd_qzo_diagnose(&L->tl, &L->qc, &d) != SQ_OK) return SQ_FAIL;   // the trained scales
    r->zero_share = d.zero_share;
    _Static_assert(SD_QK_COUNT == sizeof r->rel_perturb / sizeof r->rel_perturb[0], "one log column per layer type");
    for (int k = 0; k < SD_QK_COUNT; k++) r->rel_perturb[k] = d.rel_perturb[k];
    if (!announce) return SQ_OK;
    for (int k = 0; k < SD_QK_COUNT; k++)
        if (!isnan(d.rel_perturb[k]))
            sq_log_info("perturbation of %-17s scales: rms %.3g, eps %.3g %s = %.3g%% of the scale", sd_qlayer_kind_name((sd_qlayer_kind)k),
                        d.rms_scale[k], (double)L->qc.eps, L->qc.relative ? "(relative)" : "(absolute)",
                        100.0 * d.rel_perturb[k]);
    if (d.rel_perturb_max > SD_QZO_REL_PERTURB_WARN)
        sq_log_warn("the perturbation moves some scales by %.1f%% (above %.0f%%): L+ and L- then measure different "
                    "models, not a derivative; lower --eps%s", 100.0 * d.rel_perturb_max, 100.0 * SD_QZO_REL_PERTURB_WARN,
                    L->qc.relative ? "" : " or use --perturbation relative");
    return SQ_OK;
}

static void free_start_scales(loop *L) {
    for (int i = 0; L->start_scales && i < L->sl.count; i++) free(L->start_scales[i]);
    free(L->start_scales);
    L->start_scales = NULL;
}

// --lr auto's view of the loop (app/train_lr_auto.h).
static int lr_auto_save_start(void *ctx) {
    loop *L = ctx;
    L->start_scales = calloc((size_t)L->sl.count, sizeof *L->start_scales);
    if (!L->start_scales) return sq_errorf("out of host memory");
    for (int i = 0; i < L->sl.count; i++) {
        L->start_scales[i] = malloc((size_t)sq_tensor_numel(L->sl.scales[i]) * sizeof(float) + sizeof(float));
        if (!L->start_scales[i]) return sq_errorf("out of host memory keeping the scales for --lr auto");
        if (sq_tensor_to_host_f32(L->start_scales[i], L->sl.scales[i]) != SQ_OK) return SQ_FAIL;
    }
    return SQ_OK;
}

static int lr_auto_restore_start(void *ctx) {
    loop *L = ctx;
    for (int i = 0; i < L->sl.count; i++)
        if (sq_tensor_from_host_f32(L->sl.scales[i], L->start_scales[i]) != SQ_OK) return SQ_FAIL;
    sq_qzo_state_init(&L->qs);
    return SQ_OK;
}

static int lr_auto_run(void *ctx, float lr, int64_t from, int64_t to, bool *stopped) {
    loop *L = ctx;
    sq_qzo_config qc = L->qc;   // a short constant-rate run: no warm-up, no decay
    qc.lr = lr;
    qc.schedule = SQ_LR_CONSTANT;
    qc.warmup_steps = 0;
    for (int64_t k = from; k < to; k++) {
        L->qs.step = k;
        sq_qzo_step_info info;
        if (run_step(L, &qc, &info) != SQ_OK) {
            if (L->qs.bad_streak < qc.max_bad_steps) return SQ_FAIL;
            sq_error_clear();   // the optimiser gave up on this rate: a score of +inf
            *stopped = true;
            return SQ_OK;
        }
        if (*L->t->stop) return sq_errorf("interrupted during --lr auto (nothing saved yet; start the run again)");
    }
    return SQ_OK;
}

static int lr_auto_val(void *ctx, double *out) {
    loop *L = ctx;
    return sd_train_val_loss(&L->eval, &L->m, &L->scratch, out);
}

static int calibrate_lr(loop *L) {
    sd_lr_auto_ops ops = {L, lr_auto_save_start, lr_auto_restore_start, lr_auto_run, lr_auto_val};
    sq_log_info("--lr auto: %d candidate rates around %.3g, %d steps each, scored on the validation images",
                SD_LR_AUTO_CANDIDATES, (double)L->qc.lr, L->t->opt.lr_auto_steps);
    double t0 = sq_time_now();
    int rc = sd_lr_auto(&ops, L->qc.lr, L->t->opt.lr_auto_steps, &L->lr_auto_result);
    sd_train_timing_add(&L->t->timing, SD_PHASE_LR_AUTO, sq_time_now() - t0);
    free_start_scales(L);
    if (rc != SQ_OK) return SQ_FAIL;
    L->lr_auto_valid = true;
    L->qc.lr = L->lr_auto_result.lr[L->lr_auto_result.best];
    return sd_lr_auto_write(L->t->opt.output, &L->lr_auto_result);
}

// ---- the run ----

static void free_loop(loop *L) {
    free_start_scales(L);
    sd_train_tb_close(&L->tb);
    sd_train_log_close(&L->log);
    sd_train_eval_free(&L->eval);
    if (L->cur_epoch >= 0) sd_epoch_plan_free(&L->plan);
    sq_tensor_free(&L->x0_buf);
    sq_tensor_free(&L->noise_buf);
    sq_tensor_free(&L->ctx_buf);
    sq_tensor_free(&L->pooled_buf);
    free(L->noise_host);
    sq_tensor_free(&L->mask_buf);
    free(L->mask_host);
    sq_arena_free(&L->scratch);
    free(L->hash_buf);
    ema_free(L);
    sd_scale_list_free(&L->tl);
    sd_scale_list_free(&L->sl);
    if (L->m.blocks) sd_mmdit_free(&L->m);
}

// The processes compare a hash of their scales (after step `step`): a difference
// means they no longer train the same model, and the run stops naming the ranks.
static int check_scales_same(loop *L, int64_t step) {
    if (L->world == 1) return SQ_OK;
    uint64_t h = SQ_DIST_HASH_INIT;
    for (int i = 0; i < L->sl.count; i++) {
        size_t n = (size_t)sq_tensor_numel(L->sl.scales[i]);
        if (n > L->hash_cap) {
            free(L->hash_buf);
            L->hash_cap = 0;
            if (!(L->hash_buf = malloc(n * sizeof(float)))) return sq_errorf("out of host memory");
            L->hash_cap = n;
        }
        if (sq_tensor_to_host_f32(L->hash_buf, L->sl.scales[i]) != SQ_OK) return SQ_FAIL;
        h = sq_dist_hash(h, L->hash_buf, n * sizeof(float));
    }
    uint64_t *all = calloc((size_t)L->world, sizeof *all);
    if (!all) return sq_errorf("out of host memory");
    char what[48];
    snprintf(what, sizeof what, "step %lld scales", (long long)step);
    int rc = sq_dist_allgather(L->t->dist, &h, sizeof h, all, what);
    for (int r = 1; rc == SQ_OK && r < L->world; r++)
        if (all[r] != all[0])
            rc = sq_errorf("after step %lld the scales differ between processes: rank 0 holds %016llx, rank %d %016llx "
                           "(the processes must run the same build on the same kind of device)",
                           (long long)step, (unsigned long long)all[0], r, (unsigned long long)all[r]);
    if (rc == SQ_OK) sq_log_info("step %lld: the scales of the %d processes are identical (hash %016llx)", (long long)step,
                                 L->world, (unsigned long long)all[0]);
    free(all);
    return rc;
}

static int setup(loop *L) {
    sd_trainer *t = L->t;
    L->world = sq_dist_world(t->dist);
    L->rank = sq_dist_rank(t->dist);
    if (load_mmdit(L) != SQ_OK || alloc_scratch(L) != SQ_OK || alloc_batch_buffers(L) != SQ_OK) return SQ_FAIL;
    sq_qzo_config_defaults(&L->qc);
    L->qc.lr = t->opt.lr;
    L->qc.eps = t->opt.eps;
    L->qc.clip = t->opt.clip;
    L->qc.adaptive_clip = t->opt.adaptive_clip;
    L->qc.queries = t->opt.queries;
    L->qc.seed = t->opt.seed;
    L->qc.schedule = t->opt.lr_schedule;
    L->qc.warmup_steps = t->opt.warmup_steps;
    L->qc.total_steps = (int)t->opt.steps;
    L->qc.relative = t->opt.perturbation;
    L->qc.momentum = t->opt.momentum;
    L->qc.spike_factor = t->opt.spike_factor;
    L->qc.max_bad_steps = t->opt.max_bad_steps;
    if (isnan(t->opt.lr)) {   // --lr auto: calibrated around the default, or the resumed run's choice
        sq_qzo_config d;
        sq_qzo_config_defaults(&d);
        L->qc.lr = d.lr;
        L->lr_auto = true;
    }
    sq_qzo_state_init(&L->qs);
    // the EMA only where it is validated and saved: rank 0 (app/train.h)
    if (t->opt.ema > 0 && t->root && ema_init(L) != SQ_OK) return SQ_FAIL;
    if (t->opt.resume[0]) {
        sq_checkpoint_info info;
        if (sq_checkpoint_load(t->opt.resume, L->sl.named, L->sl.count, L->m.source_sha256, &info) != SQ_OK)
            return sq_error_context("--resume");
        free(info.loss_history);
        if (info.group_size != t->opt.group_size)
            return sq_errorf("--resume %s was trained at group size %d, not %d", t->opt.resume, info.group_size, t->opt.group_size);
        // what trained and the EMA: cmd_train.c checked them before the encode phase
        // (from the metadata alone); here again, on the checkpoint actually loaded
        if (sd_train_check_resume(&t->opt, &info) != SQ_OK) return SQ_FAIL;
        L->qs = info.state;
        // the EMA continues exactly where it was
        if (L->ema) {
            int n = L->tl.count, rc = SQ_OK;
            bool *got = calloc((size_t)n + 1, sizeof *got);
            sq_named_scales *into = calloc((size_t)n + 1, sizeof *into);   // named like the scales they average
            if (!got || !into) rc = sq_errorf("out of host memory");
            for (int i = 0; rc == SQ_OK && i < n; i++) into[i] = (sq_named_scales){L->tl.names[i], &L->ema[i]};
            if (rc == SQ_OK) rc = sq_checkpoint_load_ema(t->opt.resume, into, n, got);
            for (int i = 0; rc == SQ_OK && i < n; i++)
                if (!got[i]) rc = sq_errorf("%s: no EMA tensor '%s%s' for a trained layer", t->opt.resume,
                                            SQ_CHECKPOINT_EMA_PREFIX, L->tl.names[i]);
            free(got);
            free(into);
            if (rc != SQ_OK) return sq_error_context("--resume");
            L->ema_updates = info.ema_updates;
        }
        if (L->lr_auto) {
            L->qc.lr = info.config.lr;   // the rate --lr auto chose before the interruption
            L->lr_auto = false;
            L->lr_auto_resumed = true;
        }
        sq_log_info("resuming at step %lld from %s", (long long)L->qs.step, t->opt.resume);
    }
    if (!t->root) return SQ_OK;   // the log, TensorBoard, validation and previews are rank 0's
    if (sd_train_log_open(&L->log, t->opt.output, t->opt.resume[0] ? L->qs.step : -1) != SQ_OK) return SQ_FAIL;
    if (t->opt.tensorboard && L->qs.step < t->opt.steps &&
        sd_train_tb_open(&L->tb, t->opt.output, t->opt.resume[0] ? L->qs.step : -1, t->device == SQ_CUDA) != SQ_OK)
        return SQ_FAIL;
    return sd_train_eval_init(&L->eval, t, L->qs.step);
}

// A step record, to log.jsonl / log.csv and TensorBoard.
static int log_record(loop *L, const sd_step_record *r) {
    if (sd_train_log_append(&L->log, r) != SQ_OK) return SQ_FAIL;
    return sd_train_tb_record(&L->tb, r);
}

// The validation loss (when there is a validation set) and the diagnostics into r, timed.
static int validate(loop *L, sd_step_record *r, bool announce) {
    double t0 = sq_time_now();
    if (L->eval.n_val && sd_train_val_loss(&L->eval, &L->m, &L->scratch, &r->val_loss) != SQ_OK) return SQ_FAIL;
    // at step 0 the EMA is the scales (the caller copies the loss)
    if (L->ema && L->eval.n_val && r->step > 0 && val_loss_ema(L, &r->val_loss_ema) != SQ_OK) return SQ_FAIL;
    if (diagnose(L, r, announce) != SQ_OK) return SQ_FAIL;
    if (L->eval.n_val) sd_train_timing_add(&L->t->timing, SD_PHASE_VAL, sq_time_now() - t0);   // else it is "other"
    return SQ_OK;
}

// The previews of `step`, timed, and into TensorBoard.
static int previews(loop *L, int64_t step) {
    double t0 = sq_time_now();
    int before = L->eval.n_previews;
    if (sd_train_previews(&L->eval, &L->m, &L->scratch, step) != SQ_OK) return SQ_FAIL;
    if (L->eval.n_previews == before) return SQ_OK;   // no preview prompts
    sd_train_timing_add(&L->t->timing, SD_PHASE_PREVIEWS, sq_time_now() - t0);
    return sd_train_tb_preview(&L->tb, step, L->eval.previews[L->eval.n_previews - 1].png_path);
}

// The progress line's status: the step's numbers, then where its time went.
static void step_status(const loop *L, const sq_qzo_step_info *info, const sd_step_record *r, const double sec[4],
                        char *buf, size_t size) {
    static const char *names[4] = {"step", "val", "previews", "ckpt"};
    int n = snprintf(buf, size, "loss %.4f |d| %.3g", info->loss_mean, fabs(info->d_raw));
    if (!isnan(r->val_loss)) n += snprintf(buf + n, size - (size_t)n, " val %.4f", r->val_loss);
    if (!isnan(r->val_loss_ema)) n += snprintf(buf + n, size - (size_t)n, " ema %.4f", r->val_loss_ema);
    if (L->t->device == SQ_CUDA) n += snprintf(buf + n, size - (size_t)n, " mem %.1fG", r->gpu_mem_gib);
    double total = sec[0] + sec[1] + sec[2] + sec[3];
    n += snprintf(buf + n, size - (size_t)n, " | %.2fs", total);
    if (sec[1] > 0 || sec[2] > 0 || sec[3] > 0)
        for (int i = 0; i < 4 && (size_t)n < size; i++)
            if (sec[i] > 0) n += snprintf(buf + n, size - (size_t)n, "%s%s %.2fs", i ? ", " : " (", names[i], sec[i]);
    if ((size_t)n < size && (sec[1] > 0 || sec[2] > 0 || sec[3] > 0)) snprintf(buf + n, size - (size_t)n, ")");
}

// Test hook, read here only (README "Fault injection"): SD_QZO_FAULT=alloc@step:N makes
// step N fail as a device allocation does, to test the out-of-memory path on the CPU.
static bool fault_alloc_at(int64_t step) {
    const char *f = getenv("SD_QZO_FAULT");
    long long n;
    return f && sscanf(f, "alloc@step:%lld", &n) == 1 && n == step;
}

// An allocation failure (cudaErrorMemoryAllocation reads "out of memory", the arena
// and slab allocator say "out of GPU memory" / "out of host memory").
static bool is_out_of_memory(const char *msg) {
    return strstr(msg, "out of memory") || strstr(msg, "out of GPU memory") || strstr(msg, "out of host memory");
}

// Out of memory mid-run: the failed step changed no scale (they change only after its
// forward passes), so the last finished step is saved, and the message says how to
// need less memory.
static int out_of_memory(loop *L) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", sq_error_message());
    int64_t step = L->qs.step;
    if (save_checkpoint(L) != SQ_OK)
        return sq_error_context("out of memory at step %lld (%s), and the checkpoint could not be saved", (long long)step + 1, msg);
    return sq_errorf("out of memory at step %lld (%s); checkpoint saved at step %lld: continue with --resume "
                     "%s/checkpoint.safetensors and less memory: a smaller --batch-size or --resolution, or --low-vram",
                     (long long)step + 1, msg, (long long)step, L->t->opt.output);
}

int sd_train_loop(sd_trainer *t) {
    loop L = {.t = t, .cur_epoch = -1};
    int rc = setup(&L);
    int64_t steps = t->opt.steps;
    sq_progress pr;
    bool interrupted = false;
    bool root = t->root;
    bool val_on = t->opt.val_every > 0 && L.eval.n_val > 0, previews_on = t->opt.sample_every > 0 && t->n_prompts > 0;
    sd_train_schedule sched = {steps, val_on ? t->opt.val_every : 0, previews_on ? t->opt.sample_every : 0, t->opt.save_every};
    if (rc == SQ_OK && L.qs.step >= steps) sq_log_info("the checkpoint is already at step %lld of %lld", (long long)L.qs.step, (long long)steps);
    if (rc == SQ_OK) rc = check_scales_same(&L, L.qs.step);   // the same start (one checkpoint, one base)
    if (rc == SQ_OK && L.qs.step < steps) {
        if (L.lr_auto) rc = calibrate_lr(&L);
        // the "before" reference: validation loss, diagnostics and previews of the untrained scales
        sd_step_record r0 = sd_step_record_empty(0);
        if (rc == SQ_OK && root) rc = L.qs.step == 0 ? validate(&L, &r0, true) : diagnose(&L, &r0, true);
        if (rc == SQ_OK && root && L.qs.step == 0 && L.eval.n_val)
            sq_log_info("validation loss before training: %.6f (%d images x %d fixed timesteps)", r0.val_loss, L.eval.n_val,
                        SD_VAL_SIGMAS);
        if (rc == SQ_OK && root && L.qs.step == 0 && t->opt.sample_every > 0) rc = previews(&L, 0);
        if (rc == SQ_OK && root && L.qs.step == 0) {
            // step 0 of the log: the untrained model's validation loss and diagnostics, no training loss
            r0.gpu_mem_gib = device_used_gib(t);
            if (L.ema) r0.val_loss_ema = r0.val_loss;   // the EMA starts as a bit-exact copy of the scales
            rc = log_record(&L, &r0);
        }
        sq_progress_begin_at(&pr, "training", steps, L.qs.step);
        while (rc == SQ_OK && L.qs.step < steps) {
            double t0 = sq_time_now();
            double sec[4] = {0, 0, 0, 0};   // this step's time: the step, validation, previews, checkpoint
            sq_qzo_step_info info;
            if (fault_alloc_at(L.qs.step + 1))
                rc = sq_errorf("out of GPU memory (injected by SD_QZO_FAULT=alloc@step:%lld)", (long long)L.qs.step + 1);
            else
                rc = run_step(&L, &L.qc, &info);
            if (rc != SQ_OK) {
                if (is_out_of_memory(sq_error_message()) && root) rc = out_of_memory(&L);   // rank 0 writes OUT
                break;
            }
            int64_t done = L.qs.step;
            if (L.ema && !info.discarded) ema_update(&L);   // after each accepted step only
            sec[0] = sq_time_now() - t0;
            sd_train_timing_add(&t->timing, SD_PHASE_STEPS, sec[0]);
            t->timing.images += L.last_batch;
            if (info.discarded && root)
                sq_log_warn("step %lld discarded: %s; the previous step is undone and the learning rate halved (x%.3g of "
                            "--lr from now on)", (long long)done, info.why, (double)L.qs.lr_scale);
            sd_step_record r = sd_step_record_empty(done);
            r.loss = info.loss_mean;
            r.loss_plus = info.loss_plus;
            r.loss_minus = info.loss_minus;
            r.d_raw = info.d_raw;
            r.d_clipped = info.d_clipped;
            r.lr = info.lr;
            r.discarded = info.discarded ? 1 : 0;
            r.clipped_share = L.qs.queries_total ? (double)L.qs.clipped_total / (double)L.qs.queries_total : 0;
            bool stop = L.world > 1 ? L.stop_all : *t->stop != 0;   // the same step in every process
            bool save = done % t->opt.save_every == 0 || done == steps || stop;
            if ((save || done % SD_SCALE_CHECK_EVERY == 0) && (rc = check_scales_same(&L, done)) != SQ_OK) break;
            if (!root) {
                if (stop) { interrupted = true; break; }
                continue;
            }
            if (val_on && (done % t->opt.val_every == 0 || done == steps)) {
                double t1 = sq_time_now();
                if ((rc = validate(&L, &r, false)) != SQ_OK) break;
                sec[1] = sq_time_now() - t1;
            }
            r.seconds = sq_time_now() - t0;
            r.gpu_mem_gib = device_used_gib(t);
            if ((rc = log_record(&L, &r)) != SQ_OK) break;
            if (t->opt.sample_every > 0 && (done % t->opt.sample_every == 0 || done == steps) && !stop) {
                double t1 = sq_time_now();
                if ((rc = previews(&L, done)) != SQ_OK) break;
                sec[2] = sq_time_now() - t1;
            }
            if (save) {
                double t1 = sq_time_now();
                if ((rc = save_checkpoint(&L)) != SQ_OK || (rc = write_report(&L, NULL)) != SQ_OK) break;
                sec[3] = sq_time_now() - t1;
                sd_train_timing_add(&t->timing, SD_PHASE_CHECKPOINTS, sec[3]);
            }
            char status[192];
            step_status(&L, &info, &r, sec, status, sizeof status);
            sq_progress_set_eta(&pr, sd_train_timing_eta(&t->timing, &sched, done));
            sq_progress_update(&pr, done, status);
            if (stop) { interrupted = true; break; }
        }
        sq_progress_end(&pr);
        if (L.qs.bad_total > 0 && root)
            sq_log_warn("%lld of %lld steps were discarded (non-finite or spiking losses); the learning rate ended at "
                        "x%.3g of --lr", (long long)L.qs.bad_total, (long long)L.qs.step, (double)L.qs.lr_scale);
    }
    char timing[768];
    sd_train_timing_summary(&t->timing, L.qs.step, timing, sizeof timing);
    if (rc == SQ_OK && root) rc = write_report(&L, timing);
    if (rc == SQ_OK && !root && interrupted)
        rc = sq_errorf("interrupted: rank 0 saved the checkpoint at step %lld", (long long)L.qs.step);
    if (rc == SQ_OK && root) {
        char val[256];
        sd_train_val_summary(&L.log, val, sizeof val);
        sq_log_info("%s MMDiT scratch high-water %.3f GiB", val, gib(L.scratch.high_water));
        sq_log_info("%s", timing);
        if (interrupted)
            rc = sq_errorf("interrupted: checkpoint saved at step %lld; continue with --resume %s/checkpoint.safetensors",
                           (long long)L.qs.step, t->opt.output);
    }
    free_loop(&L);
    return rc;
}
