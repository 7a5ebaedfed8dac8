// app/export_plan.h: what `sd-qzo export` writes, worked out before anything is
// written (internal to app/export*.c). The plan lists every MMDiT tensor by its
// diffusers name with where its values come from: a dense base tensor (or one third
// of a fused single-file qkv, or a half-swapped adaLN), and for the quantised
// linears the int4 codes (read from a quantised base, or made here by the same
// quantiser training uses) and the checkpoint's scales. Opening the plan checks the
// checkpoint against the base (hash, group size, one scale tensor per int4 layer of
// the right shape), so a bad pairing fails before the output folder is touched.
#ifndef SD_EXPORT_PLAN_H
#define SD_EXPORT_PLAN_H

#include "mmdit/base_model.h"
#include "mmdit/config.h"
#include "qzo/checkpoint.h"

typedef struct {
    char name[256];             // diffusers name
    int ndim;
    int64_t shape[SQ_ST_MAX_DIMS];  // diffusers shape
    const sq_st_entry *src;     // base tensor: dense values, or int4 codes (U8) of a quantised base
    int part;                   // rows [part*R, (part+1)*R) of a fused qkv src, or -1: all of src
    bool src_swapped;           // src holds the two row halves swapped (single-file adaLN)
    bool quantized;             // written as s ⊙ q with the checkpoint's scales
    bool codes_in_src;          // quantized: src holds the codes (else src is dense, quantised here)
    const sq_st_entry *scales;  // quantized: checkpoint's F32 (R, K/G)
    char single_key[256];       // Stability key without "model.diffusion_model."
    int single_part;            // which third of the fused single-file tensor, or -1
    bool single_swapped;        // written with its halves swapped in the single file
} sd_export_tensor;

typedef struct {
    sd_base_model base;
    sq_safetensors *st, *ckpt;
    sq_checkpoint_info info;
    char base_sha256[65];
    sd_mmdit_config cfg;
    char *config_json;          // diffusers config.json text of the output (malloc'ed)
    sd_export_tensor *t;        // sorted by diffusers name
    int n, n_quantized, group;
    sq_dtype base_dtype;        // float dtype of the base's unquantised tensors
    bool base_dtype_set;
    int64_t max_numel;          // largest tensor, for scratch buffers
    bool ema;                   // a layer's scales are its EMA tensor where the checkpoint has one
} sd_export_plan;

// ema: take each layer's "ema." tensor where there is one (a frozen layer has none:
// its scales never moved); SQ_FAIL when the checkpoint has no EMA.
int sd_export_plan_open(sd_export_plan *p, const char *model, const char *scales, bool ema);
void sd_export_plan_close(sd_export_plan *p);

typedef struct {
    float *values;              // max_numel floats: the result
    uint8_t *codes;             // max_numel / 2 bytes
    float *scales;              // max_numel / group floats
} sd_export_scratch;
int sd_export_scratch_alloc(sd_export_scratch *s, const sd_export_plan *p);
void sd_export_scratch_free(sd_export_scratch *s);
// The f32 values of t in the diffusers layout, into s->values.
int sd_export_materialise(const sd_export_plan *p, const sd_export_tensor *t, sd_export_scratch *s);

#endif
