// mmdit/gguf_base.h: an SD3.5 MMDiT GGUF (stable-diffusion.cpp's or ComfyUI-GGUF's
// layout: Stability single-file tensor names, with or without the
// "model.diffusion_model." prefix, general.architecture "sd3") opened as a base.
// The file is presented as the safetensors set the rest of sd-qzo reads
// (core/safetensors.h's sq_st_from_entries), in the single-file layout:
//   - when the joint-block linears are Q4_0, as an int4 base (sd_qzo.format q4-v1)
//     at group size 32: a Q4_0 block of 32 is one group, its codes q - 8 and its
//     fp16 scale d (widened to f32) carried over exactly. sd-qzo's scales are
//     non-negative (QZO clamps them at 0), so a block with d < 0 is stored as codes
//     8 - q with scale -d; a code +8 that this makes does not fit int4 and is
//     stored as +7: those codes are counted and reported, never hidden. Other
//     linears in such a file (Q8_0, Q4_K, F16, ...) are dequantised and quantised
//     with sd-qzo's quantiser at group 32, with an info line saying so;
//   - otherwise as a dense single file: F32, F16 and BF16 tensors as they are
//     (read from the mapping), Q8_0 / Q4_K / Q4_0 dequantised to F32 in memory
//     (with an info line), for training to quantise as it quantises any base.
// The int4 form's source hash covers every kept tensor's name, ggml type, dims and
// bytes, in name order, so a checkpoint trained on the GGUF is tied to it.
// Host memory: the int4 form holds codes + f32 scales in memory (≈ 1.2× the file);
// a dequantised dense form holds the dequantised tensors in f32.
#ifndef SD_MMDIT_GGUF_BASE_H
#define SD_MMDIT_GGUF_BASE_H

#include <stdbool.h>

#include "core/safetensors.h"

// True when path names a GGUF file: a ".gguf" name, or a file that starts "GGUF".
bool sd_is_gguf_path(const char *path);

typedef struct {
    int q4_layers;         // linears carried over from Q4_0
    int requantized;       // linears of other types quantised at group 32
    int dequantized;       // tensors widened to f32 (dense form, or non-linears)
    long long negative_blocks;  // Q4_0 blocks with a negative scale, kept as they are
    long long codes;       // codes carried over
} sd_gguf_base_report;

// Opens the GGUF at path as above; *st is the caller's to close. report may be NULL.
// Info lines (sq_log_info) say what was carried over or dequantised unless quiet.
int sd_gguf_base_open(const char *path, sq_safetensors **st, bool quiet, sd_gguf_base_report *report);

#endif
