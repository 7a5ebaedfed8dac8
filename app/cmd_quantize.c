// app/cmd_quantize.c: `sd-qzo quantize`: the command line of the streaming int4
// quantiser (mmdit/quantize_file.h), which writes the int4 + scales file that
// train / sample / bench load directly.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/commands.h"
#include "core/error.h"
#include "mmdit/quantize_file.h"

static void usage(FILE *f) {
    fprintf(f, "usage: sd-qzo quantize --model DIR_OR_FILE --out FILE.safetensors [--group-size 64]\n\n"
               "  --model        diffusers pipeline dir, its transformer/ dir, or a single-file checkpoint\n"
               "                 (only model.diffusion_model.* keys are kept from a single file)\n"
               "  --out          output .safetensors (int4 codes + fp32 scales + unquantised tensors)\n"
               "  --group-size   input features per scale: 32, 64 (default) or 128\n");
}

int sq_cmd_quantize(int argc, char **argv) {
    const char *model = NULL, *out = NULL;
    int group = 64;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { usage(stdout); return SQ_OK; }
        if (i + 1 >= argc) return sq_errorf("option %s needs a value (see sd-qzo quantize --help)", argv[i]);
        if (!strcmp(argv[i], "--model")) model = argv[++i];
        else if (!strcmp(argv[i], "--out")) out = argv[++i];
        else if (!strcmp(argv[i], "--group-size")) {
            char *end;
            long g = strtol(argv[++i], &end, 10);
            if (*end || (g != 32 && g != 64 && g != 128)) return sq_errorf("--group-size must be 32, 64 or 128, not '%s'", argv[i]);
            group = (int)g;
        } else return sq_errorf("unknown option '%s' (see sd-qzo quantize --help)", argv[i]);
    }
    if (!model || !out) return sq_errorf("--model and --out are required (see sd-qzo quantize --help)");
    return sq_quantize_checkpoint(model, out, group, false);
}
