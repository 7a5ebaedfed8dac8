// app/train_loop.c: the MMDiT phase of a training run (see app/train.h). The
// transformer is int4 (quantised once into the cache folder, or an `sd-qzo quantize`
// file); every step loads its batch's latents and embeddings from the cache, draws
// the noise and σ of (seed, step), and hands the flow-matching loss to the QZO
// optimiser (app/train_step.c). Around the steps: the fixed-noise validation loss and
// preview images (app/train_eval.h), atomic checkpoints (also on Ctrl-C) and
// report.html (app/train_save.c), the step log (and TensorBoard with --tensorboard),
// and the time each phase takes (app/train_timing.h: the progress line's ETA and the
// closing summary); out of memory mid-run saves the last step (app/train_oom.c).
// --train-blocks / --train-layers freeze the layers they leave out
// (qzo/train_selection.h); --ema keeps an fp32 EMA of the trained scales
// (app/train_ema.c); --lr auto calibrates the rate first (app/train_lr_calibrate.c).
// With several processes (app/train.h) every one runs every step on its share
// (opt.split) and the step's losses are exchanged inside the step (app/train_ranks.c);
// rank 0 alone measures the validation loss, draws previews and writes OUT. Every
// SD_SCALE_CHECK_EVERY steps, at each checkpoint and at the end, the processes
// compare a hash of their scales: they must hold the same bits.
// The state these files share is app/train_loop_state.h's.
#include <math.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "app/train_loop_state.h"
#include "core/error.h"
#include "core/log.h"
#include "core/path.h"
#include "core/progress.h"
#include "core/safetensors.h"
#include "core/sha256.h"
#include "kernels/backend.h"
#include "mmdit/base_model.h"
#include "mmdit/quantize.h"
#include "mmdit/quantize_file.h"
#include "qzo/checkpoint.h"
#include "qzo/diagnostics.h"

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

// ---- what is measured around the steps ----

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

// ---- the run ----

static void free_loop(loop *L) {
    sd_train_free_start_scales(L);
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
    sd_train_ema_free(L);
    sd_scale_list_free(&L->tl);
    sd_scale_list_free(&L->sl);
    if (L->m.blocks) sd_mmdit_free(&L->m);
}

static int setup(loop *L) {
    sd_trainer *t = L->t;
    L->world = sq_dist_world(t->dist);
    L->rank = sq_dist_rank(t->dist);
    if (load_mmdit(L) != SQ_OK || alloc_scratch(L) != SQ_OK || sd_train_alloc_batch_buffers(L) != SQ_OK) return SQ_FAIL;
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
    if (t->opt.ema > 0 && t->root && sd_train_ema_init(L) != SQ_OK) return SQ_FAIL;
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
    if (L->ema && L->eval.n_val && r->step > 0 && sd_train_val_loss_ema(L, &r->val_loss_ema) != SQ_OK) return SQ_FAIL;
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
    if (rc == SQ_OK) rc = sd_train_check_scales_same(&L, L.qs.step);   // the same start (one checkpoint, one base)
    if (rc == SQ_OK && L.qs.step < steps) {
        if (L.lr_auto) rc = sd_train_calibrate_lr(&L);
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
            if (sd_train_fault_alloc_at(L.qs.step + 1))
                rc = sq_errorf("out of GPU memory (injected by SD_QZO_FAULT=alloc@step:%lld)", (long long)L.qs.step + 1);
            else
                rc = sd_train_run_step(&L, &L.qc, &info);
            if (rc != SQ_OK) {
                if (sd_train_is_out_of_memory(sq_error_message()) && root) rc = sd_train_out_of_memory(&L);   // rank 0 writes OUT
                break;
            }
            int64_t done = L.qs.step;
            if (L.ema && !info.discarded) sd_train_ema_update(&L);   // after each accepted step only
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
            if ((save || done % SD_SCALE_CHECK_EVERY == 0) && (rc = sd_train_check_scales_same(&L, done)) != SQ_OK) break;
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
                if ((rc = sd_train_save_checkpoint(&L)) != SQ_OK || (rc = sd_train_write_report(&L, NULL)) != SQ_OK) break;
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
    if (rc == SQ_OK && root) rc = sd_train_write_report(&L, timing);
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
