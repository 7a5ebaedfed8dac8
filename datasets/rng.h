// datasets/rng.h: the counter-based random numbers of the data pipeline. Every
// random choice (epoch shuffle, random crop, flip, caption dropout, tag shuffle)
// is a pure function of (seed, choice, epoch, index, draw) through Philox4x32-10
// (kernels/rng.h), never of call order or of a hidden generator state: a resumed
// run, or an item loaded twice, or items loaded in another order or thread, see
// exactly the same choices. The key is the run's data stream key,
// sq_rng_stream_key(seed, SQ_RNG_STREAM_DATA), never the seed itself: the QZO
// perturbation is Philox keyed by the seed, and its counters (scale block, step) would
// otherwise meet these (choice, epoch, item, draw) ones — the crop of item k in epoch
// 0 was the z of scales 8..11 at step k.
#ifndef SD_DATASETS_RNG_H
#define SD_DATASETS_RNG_H

#include <stdint.h>

#include "kernels/rng.h"

// Choices keep apart inside the data stream by the counter's first word (a new option
// never shifts the crops of an old run).
typedef enum {
    SD_RNG_EPOCH_SHUFFLE = 1,   // index = bucket id (or -1 for the batch order), draw = position
    SD_RNG_CROP = 2,            // draw 0: x, draw 1: y
    SD_RNG_FLIP = 3,
    SD_RNG_CAPTION_DROP = 4,
    SD_RNG_TAG_SHUFFLE = 5,     // draw = position in the Fisher-Yates pass
} sd_rng_choice;

// 32 random bits for (seed, choice, epoch, index, draw).
static inline uint32_t sd_rng_u32(uint64_t seed, sd_rng_choice choice, int epoch, int index, uint32_t draw) {
    uint64_t key = sq_rng_stream_key(seed, SQ_RNG_STREAM_DATA);
    sq_philox_out o = sq_philox4x32_10((uint32_t)choice, (uint32_t)epoch, (uint32_t)index, draw, (uint32_t)key,
                                       (uint32_t)(key >> 32));
    return o.v[0];
}

// Uniform in [0, 1) with 24 bits (exact in float).
static inline float sd_rng_uniform(uint64_t seed, sd_rng_choice choice, int epoch, int index, uint32_t draw) {
    return (float)(sd_rng_u32(seed, choice, epoch, index, draw) >> 8) * (1.0f / 16777216.0f);
}

// Integer in [0, n) for n >= 1 (multiply-shift; the bias of at most n / 2^32 is
// irrelevant for shuffling a dataset).
static inline uint32_t sd_rng_below(uint64_t seed, sd_rng_choice choice, int epoch, int index, uint32_t draw,
                                    uint32_t n) {
    return (uint32_t)(((uint64_t)sd_rng_u32(seed, choice, epoch, index, draw) * n) >> 32);
}

#endif
