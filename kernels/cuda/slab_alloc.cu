// kernels/cuda/slab_alloc.cu: device allocations between SLAB_MIN and SLAB_MAX bytes
// are carved out of 64 MiB slabs instead of getting a cudaMalloc each.
//
// Why: cudaMalloc rounds every allocation of a megabyte or more up to whole 2 MiB
// pages (measured on an H100: a 2.96 MB SD3.5 Large q/k/v code tensor takes 4.19 MB,
// a 1.2 MB scale tensor 2.1 MB). Over the ~500 weight tensors of SD3.5 Large that
// was about 0.8 GB of nothing. A slab is a bump allocator: a freed piece is not
// reused on its own, but the slab is given back (or rewound, when it is the one
// being filled) once every piece of it is freed, so phases that free what they
// allocated (text encoders, VAE) return all of it.
#include <cuda_runtime.h>
#include <pthread.h>
#include <stdlib.h>

#include "kernels/cuda/slab_alloc.cuh"

static const size_t SLAB_BYTES = 64u << 20;
static const size_t SLAB_MIN = 256u << 10;   // smaller: the driver packs them well itself
static const size_t SLAB_MAX = 16u << 20;    // larger: page rounding wastes at most 1/8
static const size_t ALIGN = 256;             // what cudaMalloc guarantees

typedef struct slab {
    char *base;
    size_t used;
    long live;   // pieces not yet freed
    struct slab *next;
} slab;

static slab *g_slabs;     // every slab; g_slabs is the one being filled
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static void *direct_alloc(size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError();   // clear the allocation error so later calls do not see it
        return NULL;
    }
    return p;
}

void *sq_slab_alloc(size_t bytes) {
    if (bytes < SLAB_MIN || bytes > SLAB_MAX) return direct_alloc(bytes);
    size_t need = (bytes + ALIGN - 1) / ALIGN * ALIGN;
    pthread_mutex_lock(&g_lock);
    slab *s = g_slabs;
    if (!s || s->used + need > SLAB_BYTES) {
        char *base = (char *)direct_alloc(SLAB_BYTES);
        s = base ? (slab *)malloc(sizeof *s) : NULL;
        if (!s) {
            // a failed host malloc leaves a slab we cannot track: give it back (a failure to
            // do so only loses the memory, which the NULL/direct path below reports anyway)
            if (base && cudaFree(base) != cudaSuccess) cudaGetLastError();
            pthread_mutex_unlock(&g_lock);
            return direct_alloc(bytes);   // no room for a whole slab: the piece may still fit
        }
        *s = (slab){base, 0, 0, g_slabs};
        g_slabs = s;
    }
    void *p = s->base + s->used;
    s->used += need;
    s->live++;
    pthread_mutex_unlock(&g_lock);
    return p;
}

// True when p was carved from a slab (then it is released here, and *err says how
// giving back an emptied slab went), false when it came from cudaMalloc directly.
static bool slab_release(void *p, cudaError_t *err) {
    pthread_mutex_lock(&g_lock);
    slab **link = &g_slabs;
    for (slab *s = g_slabs; s; link = &s->next, s = s->next) {
        if ((char *)p < s->base || (char *)p >= s->base + SLAB_BYTES) continue;
        if (--s->live == 0) {
            if (s == g_slabs) {
                s->used = 0;   // the slab being filled: rewind and keep it
            } else {
                *link = s->next;
                *err = cudaFree(s->base);
                free(s);
            }
        }
        pthread_mutex_unlock(&g_lock);
        return true;
    }
    pthread_mutex_unlock(&g_lock);
    return false;
}

cudaError_t sq_slab_free(void *p) {
    cudaError_t err = cudaSuccess;
    if (!p || slab_release(p, &err)) return err;
    return cudaFree(p);
}
