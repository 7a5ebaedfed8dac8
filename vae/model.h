// vae/model.h: the SD3 VAE (diffusers AutoencoderKL: 16 latent channels, no quant
// convs), encoder and decoder, written against kernels/ops.h so one code path runs
// on the CPU (f32) and CUDA (bf16). Loads a diffusers `vae/` folder (or a pipeline
// folder holding one) or the `first_stage_model.` keys of a Stability single file.
//
// Latents are normalised as SD3 trains on them: x0 = (mean - shift) * scale, and
// decoding undoes that first. Images are (B,3,H,W) in [-1, 1], H and W multiples
// of 2^(levels-1) (8 for SD3).
#ifndef SD_VAE_MODEL_H
#define SD_VAE_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/tensor.h"
#include "kernels/linear.h"

#define SD_VAE_MAX_LEVELS 6

typedef struct {
    int in_channels, out_channels, latent_channels;
    int levels;                          // len(block_out_channels)
    int block_out[SD_VAE_MAX_LEVELS];    // 128, 256, 512, 512 for SD3
    int layers_per_block;                // 2
    int groups;                          // GroupNorm groups, 32
    float scaling_factor, shift_factor;  // 1.5305, 0.0609 for SD3
    bool mid_attention;
} sd_vae_config;

typedef struct {
    sq_tensor w, b;
} sd_conv;

typedef struct {
    sq_tensor gn1_w, gn1_b, gn2_w, gn2_b;
    sd_conv conv1, conv2, shortcut;      // shortcut.w empty when channels match
} sd_vae_resnet;

typedef struct {
    sq_tensor gn_w, gn_b;
    sq_linear q, k, v, out;
} sd_vae_attention;

typedef struct {
    sd_conv conv_in, conv_out;
    sd_vae_resnet *resnets[SD_VAE_MAX_LEVELS];   // per level
    sd_conv resample[SD_VAE_MAX_LEVELS];         // down (encoder) / up (decoder) conv, empty on the last level
    sd_vae_resnet mid1, mid2;
    sd_vae_attention mid_attn;
    sq_tensor norm_out_w, norm_out_b;
} sd_vae_half;

typedef struct {
    sd_vae_config cfg;
    sq_device device;
    sq_dtype dtype;
    sd_vae_half enc, dec;
} sd_vae;

int sd_vae_load(sd_vae *v, const char *path, sq_device device, sq_dtype dtype);
void sd_vae_free(sd_vae *v);
// A VAE of the given shape with random weights (benchmarks; no checkpoint needed).
int sd_vae_init_synthetic(sd_vae *v, const sd_vae_config *cfg, sq_device device, sq_dtype dtype, uint64_t seed);
// The config of a diffusers vae/ folder (config.json) or its path.
int sd_vae_config_load(sd_vae_config *c, const char *path);
// SD3's published VAE configuration.
void sd_vae_config_sd3(sd_vae_config *c);

// latent_out (B,latent,H/f,W/f) = normalised encoder mean of image (B,3,H,W).
int sd_vae_encode(const sd_vae *v, sq_arena *scratch, const sq_tensor *image, sq_tensor *latent_out);
// image_out (B,3,H*f,W*f) from a normalised latent.
int sd_vae_decode(const sd_vae *v, sq_arena *scratch, const sq_tensor *latent, sq_tensor *image_out);
// Down-sampling factor (8 for SD3).
int sd_vae_factor(const sd_vae_config *c);
// Scratch bytes an encode or decode of B images of H x W pixels needs on a device
// whose activations take `elem_bytes` (2 for bf16, 4 for f32): a few live
// full-resolution tensors of the widest level that runs at full resolution (the
// decoder up-samples before its last channel reduction) plus the mid-block
// attention's (HW/f²)² fp32 scores. An over-estimate by design: running out of
// arena mid-decode is a failed run.
size_t sd_vae_scratch_estimate(const sd_vae_config *c, int B, int H, int W, int elem_bytes);

#endif
