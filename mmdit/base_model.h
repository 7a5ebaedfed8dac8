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
#ifndef SD_MMDIT_BASE_MODEL_H
#define SD_MMDIT_BASE_MODEL_H

#include <stdbool.h>

#include "core/safetensors.h"

#define SD_SINGLE_FILE_PREFIX "model.diffusion_model."

// The int4 file of `sd-qzo quantize` (mmdit/quantize_file.h) carries its facts in
// the safetensors metadata: sd_qzo.format = SD_Q4_FORMAT, sd_qzo.group_size,
// sd_qzo.source_sha256 (the source hash below), sd_qzo.layout ("diffusers" or
// "single-file": the key layout kept from the source), sd_qzo.source (the path
// quantised) and sd_qzo.config (the transformer's config.json; "{}" for a single
// file). Tensors: "X.weight" becomes "X.weight.q4" (U8 (Nout, K/2), two codes a byte)
// + "X.weight.scales" (F32 (Nout, K/G)); every other tensor is copied as it is.
#define SD_Q4_FORMAT "q4-v1"
#define SD_Q4_CODES_SUFFIX ".q4"
#define SD_Q4_SCALES_SUFFIX ".scales"

// That metadata, read once (sd_q4_header_read is its only reader). The strings point
// into the open file's header: valid while it stays open.
typedef struct {
    bool quantized;             // sd_qzo.format is present (and is SD_Q4_FORMAT)
    bool single_file;           // Stability key layout: a dense file, or an int4 file of one
    int group;                  // quantized: 32, 64 or 128
    const char *source_sha256;  // quantized: sd_qzo.source_sha256; NULL when absent
    const char *config;         // quantized: sd_qzo.config; NULL when absent
} sd_q4_header;

// Reads the header of an open .safetensors file (not a folder: a diffusers folder is
// always dense and in the diffusers layout). SQ_FAIL, naming `path`, for another
// sd_qzo.format or a group size other than 32, 64, 128.
int sd_q4_header_read(const sq_safetensors *st, const char *path, sd_q4_header *h);

typedef struct {
    char weights[4096];  // what sq_st_open opens: the transformer folder or the file
    char config[4096];   // its config.json; "" when there is none (single or quantised file)
    bool single_file;    // Stability key layout (model.diffusion_model.*)
    bool quantized;      // written by `sd-qzo quantize` (sd_qzo.format q4-v1)
    int group;           // quantized: its group size
} sd_base_model;

// Resolves `model` (pipeline folder, transformer folder, .safetensors file or an
// SD3.5 GGUF, mmdit/gguf_base.h) and opens its weights; *st is the caller's to
// close. Reads a quantised file's group.
int sd_base_open(const char *model, sd_base_model *base, sq_safetensors **st);
// Opens one model file's tensors: a GGUF through mmdit/gguf_base.h (quietly:
// sd_base_open says what the conversion did), anything else through sq_st_open.
int sd_base_st_open(const char *path, sq_safetensors **st);
// The tensors of a checkpoint that belong to the MMDiT.
bool sd_base_keep_tensor(const char *name, bool single_file);
// Source hash (above) of the open dense checkpoint; reads every tensor once.
void sd_base_source_sha256(const sq_safetensors *st, bool single_file, char hex[65]);
// The hash that identifies the base: a quantised file's recorded source hash, or
// the source hash of a dense checkpoint.
int sd_base_sha256(const sd_base_model *base, const sq_safetensors *st, char hex[65]);

#endif
