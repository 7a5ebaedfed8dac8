// app/train_timing.h: where a training run's wall time goes, by phase (encoding,
// the --lr auto calibration, the QZO steps, validation, previews, checkpoints with
// the report), for the progress line's ETA and the run's closing summary (printed,
// and in report.html). The ETA adds up what is left of each phase at its mean
// duration so far, so the validation and preview passes that come every N steps
// are in it from the first one on, rather than showing up as a slow step.
#ifndef SD_TRAIN_TIMING_H
#define SD_TRAIN_TIMING_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    SD_PHASE_ENCODE,       // VAE and text encoders into the cache
    SD_PHASE_LR_AUTO,      // --lr auto's candidate runs
    SD_PHASE_STEPS,        // QZO steps (batch loading and the forward passes)
    SD_PHASE_VAL,          // validation loss and scale diagnostics
    SD_PHASE_PREVIEWS,     // preview grids
    SD_PHASE_CHECKPOINTS,  // checkpoint and report.html
    SD_PHASE_COUNT
} sd_train_phase;

typedef struct {
    double t_start;                    // sq_time_now() when the run started
    double seconds[SD_PHASE_COUNT];
    int64_t count[SD_PHASE_COUNT];     // times the phase ran (steps, validations, ...)
    int64_t first_step;                // steps already done when this process started
    int64_t images;                    // images the counted steps trained on
} sd_train_timing;

// Starts the clock; first_step: a resumed run's completed steps.
void sd_train_timing_start(sd_train_timing *tm, int64_t first_step);
void sd_train_timing_add(sd_train_timing *tm, sd_train_phase ph, double seconds);

// How often the periodic phases come: every N steps (0: never) and at the last step.
typedef struct {
    int64_t steps;                     // the run's total
    int64_t val_every, sample_every, save_every;
} sd_train_schedule;

// Times a phase runs after `done` steps: at every multiple of `every` in
// (done, steps], and at step `steps` when it is not one.
int64_t sd_train_events_left(int64_t done, int64_t steps, int64_t every);
// Seconds left after `done` steps: each phase's remaining count times its mean
// duration so far (a phase not measured yet counts 0). NAN before the first step.
double sd_train_timing_eta(const sd_train_timing *tm, const sd_train_schedule *s, int64_t done);
// One paragraph: steps done (from, to) in the total time, images seen, steps/s,
// and each phase that ran: its seconds, its count and share; "other" (loading
// models, logs) is what the phases leave of the total.
void sd_train_timing_summary(const sd_train_timing *tm, int64_t done, char *buf, size_t size);

#endif
