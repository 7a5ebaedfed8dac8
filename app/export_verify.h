// app/export_verify.h: `sd-qzo export --verify`: after an export, one prompt is
// sampled with the same seed from each exported file and from the base + the
// checkpoint's scales as training saw them (through `sd-qzo sample`), and the
// pixel difference is reported, so "fine in the trainer, broken in ComfyUI" shows
// before the user leaves. The images stay in OUT/verify/<what>/.
#ifndef SD_EXPORT_VERIFY_H
#define SD_EXPORT_VERIFY_H

#include "app/export.h"

typedef struct {
    const char *pipeline;     // text encoders + VAE (a diffusers pipeline folder)
    const char *prompt;
    int steps, size;          // Euler steps; width = height in pixels
    const char *device;       // "auto", "cpu" or "cuda"
} sd_export_verify_options;

typedef struct {
    double max_diff[3], mean_diff[3];   // per format (diffusers, single, gguf), in 1/255
    bool done[3];
} sd_export_verify_result;

// o: the export that was just written. Prints one line per exported format.
int sd_export_verify(const sd_export_options *o, const sd_export_verify_options *v, sd_export_verify_result *r);

#endif
