// app/bench_quantize.h: `sd-qzo bench --what quantize`: the time to quantise a
// dense SD3.5 transformer of the real shapes, as a user with a fresh download sees it.
#ifndef SQ_APP_BENCH_QUANTIZE_H
#define SQ_APP_BENCH_QUANTIZE_H

#include <stdio.h>

#include "kernels/backend.h"
#include "mmdit/config.h"

// Writes a diffusers transformer folder of the preset's shapes (random bf16, 4
// shards, the shard index and config.json) under $TMPDIR (else /tmp), then runs the
// streaming quantiser of `sd-qzo quantize` on it: on the CPU (all threads) and, when
// device is AUTO or CUDA and a GPU is present, on the GPU, and checks that the two
// int4 files are identical byte for byte. blocks > 0 keeps only that many joint
// blocks (a quick run). Prints seconds, MB/s and peak host memory per device, and
// appends a "quantize" object to json when it is not NULL. Removes what it wrote.
int sq_bench_quantize(sd_mmdit_preset preset, int group, sq_device_request device, int blocks, FILE *json);

#endif
