// kernels/env_switch.h: a CUDA-path feature that is on unless the environment sets
// its variable to 0 (SQ_SIDE_STREAM, SQ_WEIGHT_PREFETCH, SQ_CUDA_GRAPHS), and that
// tests may set directly. *state is -1 until read, then 0 or 1.
#ifndef SQ_ENV_SWITCH_H
#define SQ_ENV_SWITCH_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static inline bool sq_env_switch_on(int *state, const char *var) {
    if (*state < 0) {
        const char *e = getenv(var);
        *state = !(e && !strcmp(e, "0"));
    }
    return *state == 1;
}

#endif
