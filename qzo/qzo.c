// qzo/qzo.c: the QZO step. Model-agnostic: losses come from a callback, scale
// updates go through kernels/quant.h so they run on whichever device holds them.
#include "qzo/qzo.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

// The one home of the QZO hyper-parameters' defaults: `sd-qzo train`'s options,
// `sd-qzo bench` and checkpoint reading all start from here. Each value comes from
// the sweep of bench/LEARNING.md (an SD3-architecture model pretrained on emoji,
// fine-tuned on the held-out "Animals & Nature" group), checked on the demo and on
// "Food & Drink"; change them there and here together.
//   - relative perturbation and update: one eps and lr for layers whose scales
//     differ in size; the paper's absolute form needs both re-tuned per model;
//   - eps 1e-2: each scale moves by 1 % (the paper's eps 1e-3 on NF4 absmax
//     scales is about 1.6 % of a scale on SD3.5-sized weights); 0.3 % to 5 % all
//     gave the same curves;
//   - four queries at lr 3e-2: averaging four estimates lets the rate triple (one
//     query is stable up to 1e-2: 3e-2 drifted upwards, 1e-1 diverged), and per
//     second of GPU time that learned fastest of 1, 2, 4 and 8 queries and batch 16;
//   - no clip: fixed and adaptive clips only slowed the drop; the spike test is
//     the guard against broken steps instead;
//   - constant schedule, no momentum (momentum 0.9 did not help).
// On a model with far more scales (SD3.5 Large: 125 M against the benchmark's
// 0.28 M) the stable rate is lower: --lr auto measures it.
void sq_qzo_config_defaults(sq_qzo_config *c) {
    memset(c, 0, sizeof *c);
    c->lr = 3e-2f;
    c->eps = 1e-2f;
    c->relative = 1;
    c->momentum = 0.0f;
    c->clip = 0.0f;
    c->adaptive_clip = 0.0f;
    c->queries = 4;
    c->seed = 0;
    c->schedule = SQ_LR_CONSTANT;
    c->warmup_steps = 0;
    c->spike_factor = 10.0f;   // flow-matching losses vary a few-fold with σ; ten-fold is a broken step
    c->max_bad_steps = 8;
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

void sq_qzo_state_init(sq_qzo_state *s) {
    memset(s, 0, sizeof *s);
    s->lr_scale = 1.0f;
}

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

static float median_of(const float *v, int n) {
    float tmp[SQ_QZO_LOSS_WINDOW > SQ_QZO_CLIP_WINDOW ? SQ_QZO_LOSS_WINDOW : SQ_QZO_CLIP_WINDOW];
    memcpy(tmp, v, (size_t)n * sizeof(float));
    qsort(tmp, (size_t)n, sizeof(float), cmp_float);
    return n % 2 ? tmp[n / 2] : 0.5f * (tmp[n / 2 - 1] + tmp[n / 2]);
}

static float current_clip(const sq_qzo_config *c, const sq_qzo_state *s) {
    if (c->adaptive_clip > 0 && s->history_count >= 8)
        return c->adaptive_clip * median_of(s->abs_d_history, s->history_count);
    return c->clip;
}

static void remember_abs_d(sq_qzo_state *s, float v) {
    s->abs_d_history[s->history_pos] = v;
    s->history_pos = (s->history_pos + 1) % SQ_QZO_CLIP_WINDOW;
    if (s->history_count < SQ_QZO_CLIP_WINDOW) s->history_count++;
}

static void remember_loss(sq_qzo_state *s, float v) {
    s->loss_history[s->loss_pos] = v;
    s->loss_pos = (s->loss_pos + 1) % SQ_QZO_LOSS_WINDOW;
    if (s->loss_count < SQ_QZO_LOSS_WINDOW) s->loss_count++;
}

// Ring slot of the term `age` places before the newest (age 0 = newest).
static int term_slot(const sq_qzo_state *s, int age) {
    return ((s->term_pos - 1 - age) % SQ_QZO_MOMENTUM_TERMS + SQ_QZO_MOMENTUM_TERMS) % SQ_QZO_MOMENTUM_TERMS;
}

// A step's update terms, gathered so that all of them reach every layer in one
// sq_qzo_update_terms call (one kernel launch on CUDA, not one per layer and term).
// Applying them in the order they are added is the order of one update per term.
typedef struct {
    sq_perturb p[SQ_QZO_MOMENTUM_TERMS];
    float coeff[SQ_QZO_MOMENTUM_TERMS];
    int n;
} term_list;
_Static_assert(SQ_QZO_MOMENTUM_TERMS <= SQ_QZO_UPDATE_TERMS_PER_LAUNCH, "a step's terms fit one update launch");

// undo: take the update with coeff back (in the relative form a division, not -coeff).
static void add_term(term_list *list, const sq_qzo_config *c, uint64_t counter, float coeff, bool undo) {
    SQ_CHECK(list->n < SQ_QZO_MOMENTUM_TERMS, "qzo: more than %d update terms in one step", SQ_QZO_MOMENTUM_TERMS);
    list->p[list->n] = (sq_perturb){.seed = c->seed, .step = counter, .relative = c->relative, .sign = undo ? -1 : 0};
    list->coeff[list->n] = coeff;
    list->n++;
}

static void apply_terms(const sq_qzo_params *params, const term_list *list) {
    sq_qzo_update_terms(params->scales, params->index_base, params->count, list->p, list->coeff, list->n);
}

// Undoes the last accepted step's update (exact up to rounding where the projection
// at 0 did not act) and forgets the terms it added.
static void undo_last_update(const sq_qzo_config *c, sq_qzo_state *s, const sq_qzo_params *params) {
    term_list undo = {.n = 0};
    for (int age = 0; age < s->term_count; age++) {
        int slot = term_slot(s, age);
        if (s->last_coeff[slot] != 0.0f) add_term(&undo, c, s->terms[slot].counter, s->last_coeff[slot], true);
        s->last_coeff[slot] = 0.0f;
    }
    apply_terms(params, &undo);
    s->term_pos = (s->term_pos - s->last_new + SQ_QZO_MOMENTUM_TERMS) % SQ_QZO_MOMENTUM_TERMS;
    s->term_count -= s->last_new;
    s->last_new = 0;
}

// The test that throws a step away: why[] is filled when it does.
static bool step_is_bad(const sq_qzo_config *c, const sq_qzo_state *s, const double *lp, const double *lm, int q,
                        char *why, size_t why_size) {
    for (int j = 0; j < q; j++)
        if (!isfinite(lp[j]) || !isfinite(lm[j])) {
            snprintf(why, why_size, "loss is not finite (L+ = %g, L- = %g)", lp[j], lm[j]);
            return true;
        }
    if (c->spike_factor > 0 && s->loss_count >= 8) {
        float med = median_of(s->loss_history, s->loss_count);
        for (int j = 0; j < q; j++) {
            double worst = lp[j] > lm[j] ? lp[j] : lm[j];
            if (worst > (double)c->spike_factor * med) {
                snprintf(why, why_size, "loss spike (L+ = %.4g, L- = %.4g, %.3g x the running median %.4g)", lp[j],
                         lm[j], worst / med, (double)med);
                return true;
            }
        }
    }
    return false;
}

int sq_qzo_step(const sq_qzo_config *c, sq_qzo_state *state, const sq_qzo_params *params, sq_qzo_loss_fn loss,
                void *ctx, sq_qzo_step_info *info) {
    return sq_qzo_step_split(c, state, params, loss, ctx, NULL, info);
}

int sq_qzo_step_split(const sq_qzo_config *c, sq_qzo_state *state, const sq_qzo_params *params, sq_qzo_loss_fn loss,
                      void *ctx, const sq_qzo_split *split, sq_qzo_step_info *info) {
    if (c->queries < 1 || c->queries > 64) return sq_errorf("qzo: queries must be in 1..64, not %d", c->queries);
    if (!(c->eps > 0)) return sq_errorf("qzo: eps must be > 0");
    if (!(c->momentum >= 0 && c->momentum < 1)) return sq_errorf("qzo: momentum must be in [0, 1), not %g", c->momentum);
    float d_clipped[64];
    double lp[64], lm[64];
    uint64_t counters[64];
    sq_qzo_step_info tmp;
    if (!info) info = &tmp;
    memset(info, 0, sizeof *info);
    float clip = current_clip(c, state);
    info->clip_used = clip;
    int j0 = split ? split->first_query : 0, j1 = split ? split->first_query + split->query_count : c->queries;
    if (j0 < 0 || j1 > c->queries || j1 < j0) return sq_errorf("qzo: queries [%d, %d) are not a share of %d", j0, j1, c->queries);
    for (int j = 0; j < c->queries; j++) {
        counters[j] = (uint64_t)state->step * (uint64_t)c->queries + (uint64_t)j;
        lp[j] = lm[j] = NAN;   // another process's query until combined
    }
    for (int j = j0; j < j1; j++) {
        sq_perturb p = {.seed = c->seed, .step = counters[j], .eps = c->eps, .sign = +1, .relative = c->relative};
        if (loss(ctx, &p, &lp[j]) != SQ_OK) return sq_error_context("qzo step %lld: + pass", (long long)state->step);
        p.sign = -1;
        if (loss(ctx, &p, &lm[j]) != SQ_OK) return sq_error_context("qzo step %lld: - pass", (long long)state->step);
    }
    if (split && split->combine(split->ctx, state->step, lp, lm, c->queries) != SQ_OK)
        return sq_error_context("qzo step %lld: exchanging the losses", (long long)state->step);
    for (int j = 0; j < c->queries; j++) {
        info->loss_plus = lp[j];
        info->loss_minus = lm[j];
        info->loss_mean += 0.5 * (lp[j] + lm[j]) / c->queries;
    }
    float lr = sq_qzo_lr_at(c, state->step) * state->lr_scale;
    info->lr = lr;
    if (step_is_bad(c, state, lp, lm, c->queries, info->why, sizeof info->why)) {
        info->discarded = true;
        info->d_raw = info->d_clipped = NAN;
        undo_last_update(c, state, params);
        state->lr_scale *= 0.5f;
        state->bad_streak++;
        state->bad_total++;
        state->step++;
        if (c->max_bad_steps > 0 && state->bad_streak >= c->max_bad_steps)
            return sq_errorf("qzo step %lld: %d steps in a row were discarded (the last: %s); lower --eps (%g) or --lr "
                             "(%g), or raise --spike-factor (%g; 0 turns the spike test off)",
                             (long long)state->step - 1, state->bad_streak, info->why, c->eps, c->lr, c->spike_factor);
        return SQ_OK;
    }
    for (int j = 0; j < c->queries; j++) {
        // The difference is taken in double: L+ and L- agree to many digits.
        double d = (lp[j] - lm[j]) / (2.0 * (double)c->eps);
        double dc = d;
        if (clip > 0) {
            if (dc > clip) dc = clip;
            if (dc < -clip) dc = -clip;
            if (dc != d) info->clipped_count++;
        }
        d_clipped[j] = (float)dc;
        remember_abs_d(state, (float)fabs(d));
        info->d_raw = d;
        info->d_clipped = dc;
    }
    remember_loss(state, (float)info->loss_mean);
    state->bad_streak = 0;
    state->clipped_total += info->clipped_count;
    state->queries_total += c->queries;
    // This step's terms join the ring; without momentum only they are applied.
    for (int j = 0; j < c->queries; j++) {
        sq_qzo_term t = {.counter = counters[j], .step = state->step, .d = d_clipped[j]};
        state->terms[state->term_pos] = t;
        state->term_pos = (state->term_pos + 1) % SQ_QZO_MOMENTUM_TERMS;
        if (state->term_count < SQ_QZO_MOMENTUM_TERMS) state->term_count++;
    }
    state->last_new = c->queries;
    memset(state->last_coeff, 0, sizeof state->last_coeff);
    // Oldest first, so the newest term is applied last, as without momentum.
    term_list update = {.n = 0};
    for (int age = state->term_count - 1; age >= 0; age--) {
        int slot = term_slot(state, age);
        const sq_qzo_term *t = &state->terms[slot];
        float coeff;
        if (c->momentum > 0) {
            // m_k = β m_{k-1} + (1 - β) d_k z_k, unrolled: the term of step s weighs (1 - β) β^(k - s).
            float w = (1.0f - c->momentum) * powf(c->momentum, (float)(state->step - t->step));
            if (w < 1e-3f * (1.0f - c->momentum)) continue;
            coeff = lr * w * t->d / (float)c->queries;
        } else {
            if (age >= c->queries) continue;
            coeff = lr * t->d / (float)c->queries;
        }
        add_term(&update, c, t->counter, coeff, false);
        state->last_coeff[slot] = coeff;
    }
    apply_terms(params, &update);
    state->step++;
    return SQ_OK;
}
