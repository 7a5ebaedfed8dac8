// samples/sampler.h: text-to-image sampling as diffusers' StableDiffusion3Pipeline
// does it: flow-matching Euler steps (samples/scheduler.h) with classifier-free
// guidance, then the VAE decode. Text conditioning comes in precomputed (context
// and pooled vectors from text_encoders/conditioning.h), so a training run can
// encode its preview prompts once and free the text encoders.
//
// One step, as pipeline_stable_diffusion_3.py's loop:
//   CFG (guidance > 1): the model runs ONE batch of 2B, uncond first then cond,
//     v = v_u + g·(v_c - v_u);  guidance <= 1 (Turbo): a batch of B, cond only.
//   x ← x + (σ_next - σ)·v, in float32; the last step goes to σ = 0.
// The latents stay float32 on the model's device whatever the model's dtype (on
// CUDA the bf16 model input is a rounded copy), like the scheduler's float32 step.
//
// Initial latents: from the caller (a file, for reproducibility tests), or drawn
// with kernels/rng.h's Philox normals: image b of a call uses key seed + b and
// counter "step" SD_SAMPLE_RNG_STREAM, element i of its (C,h,w) latent being
// sq_rng_normal(seed + b, SD_SAMPLE_RNG_STREAM, i). So an image depends on its own
// seed only (not on the batch it was drawn in), and CPU and CUDA start identically.
//
// Shapes: B images, C latent channels (16), h = H/8, w = W/8 (the VAE factor),
// T context tokens, Dc context width (joint_attention_dim), P pooled width.
#ifndef SD_SAMPLER_H
#define SD_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/tensor.h"
#include "mmdit/model.h"
#include "samples/scheduler.h"
#include "vae/model.h"

// The Philox counter word reserved for initial latents ("SAMPLE" in ASCII): far
// above any training step, so a seed shared with a QZO run never repeats its z.
#define SD_SAMPLE_RNG_STREAM 0x53414D504C45ull
#define SD_SAMPLE_SD3_VAE_FACTOR 8   // SD3's VAE down-sampling, the default of vae_factor

// Called after every step with the updated latents (B,C,h,w), F32 on the model's
// device. step counts from 0; return SQ_FAIL (message set) to stop sampling.
typedef int (*sd_sample_step_fn)(void *ctx, int step, int steps, float timestep, const sq_tensor *latents);

typedef struct {
    int batch;                 // B >= 1
    int steps;                 // >= 1
    float guidance;            // CFG scale; <= 1 skips CFG (the uncond branch is not run)
    int width, height;         // pixels, multiples of vae_factor x patch size (16 for SD3)
    int vae_factor;            // pixels per latent: 0 means SD3's 8; sd_sample uses the VAE's
    uint64_t seed;             // image b starts from seed + b (see above)
    const float *init_latents; // NULL, or host (B,C,h,w) f32 starting latents (seed unused)
    sd_sample_step_fn on_step; // optional
    void *on_step_ctx;
} sd_sample_options;

// Conditioning of one branch, on the model's device and dtype:
// context (B,T,Dc) or (1,T,Dc) broadcast to all B images; pooled (B,P) or (1,P).
typedef struct {
    const sq_tensor *context;
    const sq_tensor *pooled;
} sd_sample_cond;

// Denoises B latents. cond is required; uncond (same T) only when guidance > 1.
// latents_out: host (B,C,h,w) f32. Scratch comes from `scratch` (on the model's
// device) and is rewound before returning. SQ_FAIL with a message on bad sizes,
// mismatched conditioning, an exhausted arena or a callback's failure.
int sd_sample_latents(const sd_mmdit *m, const sd_flow_scheduler *sch, sq_arena *scratch, const sd_sample_cond *cond,
                      const sd_sample_cond *uncond, const sd_sample_options *o, float *latents_out);

// Decodes B latents (host (B,C,h,w) f32, normalised as the sampler leaves them) one
// image at a time into host images (B,3,f·h,f·w) f32 in [0,1]: diffusers'
// output_type="np" values, (decode/2 + 0.5).clamp(0,1), here channel-first.
// scratch lives on the VAE's device.
int sd_decode_latents(const sd_vae *v, sq_arena *scratch, const float *latents, int B, int C, int h, int w,
                      float *images_out);

// Both of the above (MMDiT and VAE loaded together, e.g. training previews);
// o->vae_factor is taken from the VAE.
int sd_sample(const sd_mmdit *m, const sd_vae *v, const sd_flow_scheduler *sch, sq_arena *mmdit_scratch,
              sq_arena *vae_scratch, const sd_sample_cond *cond, const sd_sample_cond *uncond,
              const sd_sample_options *o, float *images_out);

// (B,3,H,W) [0,1] floats -> (B,H,W,3) RGB bytes, round(x·255) half to even as
// numpy's round in diffusers' numpy_to_pil.
void sd_images_to_rgb8(const float *images, int B, int H, int W, uint8_t *rgb);

// Scratch bytes for sd_sample_latents of B images of W x H pixels with T context
// tokens (CFG doubles the batch), activations of `elem_bytes` (4 f32, 2 bf16):
// the MMDiT forward's estimate plus the sampler's own buffers. vae: when non-NULL
// the result also covers sd_decode_latents on an f32 VAE, so one arena serves both.
size_t sd_sample_scratch_bytes(const sd_mmdit_config *c, const sd_vae_config *vae, int B, bool cfg, int W, int H,
                               int vae_factor, int T, int elem_bytes);

// Draws the initial latents of `sd_sample_options.seed` into host (B,C,h,w).
void sd_sample_noise(uint64_t seed, int B, int C, int h, int w, float *out);

#endif
