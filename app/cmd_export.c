// app/cmd_export.c: `sd-qzo export`: the option table of app/export.h's settings.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/commands.h"
#include "app/export.h"
#include "app/export_verify.h"
#include "app/options.h"
#include "core/error.h"
#include "core/path.h"

typedef struct {
    char model[4096], scales[4096], out[4096], name[1024], pipeline[4096], verify_prompt[1024];
    int format;          // SD_EXPORT_DIFFUSERS | SD_EXPORT_SINGLE | SD_EXPORT_GGUF
    int dtype;           // an sq_dtype, or -1: the base's own
    float shard_size;    // GB
    bool force;
    bool ema;            // the checkpoint's EMA of the scales
    bool verify;
    int verify_steps, verify_size, device;
} export_args;

static void defaults(void *p) {
    export_args *a = p;
    memset(a, 0, sizeof *a);
    a->format = SD_EXPORT_DIFFUSERS;
    a->dtype = -1;
    a->shard_size = 5.0f;   // diffusers' default max_shard_size
    snprintf(a->verify_prompt, sizeof a->verify_prompt, "a photo of a cat sitting on a red chair");
    a->verify_steps = 8;
    a->verify_size = 512;
}

static const sq_opt_choice verify_devices[] = {{"auto", 0}, {"cpu", 1}, {"cuda", 2}, {NULL, 0}};

static const sq_opt_choice formats[] = {{"diffusers", SD_EXPORT_DIFFUSERS},
                                        {"single", SD_EXPORT_SINGLE},
                                        {"both", SD_EXPORT_DIFFUSERS | SD_EXPORT_SINGLE},
                                        {"gguf", SD_EXPORT_GGUF},
                                        {NULL, 0}};
static const sq_opt_choice dtypes[] = {{"auto", -1}, {"bf16", SQ_BF16}, {"fp16", SQ_F16}, {"fp32", SQ_F32}, {NULL, 0}};

#define S export_args
static const sq_option options[] = {
    {"model", NULL, SQ_OPT_STR, SQ_OPT_STRING(S, model), NULL, false,
     "the base the scales were trained on: diffusers folder, single file, the int4 file of `sd-qzo quantize`, or an SD3.5 GGUF (required)"},
    {"scales", NULL, SQ_OPT_STR, SQ_OPT_STRING(S, scales), NULL, false,
     "a QZO checkpoint: trained scales; must match the base's hash and group (required)"},
    {"out", "output", SQ_OPT_STR, SQ_OPT_STRING(S, out), NULL, false, "output folder: created; must be empty unless --force (required)"},
    {"format", NULL, SQ_OPT_ENUM, SQ_OPT_ENUM_FIELD(S, format), formats, false,
     "diffusers: OUT/transformer/; single: OUT/NAME.safetensors in Stability's layout (ComfyUI, stable-diffusion.cpp, "
     "from_single_file); both; gguf: OUT/NAME.gguf, int4 layers as Q4_0 (stable-diffusion.cpp, ComfyUI-GGUF)"},
    {"dtype", NULL, SQ_OPT_ENUM, SQ_OPT_ENUM_FIELD(S, dtype), dtypes, false,
     "output precision (auto: the base's own, bf16 for the SD3.5 releases; gguf: of the tensors that are not Q4_0, auto is fp16)"},
    {"name", NULL, SQ_OPT_STR, SQ_OPT_STRING(S, name), NULL, false, "single or gguf file's name without extension (default: OUT's name)"},
    {"shard-size", NULL, SQ_OPT_FLOAT, SQ_OPT_FIELD(S, shard_size), NULL, false, "diffusers shard size in GB"},
    {"force", NULL, SQ_OPT_BOOL, SQ_OPT_FIELD(S, force), NULL, false, "write into a non-empty OUT, replacing an earlier export"},
    {"ema", NULL, SQ_OPT_BOOL, SQ_OPT_FIELD(S, ema), NULL, false,
     "export the EMA of the scales the checkpoint holds (trained with --ema) instead of the scales"},
    {"verify", NULL, SQ_OPT_BOOL, SQ_OPT_FIELD(S, verify), NULL, false,
     "afterwards, sample one prompt from each exported file and from the base + scales, and print the pixel difference "
     "(images in OUT/verify/)"},
    {"pipeline", NULL, SQ_OPT_STR, SQ_OPT_STRING(S, pipeline), NULL, false,
     "--verify: diffusers pipeline folder with the text encoders and VAE (default: --model when it is one)"},
    {"verify-prompt", NULL, SQ_OPT_STR, SQ_OPT_STRING(S, verify_prompt), NULL, false, "--verify: the prompt"},
    {"verify-steps", NULL, SQ_OPT_INT, SQ_OPT_FIELD(S, verify_steps), NULL, false, "--verify: Euler steps"},
    {"verify-size", NULL, SQ_OPT_INT, SQ_OPT_FIELD(S, verify_size), NULL, false, "--verify: width = height in pixels (multiple of 16)"},
    {"device", NULL, SQ_OPT_ENUM, SQ_OPT_ENUM_FIELD(S, device), verify_devices, false, "--verify: where to sample (auto: CUDA when a GPU is present)"},
};
#undef S

