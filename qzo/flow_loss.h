// qzo/flow_loss.h: the SD3 rectified-flow training loss for one batch, in the shape
// the QZO optimiser wants (a callback evaluating the model under a perturbation).
// The noise n and σ per sample are fixed when the batch is built, so the + and -
// passes see exactly the same x_t and target (shared noise, docs/QZO.md):
//   x_t = (1 - σ) x0 + σ n,  target = n - x0,  model timestep = 1000 σ,
//   L = mean((mmdit(x_t) - target)²), accumulated in double.
// With a loss mask (sd_flow_batch_set_weights: weights w of each sample's latent
// pixels, shared by the channels), each sample's error is the weighted mean
//   L_b = sum_{c,h,w} w_b[h,w] (pred - target)² / (C · sum_{h,w} w_b[h,w])
// and L = mean over b of L_b (docs/QZO.md "Masked loss"). Without weights L_b is
// the plain mean, so L is the same as above.
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
    const sq_tensor *weights;        // (B,1,H,W) F32 on the model's device, or NULL (unmasked)
    int64_t forwards;                // passes run, for statistics
} sd_flow_batch;

// x0 and noise: (B,C,H,W) on the model's device/dtype; sigmas: B host floats in [0,1].
int sd_flow_batch_init(sd_flow_batch *fb, const sd_mmdit *m, sq_arena *scratch, const sq_tensor *x0,
                       const sq_tensor *noise, const float *sigmas, const sq_tensor *context, const sq_tensor *pooled);
void sd_flow_batch_free(sd_flow_batch *fb);
// Weights the loss per latent pixel (a loss mask): w (B,1,H,W) F32 on the model's
// device, values >= 0, every sample's sum > 0 (the caller refuses all-zero masks), kept
// by pointer (the caller owns it and keeps it alive). NULL: unmasked.
int sd_flow_batch_set_weights(sd_flow_batch *fb, const sq_tensor *w);
// sq_qzo_loss_fn: ctx is an sd_flow_batch.
int sd_flow_loss(void *ctx, const sq_perturb *p, double *loss);

#endif
