// app/train_options.c: the option table of `sd-qzo train`, its defaults and the
// checks of their combination. Parsing, config files, --help and run.json are
// app/options.c's. See app/train_options.h.
#include "app/train_options.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "core/error.h"
#include "datasets/buckets.h"
#include "qzo/qzo.h"
#include "qzo/train_selection.h"
#include "text_encoders/conditioning.h"

#define S sd_train_options
#define F(f) SQ_OPT_FIELD(S, f), NULL
#define STR(f) SQ_OPT_STRING(S, f), NULL

static const sq_opt_choice lr_schedules[] = {
    {"constant", SQ_LR_CONSTANT}, {"cosine", SQ_LR_COSINE}, {"linear", SQ_LR_LINEAR}, {NULL, 0}};
static const sq_opt_choice timestep_samplings[] = {
    {"logit_normal", SD_T_LOGIT_NORMAL}, {"uniform", SD_T_UNIFORM}, {"mode", SD_T_MODE}, {NULL, 0}};

static const sq_opt_choice perturbations[] = {{"absolute", 0}, {"relative", 1}, {NULL, 0}};
static const sq_opt_choice lr_words[] = {{"auto", 0}, {NULL, 0}};
static const sq_opt_choice masks_missing_modes[] = {{"error", 0}, {"warn", 1}, {NULL, 0}};
static const sq_opt_choice splits[] = {{"queries", SD_SPLIT_QUERIES}, {"batch", SD_SPLIT_BATCH}, {NULL, 0}};

