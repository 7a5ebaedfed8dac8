// app/train_loop.c: the MMDiT phase of a training run (see app/train.h). The
// transformer is int4 (quantised once into the cache folder, or an `sd-qzo quantize`
// file); every step loads its batch's latents and embeddings from the cache, draws
// the noise and σ of (seed, step), and hands the flow-matching loss to the QZO
// optimiser. Around the steps: the fixed-noise validation loss and preview images
// (app/train_eval.h), atomic checkpoints (also on Ctrl-C), the step log and
// report.html.
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
#include "qzo/trained_scales.h"

typedef struct {
    sd_trainer *t;
    sd_mmdit m;
    sq_arena scratch;
    sd_scale_list sl;            // the trained scales, as checkpoints name them
    sq_qzo_config qc;
    sq_qzo_state qs;
    // batch buffers, sized for the largest bucket
    sq_tensor x0_buf, ctx_buf, pooled_buf, noise_buf;
    float *noise_host;
    int cur_epoch;
    sd_epoch_plan plan;
    sd_train_eval eval;          // validation loss and previews
    sd_train_log log;
    bool lr_auto;                // --lr auto: calibrate before the first step
    sd_lr_auto_result lr_auto_result;
    bool lr_auto_valid;          // lr_auto_result holds the calibration (ran here, or read back for the report)
    bool lr_auto_resumed;        // a resumed --lr auto run: its calibration is in OUT/lr_auto.json
    float **start_scales;        // --lr auto: the scales before the first candidate (host)
} loop;

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
    if (sd_quantize_checkpoint(t->opt.model, out, t->opt.group_size, false) != SQ_OK) return sq_error_context("quantising --model");
    return SQ_OK;
}

