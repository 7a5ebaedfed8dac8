// app/train_lr_calibrate.c: --lr auto before the first step: the training loop's
// side of app/train_lr_auto.h (keeping and restoring the starting scales, short runs
// at a candidate rate, the validation loss), and the chosen rate into the run
// (app/train_loop_state.h).
#include <stdlib.h>

#include "app/train_loop_state.h"
#include "core/error.h"
#include "core/log.h"
#include "core/progress.h"

void sd_train_free_start_scales(loop *L) {
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
        if (sd_train_run_step(L, &qc, &info) != SQ_OK) {
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

int sd_train_calibrate_lr(loop *L) {
    sd_lr_auto_ops ops = {L, lr_auto_save_start, lr_auto_restore_start, lr_auto_run, lr_auto_val};
    sq_log_info("--lr auto: %d candidate rates around %.3g, %d steps each, scored on the validation images",
                SD_LR_AUTO_CANDIDATES, (double)L->qc.lr, L->t->opt.lr_auto_steps);
    double t0 = sq_time_now();
    int rc = sd_lr_auto(&ops, L->qc.lr, L->t->opt.lr_auto_steps, &L->lr_auto_result);
    sd_train_timing_add(&L->t->timing, SD_PHASE_LR_AUTO, sq_time_now() - t0);
    sd_train_free_start_scales(L);
    if (rc != SQ_OK) return SQ_FAIL;
    L->lr_auto_valid = true;
    L->qc.lr = L->lr_auto_result.lr[L->lr_auto_result.best];
    return sd_lr_auto_write(L->t->opt.output, &L->lr_auto_result);
}
