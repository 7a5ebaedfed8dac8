// app/train.h: the state of one `sd-qzo train` run, shared by its phases:
//   app/cmd_train.c     options, the output folder, orchestration, Ctrl-C
//   app/train_encode.c  frozen encoders once per dataset: every latent and text
//                       embedding the run will need goes into the on-disk cache
//                       (datasets/cache.h), then the encoders are freed
//   app/train_loop.c    the MMDiT in int4, QZO steps on cached batches,
//                       checkpoints, log and report (with the files of
//                       app/train_loop_state.h)
//   app/train_eval.c    the validation loss and previews the loop asks for
// Every random choice is a function of (seed, step): the data order and captions
// (datasets/), the noise and σ (qzo/noise.h), the perturbations (kernels/rng.h).
#ifndef SD_TRAIN_H
#define SD_TRAIN_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "app/train_log.h"
#include "app/train_options.h"
#include "app/train_report.h"
#include "app/train_timing.h"
#include "core/arena.h"
#include "datasets/dataset.h"
#include "distributed/exchange.h"
#include "mmdit/model.h"
#include "qzo/checkpoint.h"
#include "qzo/noise.h"
#include "qzo/qzo.h"
#include "samples/scheduler.h"
#include "text_encoders/conditioning.h"
#include "vae/model.h"

// Fixed σ draws per validation image: several timesteps per image make the
// validation loss far less noisy than one, and they never change during a run.
#define SD_VAL_SIGMAS 4

typedef struct {
    sd_train_options opt;
    sq_device device;
    sq_dtype dtype;              // F32 on the CPU, BF16 on CUDA
    char components[1024];       // pipeline folder holding vae/, text encoders, scheduler/
    bool synthetic;              // --model synthetic:PRESET: random weights at SD3.5's shapes
    sd_mmdit_preset preset;
    char cache_dir[1100];
    bool temp_cache;             // --no-cache: the cache lives in OUT and is removed at the end
    sd_flow_scheduler scheduler;
    sd_sigma_config sigma;

    sd_dataset *data, *val;      // val NULL without --val-images
    int batches_per_epoch;
    sd_cache *cache;
    char vae_hash[65], text_hash[65];

    // what the encoders produce, known once they have been loaded or read from the cache
    int latent_channels, vae_factor;
    int ctx_tokens, ctx_dim, pooled_dim;

    char **prompts;              // preview prompts (the empty prompt is the uncond branch)
    int n_prompts;

    volatile sig_atomic_t *stop; // set by SIGINT/SIGTERM: finish the step, save, exit
    sd_train_timing timing;      // wall time by phase, from the start of the encode phase

    // Several processes (distributed/exchange.h; one process: world size 1). Every process
    // encodes its share of the cache and runs every step on its share of the queries
    // or of the batch (opt.split); rank 0 alone writes OUT (run.json, log, previews,
    // checkpoints, report) and holds its lock; the others write only cache entries.
    sq_dist *dist;
    bool root;                   // rank 0
} sd_trainer;

// How long the processes wait for each other at the end of a phase whose length
// differs between them (setting up, encoding, rank 0 quantising --model or writing
// the last report): a dead process is still seen at once; --rank-timeout bounds
// the steps.
#define SD_PHASE_TIMEOUT_S (6 * 3600.0)

// A share of n items for rank r of w: [*lo, *hi), balanced, in rank order.
void sd_train_share(int n, int r, int w, int *lo, int *hi);

// The cache keys of one dataset item in one epoch (latent, text).
int sd_train_item_keys(sd_trainer *t, sd_dataset *ds, int index, int epoch, sd_cache_key *latent,
                       sd_cache_key *text, int *w, int *h);
// The cache key of a training item's loss mask at latent resolution; *masked = false
// (and key untouched) when the item has none (weight 1). Needs t->vae_factor.
int sd_train_mask_key(sd_trainer *t, sd_dataset *ds, int index, int epoch, sd_cache_key *key, bool *masked);
// Epoch and batch of a step (one batch per step, epochs back to back).
void sd_train_step_batch(const sd_trainer *t, int64_t step, int *epoch, int *batch);

// Runs the VAE and the text encoders over everything steps [first_step, steps) and
// the validation set and previews need that is not cached yet; frees them after.
int sd_train_encode(sd_trainer *t, int64_t first_step);
// Cache key of a prompt's embedding (text encoders' hash + text).
void sd_train_text_key(const sd_trainer *t, const char *prompt, sd_cache_key *key);
// Loads cache entries the encode phase wrote (`what` names the item in the error);
// a miss is an error: everything the run reads was encoded before the MMDiT phase.
int sd_train_load_cached(const sd_trainer *t, const sd_cache_key *key, const sd_cache_item *items, int n, const char *what);
// The view of buf from element offset_elems on, with the given shape (a batch row).
sq_tensor sd_train_slice(const sq_tensor *buf, int64_t offset_elems, int ndim, const int64_t *shape);

// Frozen and trained models, from the pipeline folder or synthetic (app/train_models.c).
int sd_train_parse_synthetic(const char *model, bool *synthetic, sd_mmdit_preset *preset);
int sd_train_vae_config(const sd_trainer *t, sd_vae_config *c);
int sd_train_vae_hash(const sd_trainer *t, char hex[65]);
int sd_train_load_vae(const sd_trainer *t, sd_vae *v);
int sd_train_load_text(const sd_trainer *t, sd_text_encoders *te);
int sd_train_load_mmdit(const sd_trainer *t, sd_mmdit *m);   // synthetic only

// The QZO run from the checkpoint (or step 0) to opt.steps.
int sd_train_loop(sd_trainer *t);

#endif
