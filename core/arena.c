// core/arena.c: the scratch bump allocator.
#include "core/arena.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

int sq_arena_init(sq_arena *a, sq_device device, size_t bytes) {
    memset(a, 0, sizeof *a);
    a->device = device;
    a->size = bytes;
    if (device == SQ_CPU) {
        // aligned_alloc needs a size that is a multiple of the alignment
        size_t rounded = (bytes + SQ_ARENA_ALIGN - 1) / SQ_ARENA_ALIGN * SQ_ARENA_ALIGN;
        a->base = aligned_alloc(SQ_ARENA_ALIGN, rounded ? rounded : SQ_ARENA_ALIGN);
        if (!a->base) return sq_errorf("out of host memory for a %zu-byte scratch arena", bytes);
    } else {
        const sq_device_hooks *h = sq_get_device_hooks();
        if (!h) return sq_errorf("CUDA arena requested but this build has no CUDA backend");
        a->base = h->alloc(bytes);
        if (!a->base) return sq_errorf("out of GPU memory for a %zu-byte scratch arena", bytes);
    }
    a->owned = 1;
    return SQ_OK;
}

void sq_arena_free(sq_arena *a) {
    if (a->owned && a->base) {
        if (a->device == SQ_CPU) free(a->base);
        else if (sq_get_device_hooks()) sq_get_device_hooks()->free(a->base);
    }
    memset(a, 0, sizeof *a);
}

void *sq_arena_alloc(sq_arena *a, size_t bytes) {
    size_t start = (a->used + SQ_ARENA_ALIGN - 1) / SQ_ARENA_ALIGN * SQ_ARENA_ALIGN;
    if (start > a->size || bytes > a->size - start) {
        sq_errorf("scratch arena exhausted: need %zu more bytes, %zu of %zu in use", bytes, a->used, a->size);
        return NULL;
    }
    a->used = start + bytes;
    if (a->used > a->high_water) a->high_water = a->used;
    return a->base + start;
}

int sq_arena_tensor(sq_arena *a, sq_tensor *t, sq_dtype dtype, int ndim, const int64_t *shape) {
    *t = sq_tensor_view(NULL, dtype, a->device, ndim, shape);
    t->data = sq_arena_alloc(a, sq_tensor_nbytes(t));
    return t->data ? SQ_OK : SQ_FAIL;
}
