// app/train_lr_auto.h: `--lr auto`, the learning-rate calibration before a run.
// QZO steps are cheap, so instead of a guessed rate the run first tries
// SD_LR_AUTO_CANDIDATES rates spaced by half decades around the default (x0.1 ..
// x10), each for the same `steps` QZO steps from the same start (same batches, same
// perturbations), and scores each by the fixed-noise validation loss on the held-out
// images (measured SD_LR_AUTO_POINTS times along the way: the curves of the report).
// The run then starts again from the untouched scales with the best rate. A
// candidate that the optimiser stops (repeated spikes) scores +inf.
#ifndef SD_TRAIN_LR_AUTO_H
#define SD_TRAIN_LR_AUTO_H

#include <stdbool.h>
#include <stdint.h>

#define SD_LR_AUTO_CANDIDATES 5
#define SD_LR_AUTO_POINTS 4

typedef struct {
    float lr[SD_LR_AUTO_CANDIDATES];
    double val[SD_LR_AUTO_CANDIDATES][SD_LR_AUTO_POINTS + 1];   // [0]: before; then after each quarter
    int64_t at_step[SD_LR_AUTO_POINTS + 1];
    int best;                    // index of the chosen rate (-1: none ran)
    double seconds;
} sd_lr_auto_result;

// What the calibration needs from the training loop.
typedef struct {
    void *ctx;
    int (*save_start)(void *ctx);                  // remember the scales before the first candidate
    int (*restore_start)(void *ctx);               // scales back to the start, optimiser state fresh
    // runs steps [from, to) at learning rate lr; *stopped is set when the optimiser
    // gave up (the error is then cleared), any other failure is returned
    int (*run)(void *ctx, float lr, int64_t from, int64_t to, bool *stopped);
    int (*val_loss)(void *ctx, double *out);
} sd_lr_auto_ops;

int sd_lr_auto(const sd_lr_auto_ops *ops, float center, int steps, sd_lr_auto_result *res);
// Writes the result to OUT/lr_auto.json (atomically, replacing an earlier one).
int sd_lr_auto_write(const char *dir, const sd_lr_auto_result *res);
// Reads OUT/lr_auto.json back (a resumed run's report: the calibration ran in an
// earlier process). Unmeasured losses (null: the candidate was stopped) read as
// +inf, as sd_lr_auto leaves them; best is the candidate whose rate is chosen_lr.
// Fails (with a message) when the file is absent or not what sd_lr_auto_write writes.
int sd_lr_auto_read(const char *dir, sd_lr_auto_result *res);

#endif
