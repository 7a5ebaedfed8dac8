// qzo/flow_loss.h: the SD3 rectified-flow training loss for one batch, in the shape
// the QZO optimiser wants (a callback evaluating the model under a perturbation).
// The noise n and σ per sample are fixed when the batch is built, so the + and -
// passes see exactly the same x_t and target (shared noise, docs/QZO.md):
//   x_t = (1 - σ) x0 + σ n,  target = n - x0,  model timestep = 1000 σ,
//   L = mean((mmdit(x_t) - target)²), accumulated in double.
#ifndef SD_QZO_FLOW_LOSS_H
#define SD_QZO_FLOW_LOSS_H

#include "core/arena.h"
#include "kernels/quant.h"
#include "mmdit/model.h"

typedef struct {
    const sd_mmdit *model;
    sq_arena *scratch;
    sq_tensor xt, target, pred;      // (B,C,H,W), model dtype and device (owned)
    const sq_tensor *context;        // (B,T,joint_dim)
    const sq_tensor *pooled;         // (B,pooled_dim)
    float *timesteps;                // (B) host, 1000 σ
    int64_t forwards;                // passes run, for statistics
} sd_flow_batch;

// x0 and noise: (B,C,H,W) on the model's device/dtype; sigmas: B host floats in [0,1].
int sd_flow_batch_init(sd_flow_batch *fb, const sd_mmdit *m, sq_arena *scratch, const sq_tensor *x0,
                       const sq_tensor *noise, const float *sigmas, const sq_tensor *context, const sq_tensor *pooled);
void sd_flow_batch_free(sd_flow_batch *fb);
// sq_qzo_loss_fn: ctx is an sd_flow_batch.
int sd_flow_loss(void *ctx, const sq_perturb *p, double *loss);

#endif
