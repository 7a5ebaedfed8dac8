// samples/scheduler.c: FlowMatchEulerDiscreteScheduler's sigma schedule (see
// scheduler.h for the exact float32/float64 recipe it mirrors).
#include "samples/scheduler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/config.h"
#include "core/error.h"
#include "core/path.h"

void sd_scheduler_default(sd_flow_scheduler *s) {
    *s = (sd_flow_scheduler){.num_train_timesteps = 1000, .shift = 3.0, .base_shift = 0.5, .max_shift = 1.15,
                             .base_image_seq_len = 256, .max_image_seq_len = 4096};
}

int sd_scheduler_load(sd_flow_scheduler *s, const char *path) {
    char p[4096];
    snprintf(p, sizeof p, "%s", path);
    if (sq_is_dir(p)) {
        char sub[4096];
        snprintf(sub, sizeof sub, "%.4000s/scheduler", path);
        snprintf(p, sizeof p, "%.4000s/scheduler_config.json", sq_is_dir(sub) ? sub : path);
    }
    sq_config *c;
    if (sq_config_load(&c, p) != SQ_OK) return SQ_FAIL;
    sd_scheduler_default(s);
    const char *cls = sq_config_string_or(c, "_class_name", "FlowMatchEulerDiscreteScheduler");
    int rc = SQ_FAIL;
    if (strcmp(cls, "FlowMatchEulerDiscreteScheduler") != 0) {
        sq_errorf("%s: scheduler '%s' is not supported (SD3 uses FlowMatchEulerDiscreteScheduler)", p, cls);
        goto done;
    }
    s->num_train_timesteps = (int)sq_config_int_or(c, "num_train_timesteps", 1000);
    s->shift = sq_config_double_or(c, "shift", 1.0);
    s->use_dynamic_shifting = sq_config_bool_or(c, "use_dynamic_shifting", false);
    s->base_shift = sq_config_double_or(c, "base_shift", 0.5);
    // the SD3 pipeline's fallback when the key is absent is 1.16, not the scheduler's 1.15
    s->max_shift = sq_config_double_or(c, "max_shift", 1.16);
    s->base_image_seq_len = (int)sq_config_int_or(c, "base_image_seq_len", 256);
    s->max_image_seq_len = (int)sq_config_int_or(c, "max_image_seq_len", 4096);
    s->shift_terminal = sq_config_double_or(c, "shift_terminal", 0.0);
    const char *tst = sq_config_string_or(c, "time_shift_type", "exponential");
    if (strcmp(tst, "exponential") && strcmp(tst, "linear")) {
        sq_errorf("%s: time_shift_type '%s' is not 'exponential' or 'linear'", p, tst);
        goto done;
    }
    s->time_shift_linear = !strcmp(tst, "linear");
    static const char *unsupported[] = {"use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
                                        "invert_sigmas", "stochastic_sampling"};
    for (size_t i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++)
        if (sq_config_bool_or(c, unsupported[i], false)) {
            sq_errorf("%s: %s is set; sd-qzo implements the plain shifted flow-matching schedule of SD3.5 only", p,
                      unsupported[i]);
            goto done;
        }
    if (sq_config_check(c) != SQ_OK) goto done;   // a key of the wrong JSON type
    if (s->num_train_timesteps < 2 || !(s->shift > 0) || s->base_image_seq_len == s->max_image_seq_len) {
        sq_errorf("%s: bad values (num_train_timesteps %d, shift %g)", p, s->num_train_timesteps, s->shift);
        goto done;
    }
    rc = SQ_OK;
done:
    sq_config_free(c);
    return rc;
}

// The training grid's σ for t in float32, as the scheduler's constructor computes it.
static float train_sigma(const sd_flow_scheduler *s, float t) {
    float sig = t / (float)s->num_train_timesteps;
    if (s->use_dynamic_shifting) return sig;
    float sh = (float)s->shift;
    return sh * sig / (1.0f + (sh - 1.0f) * sig);
}

int sd_scheduler_sigmas(const sd_flow_scheduler *s, int steps, int image_seq_len, float *sigmas, float *timesteps) {
    if (steps < 1) return sq_errorf("the number of sampling steps must be at least 1 (got %d)", steps);
    double T = s->num_train_timesteps;
    double start = (double)train_sigma(s, (float)s->num_train_timesteps) * T;
    double stop = (double)train_sigma(s, 1.0f) * T;
    double mu = 0;
    if (s->use_dynamic_shifting) {
        double m = (s->max_shift - s->base_shift) / (double)(s->max_image_seq_len - s->base_image_seq_len);
        double b = s->base_shift - m * s->base_image_seq_len;
        mu = image_seq_len * m + b;
    }
    // numpy's linspace: i·step + start, the last point set to stop exactly
    double step = steps > 1 ? (stop - start) / (steps - 1) : 0;
    double *sig = sq_malloc((size_t)steps * sizeof *sig);
    if (!sig) return SQ_FAIL;
    for (int i = 0; i < steps; i++) {
        double t = (steps > 1 && i == steps - 1) ? stop : i * step + start;
        double x = t / T;
        if (s->use_dynamic_shifting) {
            double r = 1.0 / x - 1.0;
            x = s->time_shift_linear ? mu / (mu + r) : exp(mu) / (exp(mu) + r);
        } else {
            x = s->shift * x / (1.0 + (s->shift - 1.0) * x);
        }
        sig[i] = x;
    }
    if (s->shift_terminal > 0) {
        double scale = (1.0 - sig[steps - 1]) / (1.0 - s->shift_terminal);
        for (int i = 0; i < steps; i++) sig[i] = 1.0 - (1.0 - sig[i]) / scale;
    }
    for (int i = 0; i < steps; i++) {
        sigmas[i] = (float)sig[i];
        timesteps[i] = sigmas[i] * (float)s->num_train_timesteps;
    }
    sigmas[steps] = 0.0f;
    free(sig);
    return SQ_OK;
}
