// app/train_tensorboard.h: `train --tensorboard`: every step record of the log
// (app/train_log.h) as TensorBoard scalars and every preview grid as an image, in
// an event file of OUT (core/tensorboard.h), so `tensorboard --logdir OUT` shows the
// run as it goes. Tags: train/loss, train/loss_plus, train/loss_minus, train/d,
// train/d_clipped, train/lr, train/clipped_share, train/discarded, val/loss,
// val/loss_ema (--ema), train/zero_share, train/perturbation_rel/<layer type>, time/step_seconds,
// gpu/memory_gib (CUDA only), and the image "previews". Unmeasured values (NaN) are
// left out. A fresh run removes the event files of the run it replaces; a resumed
// run adds a file of its own that starts with a SessionLog START at its first step,
// which makes TensorBoard drop what the interrupted run logged past its checkpoint.
#ifndef SD_TRAIN_TENSORBOARD_H
#define SD_TRAIN_TENSORBOARD_H

#include <stdbool.h>
#include <stdint.h>

#include "app/train_log.h"
#include "core/tensorboard.h"

typedef struct {
    sq_tb_writer w;
    bool open;
    bool gpu;              // log gpu/memory_gib
} sd_train_tb;

// resume_step < 0: a fresh run; else the steps the resumed checkpoint completed.
int sd_train_tb_open(sd_train_tb *tb, const char *dir, int64_t resume_step, bool gpu);
// No-ops when not open.
int sd_train_tb_record(sd_train_tb *tb, const sd_step_record *r);
// The PNG at png_path (a preview grid), as the image of `step`.
int sd_train_tb_preview(sd_train_tb *tb, int64_t step, const char *png_path);
void sd_train_tb_close(sd_train_tb *tb);

#endif