static const sq_option options[] = {
    {"model", NULL, SQ_OPT_STR, STR(model), false, "SD3.5 diffusers folder, single file, `sd-qzo quantize` output, or an SD3.5 GGUF (Q4_0: --group-size 32) (required)"},
    {"encoders", NULL, SQ_OPT_STR, STR(encoders), false, "pipeline folder with vae/ and text encoders when --model is a single file"},
    {"images", NULL, SQ_OPT_STR, STR(images), false, "folder of training images: PNG, JPEG, BMP, WebP (required)"},
    {"captions", NULL, SQ_OPT_STR, STR(captions), false, "captions file (filename<TAB>caption, or one line per image in sorted order); *.jsonl/*.csv: Hugging Face metadata; default: metadata.jsonl or metadata.csv in the images folder, else a .txt beside each image"},
    {"caption-ext", NULL, SQ_OPT_STR, STR(caption_ext), false, "extension of the caption file beside each image (.txt; kohya's other one: .caption)"},
    {"output", "out", SQ_OPT_STR, STR(output), false, "run folder: checkpoints, logs, previews, report.html (required)"},
    {"resume", NULL, SQ_OPT_STR, STR(resume), false, "continue from a checkpoint (e.g. OUT/checkpoint.safetensors)"},
    {"recursive", NULL, SQ_OPT_BOOL, F(recursive), true, "also read images in sub-folders"},
    {"skip-bad-images", NULL, SQ_OPT_BOOL, F(skip_bad_images), true, "warn and skip images that do not decode instead of stopping"},
    {"masks", NULL, SQ_OPT_STR, STR(masks), false, "folder of loss masks, one grey image per training image with its relative name or stem (.png/.jpg/.jpeg/.bmp/.webp) and its size: white trains, black is ignored, grey weighs value/255"},
    {"alpha-mask", NULL, SQ_OPT_BOOL, F(alpha_mask), true, "weight the loss by each image's alpha channel (images without alpha train unmasked, with a warning)"},
    {"masks-missing", NULL, SQ_OPT_ENUM, SQ_OPT_ENUM_FIELD(S, masks_missing), masks_missing_modes, false, "--masks: an image without a mask is an error, or (warn) trains unmasked with a warning"},
    {"resolution", NULL, SQ_OPT_INT, F(resolution), true, "training resolution (pixels, multiple of 64)"},
    {"buckets", NULL, SQ_OPT_BOOL, F(buckets), true, "aspect-ratio buckets (false: centre-cropped squares)"},
    {"random-crop", NULL, SQ_OPT_BOOL, F(random_crop), true, "random instead of centre crop (fixed per image, so latents cache)"},
    {"flip", NULL, SQ_OPT_BOOL, F(flip), true, "random horizontal flips"},
    {"caption-dropout", NULL, SQ_OPT_FLOAT, F(caption_dropout), true, "probability of training on the empty prompt (keeps CFG working)"},
    {"shuffle-tags", NULL, SQ_OPT_BOOL, F(shuffle_tags), true, "shuffle comma-separated tags of each caption per epoch"},
    {"keep-tags", NULL, SQ_OPT_INT, F(keep_tags), true, "leading tags kept in place when shuffling"},
    {"cache", NULL, SQ_OPT_BOOL, F(cache), false, "cache latents and text embeddings on disk (reused across runs)"},
    {"cache-dir", NULL, SQ_OPT_STR, STR(cache_dir), false, "cache folder (default OUT/cache)"},
    {"t5", NULL, SQ_OPT_BOOL, F(t5), true, "use the T5 encoder (false: zeros in its place, as diffusers allows)"},
    {"t5-int8", NULL, SQ_OPT_BOOL, F(t5_int8), true, "T5 with int8 weights (4.9 GB instead of 9.5 GB for T5-XXL; --no-t5-int8 for bf16)"},
    {"t5-max-length", "max-sequence-length", SQ_OPT_INT, F(t5_max_length), true, "T5 tokens per prompt"},
    {"low-vram", NULL, SQ_OPT_BOOL, F(low_vram), false, "stream text-encoder blocks from host memory: the text phase needs <1 GB of GPU memory instead of ~7 GB (SD3.5), encoding ~0.3 s slower per batch; --no-low-vram keeps them on the GPU"},
    {"batch-size", "batch", SQ_OPT_INT, F(batch_size), true, "images per QZO step"},
    {"steps", NULL, SQ_OPT_I64, F(steps), false, "QZO steps to run in total"},
    {"lr", NULL, SQ_OPT_FLOAT, SQ_OPT_FIELD(S, lr), lr_words, true, "learning rate of the scales; auto: try five rates around the default for --lr-auto-steps steps each, scored on --val-images, and train with the best"},
    {"lr-auto-steps", NULL, SQ_OPT_INT, F(lr_auto_steps), false, "--lr auto: QZO steps per candidate learning rate"},
    {"eps", NULL, SQ_OPT_FLOAT, F(eps), true, "perturbation size of the scales (a fraction of each scale with --perturbation relative)"},
    {"perturbation", NULL, SQ_OPT_ENUM, SQ_OPT_ENUM_FIELD(S, perturbation), perturbations, true, "relative: s(1 +- eps z) and s <- s(1 - lr d z), one lr for scales of any size; absolute: the paper's s +- eps z, s <- s - lr d z"},
    {"momentum", NULL, SQ_OPT_FLOAT, F(momentum), true, "momentum on the update direction (0: off), replayed from the stored (perturbation, d) pairs: no memory per scale"},
    {"spike-factor", NULL, SQ_OPT_FLOAT, F(spike_factor), true, "discard a step whose L+ or L- exceeds this many times the running median loss, undo the step before it and halve the lr (0: off; non-finite losses are always discarded)"},
    {"max-bad-steps", NULL, SQ_OPT_INT, F(max_bad_steps), false, "stop after this many discarded steps in a row"},
    {"clip", NULL, SQ_OPT_FLOAT, F(clip), true, "clip of the projected gradient |(L+ - L-)/2eps| (<= 0: off)"},
    {"adaptive-clip", NULL, SQ_OPT_FLOAT, F(adaptive_clip), true, "> 0: clip at this multiple of the running median |d|"},
    {"queries", NULL, SQ_OPT_INT, F(queries), true, "perturbations per step (2 forward passes each)"},
    {"group-size", NULL, SQ_OPT_INT, SQ_OPT_FIELD(S, group_size), sq_opt_group_sizes, true, "int4 group size: 32, 64 or 128"},
    {"seed", NULL, SQ_OPT_U64, F(seed), true, "seed of perturbations, noise, timesteps and data order"},
    {"lr-schedule", NULL, SQ_OPT_ENUM, SQ_OPT_ENUM_FIELD(S, lr_schedule), lr_schedules, true, "learning-rate schedule after the warm-up"},
    {"warmup-steps", NULL, SQ_OPT_INT, F(warmup_steps), true, "linear learning-rate warm-up"},
    {"timestep-sampling", NULL, SQ_OPT_ENUM, SQ_OPT_ENUM_FIELD(S, timestep_sampling), timestep_samplings, true, "density of the training timesteps"},
    {"logit-mean", NULL, SQ_OPT_FLOAT, F(logit_mean), true, "mean of the logit-normal timestep density"},
    {"logit-std", NULL, SQ_OPT_FLOAT, F(logit_std), true, "std of the logit-normal timestep density"},
    {"mode-scale", NULL, SQ_OPT_FLOAT, F(mode_scale), true, "scale of the 'mode' timestep density"},
    {"shift", NULL, SQ_OPT_FLOAT, F(shift), true, "timestep shift (<= 0: the model scheduler's, 3.0 for SD3.5)"},
    {"train-blocks", NULL, SQ_OPT_STR, STR(train_blocks), false, "joint blocks whose int4 layers train, e.g. 0-11,20 (all: every block); the others stay frozen: no perturbation, no update"},
    {"train-layers", NULL, SQ_OPT_STR, STR(train_layers), false, "layer types that train: attn, mlp, adaln (or attn_qkv, attn_out, mlp_in, mlp_out), comma-separated; all: every type"},
    {"ema", NULL, SQ_OPT_FLOAT, F(ema), false, "keep an EMA of the trained scales with this beta (e.g. 0.999; 0: off): one fp32 copy beside the scales, validated and saved with them; sample/export --ema use it"},
    {"save-every", NULL, SQ_OPT_I64, F(save_every), false, "checkpoint every N steps (and on Ctrl-C)"},
    {"sample-every", NULL, SQ_OPT_I64, F(sample_every), false, "preview images every N steps (0: off)"},
    {"val-every", NULL, SQ_OPT_I64, F(val_every), false, "validation loss every N steps (0: off)"},
    {"sample-prompts", NULL, SQ_OPT_STR, STR(sample_prompts), false, "preview prompts, one per line (default: first captions)"},
    {"sample-steps", NULL, SQ_OPT_INT, F(sample_steps), false, "sampler steps for previews"},
    {"sample-cfg", NULL, SQ_OPT_FLOAT, F(sample_cfg), false, "guidance scale for previews"},
    {"val-images", NULL, SQ_OPT_STR, STR(val_images), false, "held-out images for the validation loss"},
    {"val-captions", NULL, SQ_OPT_STR, STR(val_captions), false, "captions of --val-images (default: its metadata.jsonl/.csv, else a --caption-ext file beside each)"},
    {"tensorboard", NULL, SQ_OPT_BOOL, F(tensorboard), false, "also log to a TensorBoard event file in OUT (losses, d, lr, validation loss, diagnostics, GPU memory, previews): tensorboard --logdir OUT"},
    {"device", NULL, SQ_OPT_ENUM, SQ_OPT_ENUM_FIELD(S, device), sq_opt_devices, false, "where to run (auto: CUDA when a GPU is present)"},
    {"threads", NULL, SQ_OPT_INT, F(threads), false, "CPU threads (0: all cores)"},
    {"overwrite", NULL, SQ_OPT_BOOL, F(overwrite), false, "start afresh in an OUT that holds a different run"},
    {"gpus", NULL, SQ_OPT_INT, F(gpus), false, "train on this many GPUs of this host, one process each (needs NCCL); many hosts: start sd-qzo with torchrun/srun/mpirun instead (README)"},
    {"processes", NULL, SQ_OPT_INT, F(processes), false, "train in this many CPU processes on this host (the multi-GPU exchange without GPUs)"},
    {"split", NULL, SQ_OPT_ENUM, SQ_OPT_ENUM_FIELD(S, split), splits, false, "with several processes, what each takes of a step: queries (its share of --queries, whole batch) or batch (its share of --batch-size, every query)"},
    {"rank-timeout", NULL, SQ_OPT_FLOAT, F(rank_timeout), false, "with several processes: seconds one may keep the others waiting before the run stops naming it"},
};

