// mmdit/config.h: the SD3 / SD3.5 MMDiT hyper-parameters, read from a diffusers
// transformer/config.json, inferred from a single-file checkpoint's tensor shapes,
// or taken from the built-in presets of the published models.
#ifndef SD_MMDIT_CONFIG_H
#define SD_MMDIT_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/config.h"
#include "core/safetensors.h"

#define SD_MMDIT_MAX_LAYERS 64

typedef struct {
    int patch_size;               // 2
    int in_channels, out_channels; // 16, 16
    int num_layers;               // joint blocks: 38 (Large), 24 (Medium)
    int num_heads, head_dim;      // 38 x 64 (Large), 24 x 64 (Medium)
    int hidden;                   // num_heads * head_dim
    int joint_attention_dim;      // 4096: width of the text context
    int caption_projection_dim;   // = hidden
    int pooled_projection_dim;    // 2048
    int pos_embed_max_size;       // 192 (Large), 384 (Medium)
    int sample_size;              // 128
    bool qk_norm;                 // RMSNorm on q and k per head (SD3.5)
    bool dual[SD_MMDIT_MAX_LAYERS]; // MMDiT-X second self-attention (Medium: blocks 0..12)
} sd_mmdit_config;

typedef enum { SD_MMDIT_LARGE, SD_MMDIT_LARGE_TURBO, SD_MMDIT_MEDIUM } sd_mmdit_preset;

void sd_mmdit_config_preset(sd_mmdit_config *c, sd_mmdit_preset preset);
// Parses a diffusers SD3Transformer2DModel config.json.
int sd_mmdit_config_load(sd_mmdit_config *c, const char *config_json);
// Parses an already-loaded config.json (e.g. the copy a quantised file carries).
int sd_mmdit_config_parse(sd_mmdit_config *c, const sq_config *j, const char *origin);
// Infers the config from Stability single-file keys (prefix e.g. "model.diffusion_model.").
int sd_mmdit_config_infer(sd_mmdit_config *c, const sq_safetensors *st, const char *prefix);
int sd_mmdit_config_dual_count(const sd_mmdit_config *c);
// Parameter count of the model the config describes (all tensors).
int64_t sd_mmdit_config_params(const sd_mmdit_config *c);
void sd_mmdit_print_config(const sd_mmdit_config *c, FILE *f);

#endif
