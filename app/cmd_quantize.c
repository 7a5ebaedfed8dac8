// app/cmd_quantize.c: `sd-qzo quantize`: the command line of the streaming int4
// quantiser (mmdit/quantize_file.h), which writes the int4 + scales file that
// train / sample / bench load directly.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/commands.h"
#include "app/options.h"
#include "core/error.h"
#include "mmdit/quantize_file.h"

typedef struct {
    char model[4096], out[4096];
    int group_size;
    sq_device_request device;
} quantize_args;

static void quantize_defaults(void *p) {
    quantize_args *a = p;
    memset(a, 0, sizeof *a);
    a->group_size = 64;
    a->device = SQ_DEVICE_AUTO;
}

static const sq_option quantize_options[] = {
    {"model", NULL, SQ_OPT_STR, SQ_OPT_STRING(quantize_args, model), NULL, false,
     "diffusers pipeline dir, its transformer/ dir, or a single-file checkpoint (only model.diffusion_model.* keys "
     "are kept from a single file) (required)"},
    {"out", "output", SQ_OPT_STR, SQ_OPT_STRING(quantize_args, out), NULL, false,
     "output .safetensors: int4 codes + fp32 scales + unquantised tensors (required)"},
    {"group-size", NULL, SQ_OPT_INT, SQ_OPT_FIELD(quantize_args, group_size), sq_opt_group_sizes, false,
     "input features per scale: 32, 64 or 128"},
    {"device", NULL, SQ_OPT_ENUM, SQ_OPT_ENUM_FIELD(quantize_args, device), sq_opt_devices, false,
     "where to quantise: auto (the GPU when there is one), cpu (all threads; OMP_NUM_THREADS for fewer) or cuda; "
     "the results are the same bits"},
};

static const sq_option_table quantize_table = {
    .command = "quantize",
    .usage = "usage: sd-qzo quantize --model DIR_OR_FILE --out FILE.safetensors [--group-size 64] [--device auto|cpu|cuda]\n",
    .options = quantize_options,
    .count = (int)(sizeof quantize_options / sizeof quantize_options[0]),
    .struct_size = sizeof(quantize_args),
    .defaults = quantize_defaults,
    .config_file = true,
};

int sq_cmd_quantize(int argc, char **argv) {
    quantize_args a;
    bool help;
    quantize_defaults(&a);
    if (sq_options_parse(&quantize_table, &a, argc, argv, &help, NULL) != SQ_OK) return SQ_FAIL;
    if (help) {
        sq_options_usage(&quantize_table, stdout);
        return SQ_OK;
    }
    if (!a.model[0] || !a.out[0]) return sq_errorf("--model and --out are required (see sd-qzo quantize --help)");
    sd_quantize_options o = {.quiet = false, .device = a.device};
    return sd_quantize_checkpoint_ex(a.model, a.out, a.group_size, &o, NULL);
}