static void defaults(void *o) { sd_train_options_defaults(o); }

const sq_option_table sd_train_option_table = {
    .command = "train",
    .usage = "usage: sd-qzo train --model M --images DIR [--captions FILE] --output OUT [options]\n"
             "       sd-qzo train --config run.toml|run.json [options]\n\n"
             "QZO fine-tuning: the MMDiT stays int4 and only its quantisation scales are trained, from two\n"
             "forward passes per step. Ctrl-C saves a checkpoint; --resume OUT/checkpoint.safetensors continues.\n",
    .options = options,
    .count = (int)(sizeof options / sizeof options[0]),
    .struct_size = sizeof(sd_train_options),
    .defaults = defaults,
    .config_file = true,
};

void sd_train_options_defaults(sd_train_options *o) {
    memset(o, 0, sizeof *o);
    o->resolution = 1024;
    o->buckets = true;
    o->caption_dropout = 0.05f;   // a little unconditional training keeps CFG intact
    strcpy(o->caption_ext, ".txt");
    o->cache = true;
    o->t5 = true;
    o->t5_int8 = true;           // T5-XXL in int8: 4.9 GB instead of 9.5 GB while encoding
    o->low_vram = true;          // encoders run once per dataset: streaming costs seconds, saves ~6 GB
    o->t5_max_length = 256;      // SD3.5's max_sequence_length
    o->batch_size = 1;
    o->steps = 1000;
    sq_qzo_config qzo;           // the QZO hyper-parameters' one home: qzo/qzo.c
    sq_qzo_config_defaults(&qzo);
    o->lr = qzo.lr;
    o->eps = qzo.eps;
    o->clip = qzo.clip;
    o->adaptive_clip = qzo.adaptive_clip;
    o->queries = qzo.queries;
    o->perturbation = qzo.relative;
    o->momentum = qzo.momentum;
    o->spike_factor = qzo.spike_factor;
    o->max_bad_steps = qzo.max_bad_steps;
    o->lr_auto_steps = 100;
    o->group_size = 64;
    o->seed = qzo.seed;
    o->lr_schedule = qzo.schedule;
    o->warmup_steps = qzo.warmup_steps;
    o->timestep_sampling = SD_T_LOGIT_NORMAL;
    o->logit_mean = 0.0f;
    o->logit_std = 1.0f;
    o->mode_scale = 1.29f;
    o->shift = 0.0f;
    snprintf(o->train_blocks, sizeof o->train_blocks, "all");
    snprintf(o->train_layers, sizeof o->train_layers, "all");
    o->ema = 0.0f;                // off until the learning benchmark shows it helps (bench/LEARNING.md)
    o->save_every = 250;
    o->sample_every = 250;
    o->val_every = 50;
    o->sample_steps = 28;
    o->sample_cfg = 4.5f;
    o->device = SQ_DEVICE_AUTO;
    o->gpus = 1;
    o->processes = 1;
    o->split = SD_SPLIT_QUERIES;   // the default --batch-size 1 cannot be split; --queries 4 can
    o->rank_timeout = 600;         // rank 0's validation and previews keep the others waiting
}

