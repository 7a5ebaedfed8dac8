// qzo/flow_loss.c: rectified-flow loss of a fixed batch (see qzo/flow_loss.h).
#include "qzo/flow_loss.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "kernels/ops.h"

int sd_flow_batch_init(sd_flow_batch *fb, const sd_mmdit *m, sq_arena *scratch, const sq_tensor *x0,
                       const sq_tensor *noise, const float *sigmas, const sq_tensor *context, const sq_tensor *pooled) {
    memset(fb, 0, sizeof *fb);
    fb->model = m;
    fb->scratch = scratch;
    fb->context = context;
    fb->pooled = pooled;
    int64_t B = x0->shape[0];
    if (!sq_tensor_same_shape(x0, noise)) return sq_errorf("flow loss: latents and noise differ in shape");
    fb->timesteps = malloc((size_t)B * sizeof(float));
    if (!fb->timesteps) return sq_errorf("out of host memory");
    if (sq_tensor_alloc(&fb->xt, m->dtype, m->device, 4, x0->shape) || sq_tensor_alloc(&fb->target, m->dtype, m->device, 4, x0->shape) ||
        sq_tensor_alloc(&fb->pred, m->dtype, m->device, 4, x0->shape)) {
        sd_flow_batch_free(fb);
        return SQ_FAIL;
    }
    int64_t per = sq_tensor_numel(x0) / B;
    size_t es = sq_dtype_bytes(x0->dtype, 1);
    for (int64_t b = 0; b < B; b++) {
        float s = sigmas[b];
        if (!(s >= 0.0f && s <= 1.0f)) { sd_flow_batch_free(fb); return sq_errorf("flow loss: sigma %g outside [0, 1]", s); }
        fb->timesteps[b] = 1000.0f * s;
        size_t off = (size_t)(b * per) * es;
        sq_tensor x0b = sq_tensor_view((char *)x0->data + off, x0->dtype, x0->device, 1, &per);
        sq_tensor nb = sq_tensor_view((char *)noise->data + off, noise->dtype, noise->device, 1, &per);
        sq_tensor xtb = sq_tensor_view((char *)fb->xt.data + off, fb->xt.dtype, fb->xt.device, 1, &per);
        sq_tensor tb = sq_tensor_view((char *)fb->target.data + off, fb->target.dtype, fb->target.device, 1, &per);
        sq_axpby(&xtb, 1.0f - s, &x0b, s, &nb);
        sq_sub(&tb, &nb, &x0b);
    }
    return SQ_OK;
}

void sd_flow_batch_free(sd_flow_batch *fb) {
    sq_tensor_free(&fb->xt);
    sq_tensor_free(&fb->target);
    sq_tensor_free(&fb->pred);
    free(fb->timesteps);
    fb->timesteps = NULL;
}

int sd_flow_batch_set_weights(sd_flow_batch *fb, const sq_tensor *w) {
    fb->weights = NULL;
    if (!w) return SQ_OK;
    const int64_t *s = fb->xt.shape;
    if (w->ndim != 4 || w->shape[0] != s[0] || w->shape[1] != 1 || w->shape[2] != s[2] || w->shape[3] != s[3])
        return sq_errorf("flow loss: loss weights of shape (%lld,%lld,%lld,%lld) for latents (%lld,%lld,%lld,%lld)",
                         (long long)w->shape[0], (long long)(w->ndim > 1 ? w->shape[1] : 0),
                         (long long)(w->ndim > 2 ? w->shape[2] : 0), (long long)(w->ndim > 3 ? w->shape[3] : 0),
                         (long long)s[0], (long long)s[1], (long long)s[2], (long long)s[3]);
    if (w->dtype != SQ_F32 || w->device != fb->xt.device)
        return sq_errorf("flow loss: loss weights must be F32 on the model's device");
    fb->weights = w;
    return SQ_OK;
}

// The mean over samples of each sample's weighted mean (flow_loss.h).
static double weighted_loss(const sd_flow_batch *fb) {
    int64_t B = fb->pred.shape[0], per = sq_tensor_numel(&fb->pred) / B, P = fb->pred.shape[2] * fb->pred.shape[3];
    size_t es = sq_dtype_bytes(fb->pred.dtype, 1);
    double sum = 0;
    for (int64_t b = 0; b < B; b++) {
        size_t off = (size_t)(b * per) * es;
        sq_tensor pb = sq_tensor_view((char *)fb->pred.data + off, fb->pred.dtype, fb->pred.device, 1, &per);
        sq_tensor tb = sq_tensor_view((char *)fb->target.data + off, fb->target.dtype, fb->target.device, 1, &per);
        sq_tensor wb = sq_tensor_view((float *)fb->weights->data + b * P, SQ_F32, fb->weights->device, 1, &P);
        sum += sq_weighted_mse(&pb, &tb, &wb);
    }
    return sum / (double)B;
}

int sd_flow_loss(void *ctx, const sq_perturb *p, double *loss) {
    sd_flow_batch *fb = ctx;
    if (sd_mmdit_forward(fb->model, fb->scratch, &fb->xt, fb->timesteps, fb->context, fb->pooled, p, &fb->pred, NULL) != SQ_OK)
        return SQ_FAIL;
    fb->forwards++;
    *loss = fb->weights ? weighted_loss(fb) : sq_mse(&fb->pred, &fb->target);
    return SQ_OK;
}
