// app/export.h: `sd-qzo export`: a fine-tuned MMDiT as ordinary weights. The base
// is loaded as training loads it (int4 at the checkpoint's group size, or the int4
// file `sd-qzo quantize` wrote), the checkpoint's trained scales replace the base
// scales, and every quantised linear is written dequantised, W = s ⊙ q (exact fp32
// arithmetic, then rounded to the chosen dtype). Everything else is copied from the
// base, converted to the chosen dtype. Two layouts:
//   diffusers  OUT/transformer/config.json + diffusion_pytorch_model.safetensors
//              (sharded with an index above max_shard_bytes, as diffusers does);
//   single     OUT/<name>.safetensors in Stability's layout ("model.diffusion_model."
//              keys, fused qkv, swapped adaLN halves; mmdit/keymap.h);
//   gguf       OUT/<name>.gguf: the same keys without the prefix, int4 layers as Q4_0
//              with the trained scales rounded to fp16 (app/export_gguf.c), for
//              stable-diffusion.cpp and ComfyUI-GGUF.
// Tensors are streamed one at a time (the base stays memory-mapped), so memory stays
// at a few copies of the largest tensor whatever the model size; each file is
// written atomically and config.json last. The checkpoint must have been trained on
// this base (same source hash, mmdit/base_model.h) at the base's group size.
#ifndef SD_EXPORT_H
#define SD_EXPORT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/dtype.h"

enum { SD_EXPORT_DIFFUSERS = 1, SD_EXPORT_SINGLE = 2, SD_EXPORT_GGUF = 4 };

typedef struct {
    const char *model;        // base: diffusers folder, single file, or `sd-qzo quantize` output
    const char *scales;       // QZO scales checkpoint (qzo/checkpoint.h)
    bool ema;                 // use the checkpoint's EMA of the scales (--ema) instead of the scales
    const char *out_dir;      // created if missing; must be empty unless force
    int formats;              // SD_EXPORT_DIFFUSERS | SD_EXPORT_SINGLE | SD_EXPORT_GGUF
    int dtype;                // SQ_BF16, SQ_F16 or SQ_F32; -1: the base's own float dtype
                              // (gguf: the non-Q4_0 tensors; -1 is F16 there)
    const char *name;         // single / gguf file's name without extension; NULL: out_dir's base name
    bool force;               // write into a non-empty out_dir (replacing earlier export files)
    int64_t max_shard_bytes;  // diffusers shard size; 0: 5 GB
    bool quiet;               // no progress bar or summary on stdout
} sd_export_options;

void sd_export_options_defaults(sd_export_options *o);
int sd_export(const sd_export_options *o);

#endif
