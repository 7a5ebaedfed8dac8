// app/train_ema.c: --ema, an fp32 exponential moving average of the trained scales
// on the scales' device (docs/QZO.md), updated after every accepted step, validated
// beside the scales and saved in the checkpoint (app/train_loop_state.h).
#include <stdio.h>
#include <stdlib.h>

#include "app/train_loop_state.h"
#include "core/error.h"
#include "kernels/quant.h"

// One F32 copy of every trained layer's scales, on their device, named for the
// checkpoint; it starts equal to the scales (resume overwrites it with the saved one).
int sd_train_ema_init(loop *L) {
    int n = L->tl.count;
    L->ema = calloc((size_t)n + 1, sizeof *L->ema);
    L->ema_named = calloc((size_t)n + 1, sizeof *L->ema_named);
    L->ema_names = calloc((size_t)n + 1, sizeof *L->ema_names);
    if (!L->ema || !L->ema_named || !L->ema_names) return sq_errorf("out of host memory");
    for (int i = 0; i < n; i++) {
        const sq_tensor *s = L->tl.scales[i];
        if (sq_tensor_alloc(&L->ema[i], SQ_F32, s->device, s->ndim, s->shape) != SQ_OK)
            return sq_error_context("the EMA of the scales (--ema %g)", (double)L->t->opt.ema);
        if (sq_tensor_copy(&L->ema[i], s) != SQ_OK) return SQ_FAIL;
        snprintf(L->ema_names[i], sizeof L->ema_names[i], "%s%s", SQ_CHECKPOINT_EMA_PREFIX, L->tl.names[i]);
        L->ema_named[i] = (sq_named_scales){L->ema_names[i], &L->ema[i]};
    }
    return SQ_OK;
}

void sd_train_ema_free(loop *L) {
    for (int i = 0; L->ema && i < L->tl.count; i++) sq_tensor_free(&L->ema[i]);
    free(L->ema);
    free(L->ema_named);
    free(L->ema_names);
    L->ema = NULL;
    L->ema_named = NULL;
    L->ema_names = NULL;
}

void sd_train_ema_update(loop *L) {
    for (int i = 0; i < L->tl.count; i++) sq_ema_update(&L->ema[i], L->tl.scales[i], L->t->opt.ema);
    L->ema_updates++;
}

// Exchanges the trained scales with their EMA in the model (tensor handles only, no
// copy): the model then runs with the EMA; a second call puts the scales back.
static void ema_swap(loop *L) {
    for (int i = 0; i < L->tl.count; i++) {
        sq_tensor tmp = *L->tl.scales[i];
        *L->tl.scales[i] = L->ema[i];
        L->ema[i] = tmp;
    }
}

int sd_train_val_loss_ema(loop *L, double *out) {
    ema_swap(L);
    int rc = sd_train_val_loss(&L->eval, &L->m, &L->scratch, out);
    ema_swap(L);
    return rc;
}
