// mmdit/base_model.h: the base MMDiT a run starts from, as sd-qzo's commands find it
// on disk, and the content hash that ties a quantised file and a scales checkpoint
// to it. A base is a diffusers folder (pipeline or transformer/), a Stability single
// file, or the int4 file `sd-qzo quantize` writes (either key layout).
//
// The source hash covers every transformer tensor's name, dtype, shape and bytes,
// in name order (a single file: only its model.diffusion_model.* tensors), so it
// names the weights whatever the sharding. `sd-qzo quantize` records it as
// sd_qzo.source_sha256, training as the checkpoint's sd_qzo.base_sha256; a base
// loaded from a quantised file reports the hash of the source it was made from.
#ifndef SQ_BASE_MODEL_H
#define SQ_BASE_MODEL_H

#include <stdbool.h>

#include "core/safetensors.h"

#define SQ_SINGLE_FILE_PREFIX "model.diffusion_model."

typedef struct {
    char weights[4096];  // what sq_st_open opens: the transformer folder or the file
    char config[4096];   // its config.json; "" when there is none (single or quantised file)
    bool single_file;    // Stability key layout (model.diffusion_model.*)
    bool quantized;      // written by `sd-qzo quantize` (sd_qzo.format q4-v1)
    int group;           // quantized: its group size
} sq_base_model;

// Resolves `model` (pipeline folder, transformer folder or .safetensors file) and
// opens its weights; *st is the caller's to close. Reads a quantised file's group.
int sq_base_open(const char *model, sq_base_model *base, sq_safetensors **st);
// The tensors of a checkpoint that belong to the MMDiT.
bool sq_base_keep_tensor(const char *name, bool single_file);
// Source hash (above) of the open dense checkpoint; reads every tensor once.
void sq_base_source_sha256(const sq_safetensors *st, bool single_file, char hex[65]);
// The hash that identifies the base: a quantised file's recorded source hash, or
// the source hash of a dense checkpoint.
int sq_base_sha256(const sq_base_model *base, const sq_safetensors *st, char hex[65]);

#endif
