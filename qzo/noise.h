// qzo/noise.h: the random draws of a training step that are not the QZO
// perturbation: each sample's noise n and its σ. Both come from the counter-based
// Philox generator of kernels/rng.h on their own key streams, so they depend only on
// (seed, step, sample) — never on what ran before — and a resumed run, or the + and -
// passes of one step, see exactly the same values. The validation set uses a fixed
// step number, so its noise and σ never change across the run (comparable losses).
#ifndef SD_QZO_NOISE_H
#define SD_QZO_NOISE_H

#include <stdint.h>

#include "kernels/rng.h"

typedef enum { SD_T_LOGIT_NORMAL = 0, SD_T_UNIFORM, SD_T_MODE } sd_timestep_sampling;

typedef struct {
    sd_timestep_sampling sampling;
    float logit_mean, logit_std;   // logit_normal: u = sigmoid(N(mean, std))
    float mode_scale;              // mode: SD3 paper's f_mode(u; s)
    float shift;                   // σ = shift·u / (1 + (shift - 1)·u), as SD3's scheduler
} sd_sigma_config;

// Each draw's key is sq_rng_stream_key(seed, SQ_RNG_STREAM_*) of kernels/rng.h, the
// one list of streams, so no two kinds of draw share Philox counters.
// σ in (0, 1) for sample b of step `step`.
float sd_draw_sigma(const sd_sigma_config *c, uint64_t key, uint64_t step, int b);
// n standard normals for sample b of step `step`.
void sd_draw_noise(float *out, int64_t n, uint64_t key, uint64_t step, int b);

#endif
