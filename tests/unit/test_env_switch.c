// tests/unit/test_env_switch.c: kernels/env_switch.h, the switch behind
// SQ_SIDE_STREAM, SQ_WEIGHT_PREFETCH and SQ_CUDA_GRAPHS: on when the variable is
// unset or anything but "0", off at "0", read once and then kept, and a state a test
// set first wins over the environment.
#include <stdlib.h>

#include "kernels/env_switch.h"
#include "tests/test_util.h"

static const char *VAR = "SQ_TEST_ENV_SWITCH";

static int fresh(const char *value) {
    if (value) setenv(VAR, value, 1);
    else unsetenv(VAR);
    int state = -1;
    return sq_env_switch_on(&state, VAR);
}

int main(void) {
    TU_CHECK(fresh(NULL) == 1, "unset: on");
    TU_CHECK(fresh("0") == 0, "\"0\": off");
    TU_CHECK(fresh("1") == 1, "\"1\": on");
    TU_CHECK(fresh("") == 1, "empty: on");
    TU_CHECK(fresh("00") == 1, "\"00\" is not \"0\": on");
    int state = -1;
    setenv(VAR, "0", 1);
    TU_CHECK(!sq_env_switch_on(&state, VAR) && state == 0, "read once: off");
    unsetenv(VAR);
    TU_CHECK(!sq_env_switch_on(&state, VAR), "kept after the environment changed");
    state = 1;   // as sq_*_set_enabled(true)
    setenv(VAR, "0", 1);
    TU_CHECK(sq_env_switch_on(&state, VAR), "a state set first wins");
    return tu_finish("test_env_switch");
}
