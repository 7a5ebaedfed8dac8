// app/train_loop_state.h: the MMDiT phase's state and what its files share;
// internal to the train loop's files, not an API (the rest of app/ calls
// sd_train_loop, app/train.h):
//   app/train_loop.c         the int4 MMDiT, setup, the step loop and what it measures
//   app/train_step.c         one QZO step: its batch from the cache, the flow loss
//   app/train_ranks.c        several processes: the step's losses, the scales' hash
//   app/train_ema.c          --ema: the EMA of the trained scales
//   app/train_lr_calibrate.c --lr auto: the loop's side of app/train_lr_auto.h
//   app/train_save.c         checkpoint.safetensors and report.html
//   app/train_oom.c          out of memory mid-run, and its test hook
#ifndef SD_TRAIN_LOOP_STATE_H
#define SD_TRAIN_LOOP_STATE_H

#include <stdbool.h>
#include <stdint.h>

#include "app/train.h"
#include "app/train_eval.h"
#include "app/train_lr_auto.h"
#include "app/train_tensorboard.h"
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

// ---- app/train_step.c ----

// The batch buffers (device and host), sized for the largest bucket.
int sd_train_alloc_batch_buffers(loop *L);
// The step after L->qs.step, at qc: this process's share of its batch, the QZO
// step, the losses combined across the processes.
int sd_train_run_step(loop *L, const sq_qzo_config *qc, sq_qzo_step_info *info);

// ---- app/train_ranks.c ----

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

// sq_qzo_combine_fn over a combine_ctx.
int sd_train_combine_losses(void *ctx, int64_t step, double *lp, double *lm, int queries);
// Fails, naming the ranks, when the processes' scales differ after `step`.
int sd_train_check_scales_same(loop *L, int64_t step);

// ---- app/train_ema.c ----

int sd_train_ema_init(loop *L);
void sd_train_ema_free(loop *L);
void sd_train_ema_update(loop *L);   // after an accepted step
// The validation loss of the EMA in place of the scales.
int sd_train_val_loss_ema(loop *L, double *out);

// ---- app/train_lr_calibrate.c ----

// --lr auto before the first step: sets L->qc.lr, writes OUT/lr_auto.json.
int sd_train_calibrate_lr(loop *L);
void sd_train_free_start_scales(loop *L);

// ---- app/train_save.c ----

int sd_train_save_checkpoint(loop *L);
int sd_train_write_report(loop *L, const char *timing);

// ---- app/train_oom.c ----

bool sd_train_fault_alloc_at(int64_t step);
bool sd_train_is_out_of_memory(const char *msg);
int sd_train_out_of_memory(loop *L);

#endif
