// app/train_save.c: what the MMDiT phase writes at each save: the scales checkpoint
// with the optimiser state (and the EMA) through qzo/checkpoint.h, and report.html
// through app/train_report.h (app/train_loop_state.h).
#include <stdio.h>
#include <stdlib.h>

#include "app/train_loop_state.h"
#include "core/error.h"
#include "core/log.h"

int sd_train_save_checkpoint(loop *L) {
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
int sd_train_write_report(loop *L, const char *timing) {
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