int sd_train_options_parse(sd_train_options *o, int argc, char **argv, bool *help) {
    return sq_options_parse(&sd_train_option_table, o, argc, argv, help, NULL);
}

int sd_train_options_validate(const sd_train_options *o) {
    if (!o->model[0]) return sq_errorf("--model is required (an SD3.5 diffusers folder or checkpoint)");
    if (!o->images[0]) return sq_errorf("--images is required (a folder of training images)");
    if (!o->output[0]) return sq_errorf("--output is required (the run folder)");
    if (sd_check_resolution(o->resolution, o->buckets, NULL) != SQ_OK) return SQ_FAIL;   // the model's limits: cmd_train.c
    if (o->masks[0] && o->alpha_mask) return sq_errorf("--masks and --alpha-mask exclude each other: give one source of loss masks");
    if (o->batch_size < 1) return sq_errorf("--batch-size must be at least 1");
    if (o->steps < 1) return sq_errorf("--steps must be at least 1");
    if (o->queries < 1 || o->queries > 64) return sq_errorf("--queries must be 1..64");
    if (!(o->lr >= 0) && !isnan(o->lr)) return sq_errorf("--lr must be >= 0 or auto");
    if (isnan(o->lr) && !o->val_images[0])
        return sq_errorf("--lr auto needs --val-images: the candidates are scored on held-out images");
    if (isnan(o->lr) && o->lr_auto_steps < 1) return sq_errorf("--lr-auto-steps must be at least 1");
    if (!(o->momentum >= 0 && o->momentum < 1)) return sq_errorf("--momentum must be in [0, 1)");
    if (!(o->spike_factor >= 0)) return sq_errorf("--spike-factor must be >= 0");
    if (o->max_bad_steps < 1) return sq_errorf("--max-bad-steps must be at least 1");
    if (!(o->eps > 0)) return sq_errorf("--eps must be > 0");
    if (o->caption_dropout < 0 || o->caption_dropout > 1) return sq_errorf("--caption-dropout must be in [0, 1]");
    if (!o->caption_ext[o->caption_ext[0] == '.'] || strchr(o->caption_ext, '/'))
        return sq_errorf("--caption-ext '%s': give a file extension such as .txt or .caption", o->caption_ext);
    if (!(o->logit_std > 0)) return sq_errorf("--logit-std must be > 0");
    if (o->t5_max_length < 1 || o->t5_max_length > SD_T5_MAX_TOKENS)
        return sq_errorf("--t5-max-length must be in 1..%d", SD_T5_MAX_TOKENS);
    if (o->save_every < 1) return sq_errorf("--save-every must be at least 1");
    if (o->sample_every < 0 || o->val_every < 0) return sq_errorf("--sample-every and --val-every must be >= 0");
    if (o->sample_steps < 1) return sq_errorf("--sample-steps must be at least 1");
    if (o->threads < 0) return sq_errorf("--threads must be >= 0 (0: all cores)");
    if (!(o->ema >= 0 && o->ema < 1)) return sq_errorf("--ema must be in [0, 1) (0: off; e.g. 0.999)");
    sd_train_selection sel;
    if (sd_train_selection_parse(o->train_blocks, o->train_layers, &sel) != SQ_OK) return SQ_FAIL;
    if (o->gpus < 1 || o->processes < 1) return sq_errorf("--gpus and --processes must be at least 1");
    if (o->gpus > 1 && o->processes > 1) return sq_errorf("--gpus and --processes: give one of them (GPU or CPU processes)");
    if (!(o->rank_timeout >= 1)) return sq_errorf("--rank-timeout must be at least 1 second");
    return SQ_OK;
}

