// app/cmd_export.c: `sd-qzo export`: option parsing for app/export.h.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/commands.h"
#include "app/export.h"
#include "core/error.h"

static void usage(FILE *f) {
    fprintf(f, "usage: sd-qzo export --model M --scales CKPT.safetensors --out DIR [--format diffusers|single|both]\n"
               "                     [--dtype bf16|fp16|fp32] [--name NAME] [--shard-size GB] [--force]\n\n"
               "  --model       the base the scales were trained on: diffusers folder, single file,\n"
               "                or the int4 file of `sd-qzo quantize`\n"
               "  --scales      a QZO checkpoint (trained scales; must match the base's hash and group)\n"
               "  --out         output folder (created; must be empty unless --force)\n"
               "  --format      diffusers: DIR/transformer/ (default); single: DIR/NAME.safetensors in\n"
               "                Stability's layout (ComfyUI, stable-diffusion.cpp, from_single_file); both\n"
               "  --dtype       output precision (default: the base's own, bf16 for the SD3.5 releases)\n"
               "  --name        single file's name without .safetensors (default: DIR's name)\n"
               "  --shard-size  diffusers shard size in GB (default 5)\n"
               "  --force       write into a non-empty DIR, replacing an earlier export\n");
}

int sq_cmd_export(int argc, char **argv) {
    sq_export_options o;
    sq_export_options_defaults(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return SQ_OK; }
        if (!strcmp(a, "--force")) { o.force = true; continue; }
        if (i + 1 >= argc) return sq_errorf("option %s needs a value (see sd-qzo export --help)", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--model")) o.model = v;
        else if (!strcmp(a, "--scales")) o.scales = v;
        else if (!strcmp(a, "--out")) o.out_dir = v;
        else if (!strcmp(a, "--name")) o.name = v;
        else if (!strcmp(a, "--format")) {
            if (!strcmp(v, "diffusers")) o.formats = SQ_EXPORT_DIFFUSERS;
            else if (!strcmp(v, "single")) o.formats = SQ_EXPORT_SINGLE;
            else if (!strcmp(v, "both")) o.formats = SQ_EXPORT_DIFFUSERS | SQ_EXPORT_SINGLE;
            else return sq_errorf("--format must be diffusers, single or both, not '%s'", v);
        } else if (!strcmp(a, "--dtype")) {
            if (!strcmp(v, "bf16")) o.dtype = SQ_BF16;
            else if (!strcmp(v, "fp16")) o.dtype = SQ_F16;
            else if (!strcmp(v, "fp32")) o.dtype = SQ_F32;
            else return sq_errorf("--dtype must be bf16, fp16 or fp32, not '%s'", v);
        } else if (!strcmp(a, "--shard-size")) {
            char *end;
            double gb = strtod(v, &end);
            if (*end || !(gb > 0)) return sq_errorf("--shard-size must be a positive number of GB, not '%s'", v);
            o.max_shard_bytes = (int64_t)(gb * 1e9);
        } else return sq_errorf("unknown option '%s' (see sd-qzo export --help)", a);
    }
    if (!o.model || !o.scales || !o.out_dir) return sq_errorf("--model, --scales and --out are required (see sd-qzo export --help)");
    if (o.name && (!o.name[0] || strchr(o.name, '/'))) return sq_errorf("--name '%s' must be a plain file name", o.name);
    return sq_export(&o);
}
