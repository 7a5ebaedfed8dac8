// app/train_options.h: every setting of `sd-qzo train`, its default, and the three
// places a value can come from, applied in this order (later wins):
//   1. the defaults below (sd_train_options_defaults),
//   2. a config file (--config FILE): JSON ({"lr": 1e-5, "images": "dir"}) or flat
//      TOML (lr = 1e-5 / images = "dir" / # comments), keys spelled like the flags
//      without "--" (dashes or underscores both accepted),
//   3. command-line flags.
// One table (train_options.c, on the shared machinery of app/options.h) describes
// every option once, so flags, config keys, --help and the run's saved settings
// (OUT/run.json) can never disagree.
#ifndef SD_TRAIN_OPTIONS_H
#define SD_TRAIN_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "app/options.h"
#include "qzo/checkpoint.h"
#include "qzo/qzo.h"
#include "qzo/noise.h"
#include "kernels/backend.h"

// What the processes of a multi-process run share out in a step (docs/QZO.md):
// queries: each evaluates its share of the --queries perturbations on the whole batch;
// batch: each evaluates every perturbation on its share of the batch.
typedef enum { SD_SPLIT_QUERIES = 0, SD_SPLIT_BATCH } sd_split;

typedef struct {
    // what to train on
    char model[1024];          // SD3.5 pipeline folder, or an `sd-qzo quantize` file + --encoders
    char encoders[1024];       // pipeline folder for VAE + text encoders when --model is a single file
    char images[1024];
    char captions[1024];       // "" = metadata.jsonl/.csv in the images folder, else a file beside each image
    char caption_ext[64];      // extension of the caption file beside each image (".txt")
    char output[1024];
    char resume[1024];         // checkpoint to continue from ("" = fresh run)
    bool recursive;
    bool skip_bad_images;      // warn and skip an image that does not decode (else stop)
    char masks[1024];          // loss masks: a grey image per training image ("" = none)
    bool alpha_mask;           // loss masks from each image's alpha channel
    int masks_missing;         // 0 error, 1 warn (the image trains unmasked)
    // image pipeline
    int resolution;
    bool buckets;              // aspect-ratio buckets (else centre-cropped squares)
    bool random_crop;
    bool flip;                 // horizontal flip (both variants cached)
    float caption_dropout;     // probability of the empty prompt
    bool shuffle_tags;
    int keep_tags;             // leading tags kept in place when shuffling
    bool cache;                // latents + text embeddings cached on disk (default on)
    char cache_dir[1024];      // "" = OUT/cache
    bool t5;                   // use T5 (off: zeros, as the pipeline allows)
    bool t5_int8;
    int t5_max_length;
    bool low_vram;             // text encoders' blocks streamed from host memory (same numbers)
    // optimisation (docs/QZO.md)
    int batch_size;
    int64_t steps;
    float lr, eps, clip, adaptive_clip;   // lr NAN: --lr auto (calibrated before the run)
    int queries;
    int perturbation;          // 0 absolute (the paper's), 1 relative to each scale (qzo/qzo.h)
    float momentum;            // β on the update direction (0: off)
    float spike_factor;        // discard a step whose loss exceeds this × the running median (0: off)
    int max_bad_steps;         // stop after this many discarded steps in a row
    int lr_auto_steps;         // --lr auto: QZO steps per candidate
    int group_size;
    uint64_t seed;
    sq_lr_schedule lr_schedule;           // constant | cosine | linear
    int warmup_steps;
    sd_timestep_sampling timestep_sampling; // logit_normal | uniform | mode
    float logit_mean, logit_std, mode_scale;
    float shift;               // <= 0: the model's scheduler shift (3.0 for SD3.5)
    // what trains, and the EMA (qzo/train_selection.h, docs/QZO.md)
    char train_blocks[256];    // "all" or joint blocks "0-11,20"
    char train_layers[128];    // "all" or layer types "attn,mlp,adaln"
    float ema;                 // β of the EMA of the trained scales (0: off)
    // monitoring
    int64_t save_every, sample_every, val_every;
    char sample_prompts[1024]; // one prompt per line ("" = the first captions)
    int sample_steps;
    float sample_cfg;
    char val_images[1024];     // held-out images (captions as for --images)
    char val_captions[1024];
    bool tensorboard;          // OUT/events.out.tfevents.*: the log's numbers and the previews for TensorBoard
    // machine
    sq_device_request device;  // auto | cpu | cuda
    int threads;               // CPU threads, 0 = all
    // several processes (README "Several GPUs"; app/train.h): none is in the
    // fingerprint, so a run may resume with another count; --batch-size and --queries
    // stay the totals of a step, shared out among the processes
    int gpus;                  // > 1: one process per GPU of this host, started by sd-qzo
    int processes;             // > 1: this many CPU processes (the same exchange without GPUs)
    int split;                 // sd_split: what the processes share out
    float rank_timeout;        // seconds any process may keep the others waiting
    bool overwrite;            // allow an OUT that holds a different run
} sd_train_options;

extern const sq_option_table sd_train_option_table;

void sd_train_options_defaults(sd_train_options *o);
// Parses argv (argv[0] = "train"), reading --config first wherever it appears.
// *help is set when --help was given (nothing else is checked then).
int sd_train_options_parse(sd_train_options *o, int argc, char **argv, bool *help);
// Checks the combination (required options, ranges). Message names the option.
int sd_train_options_validate(const sd_train_options *o);
void sd_train_options_usage(FILE *f);
// The settings as one JSON object (for OUT/run.json and the report), values as written.
char *sd_train_options_json(const sd_train_options *o);   // malloc'ed
// The options that change what is computed (everything but monitoring/machine
// settings and paths that may move), hashed: a resumed run must match it.
void sd_train_options_fingerprint(const sd_train_options *o, char hex[65]);
// --resume: the checkpoint's trained blocks and layer types (qzo/train_selection.h)
// and its EMA (--ema) must be the options' (they are not in the fingerprint: the
// checkpoint records them); else one line saying which differs.
int sd_train_check_resume(const sd_train_options *o, const sq_checkpoint_info *info);

#endif
