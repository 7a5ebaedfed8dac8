// app/main.c: the sd-qzo command line. Parses the sub-command and hands over to
// app/cmd_*.c; every error travels back here as a message, is printed as one line
// on stderr, and becomes a non-zero exit status.
#include <stdio.h>
#include <string.h>

#include "app/commands.h"
#include "core/error.h"
#include "kernels/backend.h"

#ifndef SQ_VERSION
#define SQ_VERSION "unknown"
#endif

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"train", sq_cmd_train, "QZO fine-tune the MMDiT's int4 scales on an image folder + captions"},
    {"sample", sq_cmd_sample, "generate images (flow-matching Euler sampler, CFG)"},
    {"quantize", sq_cmd_quantize, "quantise a checkpoint to int4 once, so later runs load it directly"},
    {"export", sq_cmd_export, "write fine-tuned weights as a diffusers folder or single file"},
    {"bench", sq_cmd_bench, "measure forward / QZO step time and memory"},
    {"info", sq_cmd_info, "list the tensors of a safetensors file or diffusers directory"},
};

static void usage(FILE *f) {
    fprintf(f,
            "sd-qzo %s: fine-tune Stable Diffusion 3.5 with quantised zeroth-order optimisation\n\n"
            "usage: sd-qzo <command> [options]\n\ncommands:\n", SQ_VERSION);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\noptions:\n  -h, --help     this help (sd-qzo <command> --help for a command's options)\n"
               "  --version      version and backends\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        char gpu[256];
        sq_cuda_describe(gpu, sizeof gpu);
        printf("sd-qzo %s\nbackends: cpu%s\n", SQ_VERSION, sq_cuda_compiled() ? ", cuda" : "");
        if (gpu[0]) printf("gpu: %s\n", gpu);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (!strcmp(argv[1], commands[i].name)) {
            if (commands[i].run(argc - 1, argv + 1) != SQ_OK) {
                fprintf(stderr, "sd-qzo %s: error: %s\n", commands[i].name, sq_error_message());
                return 1;
            }
            return 0;
        }
    }
    fprintf(stderr, "sd-qzo: unknown command '%s' (try sd-qzo --help)\n", argv[1]);
    return 2;
}
