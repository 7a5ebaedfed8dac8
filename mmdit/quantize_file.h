// mmdit/quantize_file.h: converting an MMDiT checkpoint on disk to sd-qzo's int4
// file (format q4-v1: "X.weight.q4" codes + "X.weight.scales", the source hash, the
// layout and the transformer config in the metadata; mmdit/base_model.h reads it).
// The quantiser streams: host memory stays at about one tensor in f32.
#ifndef SD_MMDIT_QUANTIZE_FILE_H
#define SD_MMDIT_QUANTIZE_FILE_H

#include <stdbool.h>

// model: a diffusers pipeline or transformer folder, or a single-file checkpoint
// (only its model.diffusion_model.* tensors are kept). group: 32, 64 or 128.
// quiet: no progress bar and no per-kind error table on stdout.
int sd_quantize_checkpoint(const char *model, const char *out_path, int group, bool quiet);

#endif
