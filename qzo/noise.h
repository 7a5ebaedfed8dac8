// qzo/noise.h: the random draws of a training step that are not the QZO
// perturbation: each sample's noise n and its σ. Both come from the counter-based
// Philox generator of kernels/rng.h on their own key streams, so they depend only on
// (seed, step, sample) — never on what ran before — and a resumed run, or the + and -
// passes of one step, see exactly the same values. The validation set uses a fixed
// step number, so its noise and σ never change across the run (comparable losses).
#ifndef SD_QZO_NOISE_H
#define SD_QZO_NOISE_H

#include <stdint.h>

typedef enum {
    SD_STREAM_NOISE = 1,     // training noise n
    SD_STREAM_SIGMA = 2,     // training σ
    SD_STREAM_VAL = 3,       // validation noise and σ
    SD_STREAM_DATA = 4,      // data order, dropout, crops (datasets/)
} sd_stream;

typedef enum { SD_T_LOGIT_NORMAL = 0, SD_T_UNIFORM, SD_T_MODE } sd_timestep_sampling;

typedef struct {
    sd_timestep_sampling sampling;
    float logit_mean, logit_std;   // logit_normal: u = sigmoid(N(mean, std))
    float mode_scale;              // mode: SD3 paper's f_mode(u; s)
    float shift;                   // σ = shift·u / (1 + (shift - 1)·u), as SD3's scheduler
} sd_sigma_config;

// The key of one stream: seed mixed with the stream id (splitmix64), so streams
// never share Philox counters.
uint64_t sd_stream_key(uint64_t seed, sd_stream stream);
// σ in (0, 1) for sample b of step `step`.
float sd_draw_sigma(const sd_sigma_config *c, uint64_t key, uint64_t step, int b);
// n standard normals for sample b of step `step`.
void sd_draw_noise(float *out, int64_t n, uint64_t key, uint64_t step, int b);

#endif