void sd_train_options_usage(FILE *f) { sq_options_usage(&sd_train_option_table, f); }

char *sd_train_options_json(const sd_train_options *o) { return sq_options_json(&sd_train_option_table, o); }

void sd_train_options_fingerprint(const sd_train_options *o, char hex[65]) {
    sq_options_fingerprint(&sd_train_option_table, o, hex);
}

int sd_train_check_resume(const sd_train_options *o, const sq_checkpoint_info *info) {
    // a checkpoint from before the selection trained every layer
    const char *blocks = info->train_blocks[0] ? info->train_blocks : "all";
    const char *layers = info->train_layers[0] ? info->train_layers : "all";
    sd_train_selection was, now;
    if (sd_train_selection_parse(blocks, layers, &was) != SQ_OK)
        return sq_error_context("--resume %s: its sd_qzo.train", o->resume);
    if (sd_train_selection_parse(o->train_blocks, o->train_layers, &now) != SQ_OK) return SQ_FAIL;
    if (!sd_train_selection_equal(&was, &now))
        return sq_errorf("--resume %s trained --train-blocks %s --train-layers %s, this run asks for --train-blocks %s "
                         "--train-layers %s: a resumed run must train the same scales", o->resume, blocks, layers,
                         o->train_blocks, o->train_layers);
    if (info->ema_beta != o->ema) {
        if (info->ema_beta == 0)
            return sq_errorf("--resume %s has no EMA of the scales (trained without --ema), this run asks for --ema %g: "
                             "resume without --ema, or start a new run", o->resume, (double)o->ema);
        return sq_errorf("--resume %s keeps an EMA with --ema %g, this run asks for --ema %g: resume with --ema %g",
                         o->resume, (double)info->ema_beta, (double)o->ema, (double)info->ema_beta);
    }
    return SQ_OK;
}
