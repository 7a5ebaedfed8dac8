// qzo/qzo.c: the QZO step. Model-agnostic: losses come from a callback, scale
// updates go through kernels/quant.h so they run on whichever device holds them.
#include "qzo/qzo.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

// The one home of the QZO hyper-parameters' defaults: `sd-qzo train`'s options,
// `sd-qzo bench` and checkpoint reading all start from here. The values are chosen
// by bench/LEARNING.md (measured runs decide them; change them there and here).
// Today they are the ones `sd-qzo train` has always used: the QZO authors' SD3.5
// Large settings (maifoundations/QZO, stable_diffusion/text_to_image/
// stable_diffusion_3.5l_QZO_4bit.sh + args.py: lr 1e-5, zo_eps 1e-3, constant
// schedule, one query) taken as they are, with |d| clipped at 100 (theirs is left at
// 9999999, i.e. off). Their scale is a bitsandbytes NF4 block absmax (codes in
// [-1, 1]); ours is absmax/7-ish (codes in [-7, 7]), so the same relative
// perturbation would be eps/7 and the same relative update lr/49.
void sq_qzo_config_defaults(sq_qzo_config *c) {
    memset(c, 0, sizeof *c);
    c->lr = 1e-5f;
    c->eps = 1e-3f;
    c->clip = 100.0f;
    c->adaptive_clip = 0.0f;
    c->queries = 1;
    c->seed = 0;
    c->schedule = SQ_LR_CONSTANT;
    c->warmup_steps = 0;
}

static const char *const schedule_names[] = {"constant", "cosine", "linear"};

const char *sq_lr_schedule_name(sq_lr_schedule s) {
    return (unsigned)s < sizeof schedule_names / sizeof schedule_names[0] ? schedule_names[s] : "?";
}

int sq_lr_schedule_parse(const char *name) {
    for (int i = 0; i < (int)(sizeof schedule_names / sizeof schedule_names[0]); i++)
        if (!strcmp(name, schedule_names[i])) return i;
    return -1;
}

void sq_qzo_state_init(sq_qzo_state *s) { memset(s, 0, sizeof *s); }

float sq_qzo_lr_at(const sq_qzo_config *c, int64_t step) {
    float lr = c->lr;
    if (c->warmup_steps > 0 && step < c->warmup_steps) return lr * (float)(step + 1) / (float)c->warmup_steps;
    if (c->total_steps > c->warmup_steps && c->schedule != SQ_LR_CONSTANT) {
        double t = (double)(step - c->warmup_steps) / (double)(c->total_steps - c->warmup_steps);
        if (t > 1) t = 1;
        if (c->schedule == SQ_LR_COSINE) return (float)(lr * 0.5 * (1.0 + cos(M_PI * t)));
        return (float)(lr * (1.0 - t));
    }
    return lr;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static float current_clip(const sq_qzo_config *c, const sq_qzo_state *s) {
    if (c->adaptive_clip > 0 && s->history_count >= 8) {
        float tmp[SQ_QZO_CLIP_WINDOW];
        memcpy(tmp, s->abs_d_history, (size_t)s->history_count * sizeof(float));
        qsort(tmp, (size_t)s->history_count, sizeof(float), cmp_float);
        float med = s->history_count % 2 ? tmp[s->history_count / 2]
                                         : 0.5f * (tmp[s->history_count / 2 - 1] + tmp[s->history_count / 2]);
        return c->adaptive_clip * med;
    }
    return c->clip;
}

static void remember_abs_d(sq_qzo_state *s, float v) {
    s->abs_d_history[s->history_pos] = v;
    s->history_pos = (s->history_pos + 1) % SQ_QZO_CLIP_WINDOW;
    if (s->history_count < SQ_QZO_CLIP_WINDOW) s->history_count++;
}

int sq_qzo_step(const sq_qzo_config *c, sq_qzo_state *state, const sq_qzo_params *params, sq_qzo_loss_fn loss,
                void *ctx, sq_qzo_step_info *info) {
    if (c->queries < 1 || c->queries > 64) return sq_errorf("qzo: queries must be in 1..64, not %d", c->queries);
    if (!(c->eps > 0)) return sq_errorf("qzo: eps must be > 0");
    float d_clipped[64];
    uint64_t counters[64];
    sq_qzo_step_info tmp;
    if (!info) info = &tmp;
    memset(info, 0, sizeof *info);
    float clip = current_clip(c, state);
    info->clip_used = clip;
    for (int j = 0; j < c->queries; j++) {
        counters[j] = (uint64_t)state->step * (uint64_t)c->queries + (uint64_t)j;
        sq_perturb p = {.seed = c->seed, .step = counters[j], .eps = c->eps, .sign = +1};
        double lp, lm;
        if (loss(ctx, &p, &lp) != SQ_OK) return sq_error_context("qzo step %lld: + pass", (long long)state->step);
        p.sign = -1;
        if (loss(ctx, &p, &lm) != SQ_OK) return sq_error_context("qzo step %lld: - pass", (long long)state->step);
        if (!isfinite(lp) || !isfinite(lm))
            return sq_errorf("qzo step %lld: loss is not finite (L+ = %g, L- = %g); lower --eps or --lr",
                             (long long)state->step, lp, lm);
        // The difference is taken in double: L+ and L- agree to many digits.
        double d = (lp - lm) / (2.0 * (double)c->eps);
        double dc = d;
        if (clip > 0) {
            if (dc > clip) dc = clip;
            if (dc < -clip) dc = -clip;
            if (dc != d) info->clipped_count++;
        }
        d_clipped[j] = (float)dc;
        remember_abs_d(state, (float)fabs(d));
        info->loss_plus = lp;
        info->loss_minus = lm;
        info->d_raw = d;
        info->d_clipped = dc;
        info->loss_mean += 0.5 * (lp + lm) / c->queries;
    }
    float lr = sq_qzo_lr_at(c, state->step);
    info->lr = lr;
    for (int j = 0; j < c->queries; j++) {
        float coeff = lr * d_clipped[j] / (float)c->queries;
        for (int l = 0; l < params->count; l++) {
            sq_perturb p = {.seed = c->seed, .step = counters[j], .index_base = params->index_base[l]};
            sq_qzo_update(params->scales[l], &p, coeff);
        }
    }
    state->step++;
    return SQ_OK;
}