static const sq_option_table export_table = {
    .command = "export",
    .usage = "usage: sd-qzo export --model M --scales CKPT.safetensors --out DIR [--format diffusers|single|both|gguf]\n"
             "                     [--dtype auto|bf16|fp16|fp32] [--name NAME] [--shard-size GB] [--force] [--ema]\n"
             "                     [--verify [--pipeline DIR] [--verify-prompt TEXT] [--verify-steps N] [--verify-size PX]]\n",
    .options = options,
    .count = (int)(sizeof options / sizeof options[0]),
    .struct_size = sizeof(export_args),
    .defaults = defaults,
    .config_file = true,
};

int sq_cmd_export(int argc, char **argv) {
    export_args a;
    bool help;
    defaults(&a);
    if (sq_options_parse(&export_table, &a, argc, argv, &help, NULL) != SQ_OK) return SQ_FAIL;
    if (help) {
        sq_options_usage(&export_table, stdout);
        return SQ_OK;
    }
    if (!a.model[0] || !a.scales[0] || !a.out[0])
        return sq_errorf("--model, --scales and --out are required (see sd-qzo export --help)");
    if (!(a.shard_size > 0)) return sq_errorf("--shard-size must be a positive number of GB");
    if (strchr(a.name, '/')) return sq_errorf("--name '%s' must be a plain file name", a.name);
    sd_export_options o;
    sd_export_options_defaults(&o);
    o.model = a.model;
    o.scales = a.scales;
    o.out_dir = a.out;
    o.name = a.name[0] ? a.name : NULL;
    o.formats = a.format;
    o.dtype = a.dtype;
    o.max_shard_bytes = (int64_t)((double)a.shard_size * 1e9);
    o.force = a.force;
    o.ema = a.ema;
    if (a.verify && (a.verify_steps < 1 || a.verify_size < 16 || a.verify_size % 16))
        return sq_errorf("--verify-steps must be at least 1 and --verify-size a positive multiple of 16");
    if (a.verify && !a.pipeline[0]) {
        // --model doubles as the pipeline when it is a diffusers pipeline folder
        char p[4200];
        snprintf(p, sizeof p, "%s/model_index.json", a.model);
        if (!sq_is_file(p)) return sq_errorf("--verify needs the text encoders and VAE: pass --pipeline DIR (a diffusers SD3.5 folder)");
        snprintf(a.pipeline, sizeof a.pipeline, "%s", a.model);
    }
    if (sd_export(&o) != SQ_OK) return SQ_FAIL;
    if (!a.verify) return SQ_OK;
    sd_export_verify_options v = {.pipeline = a.pipeline, .prompt = a.verify_prompt, .steps = a.verify_steps,
                                  .size = a.verify_size, .device = verify_devices[a.device].name};
    sd_export_verify_result r;
    return sd_export_verify(&o, &v, &r);
}
