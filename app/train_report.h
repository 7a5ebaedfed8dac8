// app/train_report.h: OUT/report.html, one self-contained page (inline SVG charts,
// previews embedded as base64 PNG data, no external assets) that shows a run: the
// settings, the training loss (raw and smoothed), the fixed-noise validation loss
// (and that of the EMA of the scales with --ema), which blocks and layer types
// trained, the projected-gradient magnitude and learning rate per step, the diagnostics
// (relative perturbation per layer type, share of scales held at 0, share of
// clipped queries, the steps the optimiser discarded), the --lr auto calibration
// (each candidate's validation-loss curve and a table) when there was one, and the
// preview grid of every checkpoint; and where the run's time went. Rewritten
// atomically at each checkpoint and at the end, so it is always openable while a
// run is going.
#ifndef SD_TRAIN_REPORT_H
#define SD_TRAIN_REPORT_H

#include <stdint.h>

#include "app/train_log.h"
#include "app/train_lr_auto.h"

typedef struct {
    int64_t step;          // 0 = before training
    char png_path[1200];   // preview grid of that step
} sd_report_preview;

typedef struct {
    const char *title;           // e.g. the output folder name
    const char *settings_json;   // sd_train_options_json
    const char *summary;         // one paragraph of plain text (may be NULL)
    const char *training;        // what trained and the EMA, one paragraph (may be NULL)
    const sd_train_log *log;
    const sd_report_preview *previews;
    int n_previews;
    const sd_lr_auto_result *lr_auto;   // --lr auto's calibration (NULL: none, no section)
    const char *timing;          // where the time went (app/train_timing.h; NULL: none)
} sd_report;

int sd_train_report_write(const char *path, const sd_report *r);

#endif
