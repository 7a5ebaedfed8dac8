// app/train_log.h: the per-step record of a training run, kept in memory (for the
// report) and appended to OUT/log.jsonl and OUT/log.csv as each step finishes, so a
// crash loses at most the step in flight. Resuming at step k reloads the JSONL and
// drops records at or after k (they belong to steps that will run again), rewriting
// both files atomically. Unmeasured values (NaN) are JSON null and empty CSV cells.
#ifndef SD_TRAIN_LOG_H
#define SD_TRAIN_LOG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    int64_t step;         // steps completed (0: before training, validation only)
    double loss;          // mean over queries of (L+ + L-)/2
    double loss_plus, loss_minus;
    double d_raw, d_clipped;   // projected gradient (L+ - L-)/2ε, raw and clipped
    double lr;
    double seconds;       // wall time of the step
    double gpu_mem_gib;   // device memory in use (0 on the CPU)
    double val_loss;      // NAN when not measured at this step
    double discarded;     // 1: the optimiser threw the step away (non-finite loss or a spike), else 0
    double clipped_share; // queries whose d hit the clip, over all queries so far
    // measured with the validation loss (NAN otherwise; qzo/diagnostics.h):
    double zero_share;    // scales the projection holds at 0
    double rel_perturb[5];   // rms(perturbation)/rms(s) per layer type: attention q/k/v, attention out, MLP in,
                             // MLP out, adaLN (mmdit/quantize.h's order)
    double val_loss_ema;  // validation loss of the EMA of the scales (--ema; NAN when not measured)
} sd_step_record;

// A record with every measurement unset (NAN) at `step`.
sd_step_record sd_step_record_empty(int64_t step);

typedef struct {
    sd_step_record *rec;
    int count, cap;
    FILE *jsonl, *csv;
    char dir[1024];
} sd_train_log;

// Opens OUT/log.jsonl + OUT/log.csv. resume_step < 0: a fresh run (files replaced);
// otherwise the run continues after resume_step completed steps and the existing
// records with step <= resume_step are kept.
int sd_train_log_open(sd_train_log *log, const char *dir, int64_t resume_step);
int sd_train_log_append(sd_train_log *log, const sd_step_record *r);
void sd_train_log_close(sd_train_log *log);

#endif
