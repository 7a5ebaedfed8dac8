// samples/scheduler.h: the sigma schedule of diffusers' FlowMatchEulerDiscreteScheduler
// as StableDiffusion3Pipeline drives it, read from a pipeline's
// scheduler/scheduler_config.json. Rectified flow: x_σ = (1 - σ) x0 + σ n; the model
// sees timestep 1000·σ and predicts n - x0; Euler steps walk σ from 1 down to 0.
//
// What is reproduced bit for bit (the float32/float64 mix matters at the 1e-7 level):
//   σ_max, σ_min  the training grid's ends, t = 1000/1000 and 1/1000 in float32,
//                 shifted in float32 (unless dynamic shifting: then unshifted);
//   grid          linspace(1000 σ_max, 1000 σ_min, steps) in float64, / 1000;
//   shift         static:  s·σ / (1 + (s - 1)·σ)  in float64, then float32;
//                 dynamic: exp(μ) / (exp(μ) + (1/σ - 1)) (or μ / (μ + 1/σ - 1) for
//                 time_shift_type "linear"), μ from the image's token count as the
//                 SD3 pipeline's calculate_shift;
//   shift_terminal  the LTX stretch, when set;
//   timesteps     float32 σ · 1000; the schedule gets a final σ = 0.
// Karras / exponential / beta sigmas, invert_sigmas and stochastic sampling are not
// used by any SD3.5 release and are refused with a message naming the file.
#ifndef SD_SCHEDULER_H
#define SD_SCHEDULER_H

#include <stdbool.h>

typedef struct {
    int num_train_timesteps;     // 1000
    double shift;                // 3.0 for SD3.5 Large / Large Turbo / Medium
    bool use_dynamic_shifting;   // false for SD3.5
    double base_shift, max_shift;            // dynamic shifting: μ range
    int base_image_seq_len, max_image_seq_len;
    bool time_shift_linear;      // time_shift_type "linear" (default "exponential")
    double shift_terminal;       // 0: none
} sd_flow_scheduler;

// SD3.5's published scheduler: 1000 training steps, static shift 3.0.
void sd_scheduler_default(sd_flow_scheduler *s);
// path: a scheduler_config.json, a scheduler/ folder or a pipeline folder holding one.
int sd_scheduler_load(sd_flow_scheduler *s, const char *path);

// sigmas (steps + 1, the last 0) and timesteps (steps, 1000·σ) for `steps` >= 1
// inference steps; image_seq_len is (H/p)·(W/p) latent tokens, only used by dynamic
// shifting. SQ_FAIL with a message for steps < 1.
int sd_scheduler_sigmas(const sd_flow_scheduler *s, int steps, int image_seq_len, float *sigmas, float *timesteps);

#endif
