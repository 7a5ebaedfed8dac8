// tests/gpu/gpu_start.h: how every GPU test begins. Without a GPU it prints why and
// returns 77 (meson: skipped, as in CI); when CUDA does not start it prints the
// error and returns 1; else 0, with the device in *dev.
//   sq_device dev;
//   int start = tu_gpu_start(&dev);
//   if (start) return start;
#ifndef SQ_TESTS_GPU_START_H
#define SQ_TESTS_GPU_START_H

#include <stdio.h>

#include "core/error.h"
#include "kernels/backend.h"

static inline int tu_gpu_start(sq_device *dev) {
    if (sq_cuda_device_count() <= 0) {
        printf("SKIP: no CUDA GPU found (gpu suite runs on a machine with an NVIDIA GPU)\n");
        return 77;
    }
    if (sq_backend_init("cuda", dev) != SQ_OK) {
        fprintf(stderr, "cuda init: %s\n", sq_error_message());
        return 1;
    }
    return 0;
}

#endif