static int load_mmdit(loop *L) {
    sd_trainer *t = L->t;
    char qpath[1200];
    if (t->synthetic) {
        if (sd_train_load_mmdit(t, &L->m) != SQ_OK) return SQ_FAIL;
        snprintf(qpath, sizeof qpath, "%s", t->opt.model);
    } else if (int4_path(t, qpath, sizeof qpath) != SQ_OK) {
        return SQ_FAIL;
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
    return SQ_OK;
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
    sq_log_info("MMDiT: %d int4 layers (group %d); weights on %s, scratch %.2f GiB%s", L->sl.count, t->opt.group_size,
                t->device == SQ_CUDA ? "the GPU" : "the CPU", gib(need), mem);
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
    L->cur_epoch = -1;
    return SQ_OK;
}

typedef struct {
    sq_tensor x0, noise, ctx, pooled;
    float sigma[64];
    int B;
} batch;

static int build_batch(loop *L, int64_t step, batch *bt) {
    sd_trainer *t = L->t;
    int epoch, bi;
    sd_train_step_batch(t, step, &epoch, &bi);
    if (epoch != L->cur_epoch) {
        if (L->cur_epoch >= 0) sd_epoch_plan_free(&L->plan);
        L->cur_epoch = -1;
        if (sd_dataset_epoch(t->data, epoch, &L->plan) != SQ_OK) return SQ_FAIL;
        L->cur_epoch = epoch;
    }
    const sd_batch *b = &L->plan.batches[bi];
    int B = b->count, C = t->latent_channels, f = t->vae_factor;
    if (B > 64) return sq_errorf("--batch-size above 64 is not supported");
    int64_t per = 0, h = 0, w = 0;
    for (int j = 0; j < B; j++) {
        sd_cache_key kl, kt;
        int iw, ih;
        if (sd_train_item_keys(t, t->data, b->items[j], epoch, &kl, &kt, &iw, &ih) != SQ_OK) return SQ_FAIL;
        h = ih / f;
        w = iw / f;
        per = C * h * w;
        sq_tensor lat = sd_train_slice(&L->x0_buf, j * per, 4, SQ_SHAPE(1, C, h, w));
        sq_tensor ctx = sd_train_slice(&L->ctx_buf, (int64_t)j * t->ctx_tokens * t->ctx_dim, 3, SQ_SHAPE(1, t->ctx_tokens, t->ctx_dim));
        sq_tensor pooled = sd_train_slice(&L->pooled_buf, (int64_t)j * t->pooled_dim, 2, SQ_SHAPE(1, t->pooled_dim));
        const char *path = sd_dataset_entry(t->data, b->items[j])->path;
        sd_cache_item li = {"latent", &lat};
        sd_cache_item ti[2] = {{"context", &ctx}, {"pooled", &pooled}};
        if (sd_train_load_cached(t, &kl, &li, 1, path) != SQ_OK || sd_train_load_cached(t, &kt, ti, 2, path) != SQ_OK)
            return SQ_FAIL;
        uint64_t key_noise = sq_rng_stream_key(t->opt.seed, SQ_RNG_STREAM_NOISE), key_sigma = sq_rng_stream_key(t->opt.seed, SQ_RNG_STREAM_SIGMA);
        sd_draw_noise(L->noise_host + j * per, per, key_noise, (uint64_t)step, j);
        bt->sigma[j] = sd_draw_sigma(&t->sigma, key_sigma, (uint64_t)step, j);
    }
    bt->B = B;
    bt->x0 = sd_train_slice(&L->x0_buf, 0, 4, SQ_SHAPE(B, C, h, w));
    bt->noise = sd_train_slice(&L->noise_buf, 0, 4, SQ_SHAPE(B, C, h, w));
    bt->ctx = sd_train_slice(&L->ctx_buf, 0, 3, SQ_SHAPE(B, t->ctx_tokens, t->ctx_dim));
    bt->pooled = sd_train_slice(&L->pooled_buf, 0, 2, SQ_SHAPE(B, t->pooled_dim));
    return sq_tensor_from_host_f32(&bt->noise, L->noise_host);
}

// ---- checkpoint and report ----

static int save_checkpoint(loop *L) {
    sd_trainer *t = L->t;
    sq_checkpoint_info info = {.group_size = L->m.cfg.num_layers ? t->opt.group_size : 0, .config = L->qc, .state = L->qs};
    snprintf(info.base_sha256, sizeof info.base_sha256, "%s", L->m.source_sha256);
    info.loss_history = malloc(((size_t)L->log.count + 1) * sizeof(double));
    if (!info.loss_history) return sq_errorf("out of host memory");
    for (int i = 0; i < L->log.count; i++)
        if (L->log.rec[i].step > 0) info.loss_history[info.loss_count++] = L->log.rec[i].loss;
    char path[1100];
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", t->opt.output);
    int rc = sq_checkpoint_save(path, L->sl.named, L->sl.count, &info);
    free(info.loss_history);
    if (rc != SQ_OK)  // the write is atomic (temporary file, then rename): the old file stands
        return sq_error_context("saving the checkpoint of step %lld to %s (the previous one is kept)", (long long)L->qs.step,
                                path);
    return rc;
}

static int write_report(loop *L) {
    sd_trainer *t = L->t;
    char path[1100], summary[512], val[256];
    snprintf(path, sizeof path, "%s/report.html", t->opt.output);
    sd_train_val_summary(&L->log, val, sizeof val);
    snprintf(summary, sizeof summary, "%s %lld steps done.", val, L->log.count > 0 ? (long long)L->log.rec[L->log.count - 1].step : 0LL);
    char *settings = sd_train_options_json(&t->opt);
    if (!L->lr_auto_valid && L->lr_auto_resumed) {   // once: the calibration of the interrupted run
        L->lr_auto_resumed = false;
        if (sd_lr_auto_read(t->opt.output, &L->lr_auto_result) == SQ_OK) L->lr_auto_valid = true;
        else {
            sq_log_warn("the report leaves out the --lr auto calibration: %s", sq_error_message());
            sq_error_clear();
        }
    }
    sd_report r = {.title = t->opt.output, .settings_json = settings ? settings : "{}", .summary = summary, .log = &L->log,
                   .previews = L->eval.previews, .n_previews = L->eval.n_previews,
                   .lr_auto = L->lr_auto_valid ? &L->lr_auto_result : NULL};
    int rc = sd_train_report_write(path, &r);
    free(settings);
    return rc;
}

// ---- one step, and what is measured around it ----

static int run_step(loop *L, const sq_qzo_config *qc, sq_qzo_step_info *info) {
    batch bt;
    sd_flow_batch fb;
    sq_qzo_params params = {L->sl.scales, L->sl.index_base, L->sl.count};
    int64_t step = L->qs.step;
    if (build_batch(L, step, &bt) != SQ_OK) return SQ_FAIL;
    if (sd_flow_batch_init(&fb, &L->m, &L->scratch, &bt.x0, &bt.noise, bt.sigma, &bt.ctx, &bt.pooled) != SQ_OK)
        return SQ_FAIL;
    int rc = sq_qzo_step(qc, &L->qs, &params, sd_flow_loss, &fb, info);
    sd_flow_batch_free(&fb);
    if (rc != SQ_OK) return sq_error_context("step %lld", (long long)step);
    sq_device_synchronize(L->t->device);
    return SQ_OK;
}

// The scale diagnostics into r; `announce`: also one log line per layer type and
// the warning when the perturbation is far from small.
static int diagnose(loop *L, sd_step_record *r, bool announce) {
    sd_qzo_diagnostics d;
    if (sd_qzo_diagnose(&L->sl, &L->qc, &d) != SQ_OK) return SQ_FAIL;
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
    int rc = sd_lr_auto(&ops, L->qc.lr, L->t->opt.lr_auto_steps, &L->lr_auto_result);
    free_start_scales(L);
    if (rc != SQ_OK) return SQ_FAIL;
    L->lr_auto_valid = true;
    L->qc.lr = L->lr_auto_result.lr[L->lr_auto_result.best];
    return sd_lr_auto_write(L->t->opt.output, &L->lr_auto_result);
}

// ---- the run ----

static void free_loop(loop *L) {
    free_start_scales(L);
    sd_train_log_close(&L->log);
    sd_train_eval_free(&L->eval);
    if (L->cur_epoch >= 0) sd_epoch_plan_free(&L->plan);
    sq_tensor_free(&L->x0_buf);
    sq_tensor_free(&L->noise_buf);
    sq_tensor_free(&L->ctx_buf);
    sq_tensor_free(&L->pooled_buf);
    free(L->noise_host);
    sq_arena_free(&L->scratch);
    sd_scale_list_free(&L->sl);
    if (L->m.blocks) sd_mmdit_free(&L->m);
}

static int setup(loop *L) {
    sd_trainer *t = L->t;
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
    if (t->opt.resume[0]) {
        sq_checkpoint_info info;
        if (sq_checkpoint_load(t->opt.resume, L->sl.named, L->sl.count, L->m.source_sha256, &info) != SQ_OK)
            return sq_error_context("--resume");
        free(info.loss_history);
        if (info.group_size != t->opt.group_size)
            return sq_errorf("--resume %s was trained at group size %d, not %d", t->opt.resume, info.group_size, t->opt.group_size);
        L->qs = info.state;
        if (L->lr_auto) {
            L->qc.lr = info.config.lr;   // the rate --lr auto chose before the interruption
            L->lr_auto = false;
            L->lr_auto_resumed = true;
        }
        sq_log_info("resuming at step %lld from %s", (long long)L->qs.step, t->opt.resume);
    }
    if (sd_train_log_open(&L->log, t->opt.output, t->opt.resume[0] ? L->qs.step : -1) != SQ_OK) return SQ_FAIL;
    return sd_train_eval_init(&L->eval, t, L->qs.step);
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
    if (rc == SQ_OK && L.qs.step >= steps) sq_log_info("the checkpoint is already at step %lld of %lld", (long long)L.qs.step, (long long)steps);
    if (rc == SQ_OK && L.qs.step < steps) {
        if (L.lr_auto) rc = calibrate_lr(&L);
        // the "before" reference: validation loss, diagnostics and previews of the untrained scales
        double v0 = NAN;
        if (rc == SQ_OK && L.qs.step == 0 && L.eval.n_val) {
            rc = sd_train_val_loss(&L.eval, &L.m, &L.scratch, &v0);
            if (rc == SQ_OK)
                sq_log_info("validation loss before training: %.6f (%d images x %d fixed timesteps)", v0, L.eval.n_val,
                            SD_VAL_SIGMAS);
        }
        sd_step_record r0 = sd_step_record_empty(0);
        if (rc == SQ_OK) rc = diagnose(&L, &r0, true);
        if (rc == SQ_OK && L.qs.step == 0 && t->opt.sample_every > 0) rc = sd_train_previews(&L.eval, &L.m, &L.scratch, 0);
        if (rc == SQ_OK && L.qs.step == 0) {
            // step 0 of the log: the untrained model's validation loss and diagnostics, no training loss
            r0.gpu_mem_gib = device_used_gib(t);
            r0.val_loss = v0;
            rc = sd_train_log_append(&L.log, &r0);
        }
        sq_progress_begin(&pr, "training", steps);
        sq_progress_update(&pr, L.qs.step, NULL);
        while (rc == SQ_OK && L.qs.step < steps) {
            double t0 = sq_time_now();
            sq_qzo_step_info info;
            if (fault_alloc_at(L.qs.step + 1))
                rc = sq_errorf("out of GPU memory (injected by SD_QZO_FAULT=alloc@step:%lld)", (long long)L.qs.step + 1);
            else
                rc = run_step(&L, &L.qc, &info);
            if (rc != SQ_OK) {
                if (is_out_of_memory(sq_error_message())) rc = out_of_memory(&L);
                break;
            }
            int64_t done = L.qs.step;
            if (info.discarded)
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
            if (t->opt.val_every > 0 && L.eval.n_val && (done % t->opt.val_every == 0 || done == steps)) {
                if ((rc = sd_train_val_loss(&L.eval, &L.m, &L.scratch, &r.val_loss)) != SQ_OK) break;
                if ((rc = diagnose(&L, &r, false)) != SQ_OK) break;
            }
            r.seconds = sq_time_now() - t0;
            r.gpu_mem_gib = device_used_gib(t);
            if ((rc = sd_train_log_append(&L.log, &r)) != SQ_OK) break;
            char extra[96];
            int n = snprintf(extra, sizeof extra, "loss %.4f |d| %.3g", info.loss_mean, fabs(info.d_raw));
            if (!isnan(r.val_loss)) n += snprintf(extra + n, sizeof extra - (size_t)n, " val %.4f", r.val_loss);
            if (t->device == SQ_CUDA) snprintf(extra + n, sizeof extra - (size_t)n, " mem %.1fG", r.gpu_mem_gib);
            sq_progress_update(&pr, done, extra);
            bool stop = *t->stop != 0;
            if (t->opt.sample_every > 0 && (done % t->opt.sample_every == 0 || done == steps) && !stop)
                if ((rc = sd_train_previews(&L.eval, &L.m, &L.scratch, done)) != SQ_OK) break;
            if (done % t->opt.save_every == 0 || done == steps || stop) {
                if ((rc = save_checkpoint(&L)) != SQ_OK || (rc = write_report(&L)) != SQ_OK) break;
            }
            if (stop) { interrupted = true; break; }
        }
        sq_progress_end(&pr);
        if (L.qs.bad_total > 0)
            sq_log_warn("%lld of %lld steps were discarded (non-finite or spiking losses); the learning rate ended at "
                        "x%.3g of --lr", (long long)L.qs.bad_total, (long long)L.qs.step, (double)L.qs.lr_scale);
    }
    if (rc == SQ_OK) rc = write_report(&L);
    if (rc == SQ_OK) {
        char val[256];
        sd_train_val_summary(&L.log, val, sizeof val);
        sq_log_info("%s MMDiT scratch high-water %.3f GiB", val, gib(L.scratch.high_water));
        if (interrupted)
            rc = sq_errorf("interrupted: checkpoint saved at step %lld; continue with --resume %s/checkpoint.safetensors",
                           (long long)L.qs.step, t->opt.output);
    }
    free_loop(&L);
    return rc;
}
