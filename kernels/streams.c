// kernels/streams.c: see kernels/streams.h.
#include "kernels/streams.h"

#include "kernels/dispatch.h"
#include "kernels/env_switch.h"

static int g_enabled = -1;   // kernels/env_switch.h
static bool g_on_side;

void sq_streams_set_enabled(bool on) { g_enabled = on; }

static bool active(sq_device device) {
    return device == SQ_CUDA && sq_env_switch_on(&g_enabled, "SQ_SIDE_STREAM");
}

void sq_stream_fork(sq_device device) {
    if (!active(device)) return;
    CUDA_OR_FAIL("stream fork", cuda_stream_fork());
}

void sq_stream_side(sq_device device, bool on) {
    if (!active(device)) return;
    CUDA_OR_FAIL("stream switch", cuda_stream_side(on));
    g_on_side = on;
}

void sq_stream_join(sq_device device) {
    if (!active(device)) return;
    CUDA_OR_FAIL("stream join", cuda_stream_join());
}

bool sq_stream_on_side(void) { return g_on_side; }
