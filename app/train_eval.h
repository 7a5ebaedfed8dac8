// app/train_eval.h: what a training run looks at besides its steps, called by the
// loop (app/train_loop.c): the validation loss (every validation image at
// SD_VAL_SIGMAS fixed σ with fixed noise, drawn once from the seed, on the
// unperturbed model, so losses across the run are comparable) and preview images
// (the preview prompts sampled with the current scales, one PNG grid per step under
// OUT/previews, listed for the report). Everything it reads comes from the run's
// cache (the encode phase wrote it); the MMDiT and its scratch arena are the loop's.
#ifndef SD_TRAIN_EVAL_H
#define SD_TRAIN_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "app/train.h"

struct sd_val_item;

typedef struct {
    sd_trainer *t;
    struct sd_val_item *val;     // NULL without --val-images
    int n_val;
    // previews: the prompts' embeddings (n_prompts rows) and the empty prompt's
    sq_tensor prompt_ctx, prompt_pooled, uncond_ctx, uncond_pooled;
    sd_vae vae;                  // loaded at the first preview
    bool vae_loaded;
    sd_report_preview *previews; // the grids written so far (and a resumed run's earlier ones)
    int n_previews;
} sd_train_eval;

// Loads the validation set and the preview prompts' embeddings from the cache, and
// lists the previews of steps before first_step (a resumed run's) still on disk.
// On failure the caller still calls sd_train_eval_free.
int sd_train_eval_init(sd_train_eval *e, sd_trainer *t, int64_t first_step);
void sd_train_eval_free(sd_train_eval *e);
// Mean validation loss of the model as it is (no perturbation).
int sd_train_val_loss(sd_train_eval *e, const sd_mmdit *m, sq_arena *scratch, double *out);
// Samples every preview prompt at `step` and writes OUT/previews/step_NNNNNN.png.
int sd_train_previews(sd_train_eval *e, const sd_mmdit *m, sq_arena *scratch, int64_t step);
// "Validation loss A at step 0, B at step N (-x%)." from the log, or a note that
// there is no validation set.
void sd_train_val_summary(const sd_train_log *log, char *buf, size_t size);

#endif
