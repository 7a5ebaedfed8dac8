// qzo/qzo.h: the QZO optimiser (two-point SPSA on int4 quantisation scales with
// directional-derivative clipping), independent of any model: the caller supplies
// the trained scale tensors and a loss function that evaluates the model under a
// given perturbation. See docs/QZO.md.
//
// One step k, with Q queries (perturbations):
//   for j in 0..Q-1, perturbation id c = k·Q + j (the RNG counter of kernels/rng.h):
//     L+ = loss(s ⊕ ε z_c), L- = loss(s ⊖ ε z_c)   (same batch, noise, timesteps)
//     d_j = clip((L+ - L-) / 2ε, -C, C)
//   for j: s = max(s - (lr_k / Q) · d_j · z_c, 0)  (z_c regenerated, never stored)
// where ⊕ is s + ε z (absolute, the paper's) or s·(1 + ε z) (relative, the default),
// and the relative update is s·(1 - (lr_k / Q) · d_j · z_c); with momentum the
// update replays the recent (c, d) terms with weights (1 - β) β^age (qzo.c).
// Every quantity is a function of (seed, k, the scales, the batch), so a run
// resumed at step k with the saved scales and state continues bit for bit.
#ifndef SQ_QZO_H
#define SQ_QZO_H

#include <stdbool.h>
#include <stdint.h>

#include "core/tensor.h"
#include "kernels/quant.h"

typedef enum { SQ_LR_CONSTANT = 0, SQ_LR_COSINE, SQ_LR_LINEAR } sq_lr_schedule;

#define SQ_QZO_CLIP_WINDOW 64
#define SQ_QZO_LOSS_WINDOW 64      // accepted steps' losses the spike test takes its median over
#define SQ_QZO_MOMENTUM_TERMS 64   // (perturbation, d) pairs replayed for momentum (and undone on a spike)

typedef struct {
    float lr;                 // γ, peak learning rate
    float eps;                // ε, perturbation of the scales (absolute, or a fraction of each scale)
    int relative;             // 1: s·(1 ± ε z) and s ← s·(1 − lr d z); 0: the paper's s ± ε z, s ← s − lr d z
    float momentum;           // β of momentum on the update direction (0: off), replayed from stored (seed, d)
    float clip;               // C for |d|; <= 0 disables clipping
    float adaptive_clip;      // > 0: C = adaptive_clip × running median |d| (once 8 values are seen)
    int queries;              // Q perturbations per step
    uint64_t seed;            // perturbation RNG key
    sq_lr_schedule schedule;
    int warmup_steps;         // linear warm-up from 0 to lr
    int total_steps;          // for cosine / linear decay
    float spike_factor;       // a step whose L+ or L- exceeds this × the running median loss is discarded (<= 0: off)
    int max_bad_steps;        // discarded steps in a row after which the run stops
} sq_qzo_config;

// One applied update term: the perturbation id, its step and its d (clipped; it
// is divided by Q when applied); momentum replays them, a spike undoes the last step's.
typedef struct {
    uint64_t counter;
    int64_t step;
    float d;
} sq_qzo_term;

// State that must be checkpointed with the scales for an exact resume.
typedef struct {
    int64_t step;                         // next step to run
    float abs_d_history[SQ_QZO_CLIP_WINDOW];
    int history_count;                    // values in the ring (≤ window)
    int history_pos;
    float lr_scale;                       // halved at each discarded step (1 at the start)
    int bad_streak;                       // discarded steps in a row
    int64_t bad_total;                    // discarded steps in the run
    int64_t clipped_total, queries_total; // accepted queries whose d hit the clip, and all accepted queries
    float loss_history[SQ_QZO_LOSS_WINDOW];  // accepted steps' mean losses (ring)
    int loss_count, loss_pos;
    sq_qzo_term terms[SQ_QZO_MOMENTUM_TERMS];  // most recent update terms (ring, newest at terms_pos - 1)
    int term_count, term_pos;
    float last_coeff[SQ_QZO_MOMENTUM_TERMS];   // coefficient the last accepted step applied to each ring slot (0: none)
    int last_new;                              // terms the last accepted step added to the ring
} sq_qzo_state;

// The trained parameters: every quantised layer's scales and its global index base.
typedef struct {
    sq_tensor **scales;
    const uint64_t *index_base;
    int count;
} sq_qzo_params;

// Evaluates the loss (fp32, but returned as double) with every layer's scales
// perturbed by p (p->index_base is filled per layer by the model from its own
// index table; the optimiser sets seed, step, eps and sign). SQ_FAIL on error.
typedef int (*sq_qzo_loss_fn)(void *ctx, const sq_perturb *p, double *loss);

typedef struct {
    double loss_plus, loss_minus;  // of the last query
    double d_raw, d_clipped;       // of the last query
    double loss_mean;              // mean over queries of (L+ + L-) / 2
    float lr;
    float clip_used;
    int clipped_count;             // queries whose d hit the clip
    bool discarded;                // the step was thrown away (non-finite loss or a spike); no update applied
    char why[160];                 // when discarded: what happened, for the log
} sq_qzo_step_info;

// The defaults of every QZO hyper-parameter (the only place they are written).
void sq_qzo_config_defaults(sq_qzo_config *c);
// "constant", "cosine", "linear"; parse returns -1 for any other name.
const char *sq_lr_schedule_name(sq_lr_schedule s);
int sq_lr_schedule_parse(const char *name);
float sq_qzo_lr_at(const sq_qzo_config *c, int64_t step);
void sq_qzo_state_init(sq_qzo_state *s);
// Runs one step: 2·Q loss evaluations and the update. Advances state->step.
// A step with a non-finite loss, or with L+ or L- above spike_factor × the running
// median of accepted losses, is discarded: no update, the previous step's update is
// undone (the spike is most often its doing), the learning rate is halved from then
// on, and info->discarded / info->why say so. After max_bad_steps discarded steps in
// a row the step fails with a message naming the flags to change.
int sq_qzo_step(const sq_qzo_config *c, sq_qzo_state *state, const sq_qzo_params *params, sq_qzo_loss_fn loss,
                void *ctx, sq_qzo_step_info *info);

// One step shared by several processes (app/train_ranks.c over distributed/exchange.h).
// This process evaluates only queries [first_query, first_query + query_count);
// then `combine` must leave in lp[0..Q) and lm[0..Q) the step's losses of all Q
// queries, the same bits in every process: the gathered values for a split of the
// queries, the shard-weighted means for a split of the batch (every process runs
// every query on its shard). All that follows (the spike test, d, the update) then
// runs identically everywhere, so the scales stay bit-identical across processes.
typedef int (*sq_qzo_combine_fn)(void *ctx, int64_t step, double *lp, double *lm, int queries);
typedef struct {
    int first_query, query_count;
    sq_qzo_combine_fn combine;
    void *ctx;
} sq_qzo_split;
// split NULL: sq_qzo_step.
int sq_qzo_step_split(const sq_qzo_config *c, sq_qzo_state *state, const sq_qzo_params *params, sq_qzo_loss_fn loss,
                      void *ctx, const sq_qzo_split *split, sq_qzo_step_info *info);

#endif
