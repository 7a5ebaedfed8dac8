// core/arena.h: bump allocator for per-forward scratch. One big block is taken up
// front (host malloc, or device memory through the CUDA hooks); a forward pass takes
// activations from it and the caller rewinds to a mark afterwards, so a training run
// allocates nothing per step. The high-water mark says how big the block must be.
#ifndef SQ_ARENA_H
#define SQ_ARENA_H

#include <stddef.h>
#include <stdint.h>

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SQ_ARENA_ALIGN 256   // covers cache lines and CUDA's 256-byte alignment

typedef struct {
    char *base;
    size_t size;
    size_t used;
    size_t high_water;
    sq_device device;
    int owned;
} sq_arena;

int sq_arena_init(sq_arena *a, sq_device device, size_t bytes);  // SQ_FAIL on OOM
void sq_arena_free(sq_arena *a);
// NULL + error message when the arena is exhausted (names the request and the size).
void *sq_arena_alloc(sq_arena *a, size_t bytes);
// A tensor whose data lives in the arena (not owned). SQ_FAIL when exhausted.
int sq_arena_tensor(sq_arena *a, sq_tensor *t, sq_dtype dtype, int ndim, const int64_t *shape);
static inline size_t sq_arena_mark(const sq_arena *a) { return a->used; }
static inline void sq_arena_reset(sq_arena *a, size_t mark) { a->used = mark; }

#ifdef __cplusplus
}
#endif

#endif
