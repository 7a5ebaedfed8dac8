// kernels/cuda/cudnn_context.cu: see kernels/cuda/cudnn_context.cuh.
#include <stdio.h>
#include <string.h>

#include "kernels/cuda/cudnn_context.cuh"
#include "kernels/cuda/cuda_ops.h"

#ifdef SQ_HAVE_CUDNN

namespace {
cudnnHandle_t g_handle = nullptr;
int g_state = 0;   // 0 not tried, 1 handle ready, -1 cudnnCreate failed (always fall back)
void *g_ws = nullptr;
size_t g_ws_bytes = 0;

struct plan_entry {
    bool used;
    sq_cudnn_op op;
    size_t key_bytes;
    unsigned char key[SQ_CUDNN_KEY_MAX];
    void *plan;
    void (*destroy)(void *plan);
};
plan_entry g_plans[SQ_CUDNN_PLAN_CAP];
int g_next_evict = 0;
}   // namespace

cudnnHandle_t sq_cudnn_handle(const char *fallback_note) {
    if (g_state == 0) {
        cudnnStatus_t st = cudnnCreate(&g_handle);
        if (st != CUDNN_STATUS_SUCCESS) {
            fprintf(stderr, "cuDNN error %s at %s:%d in cudnnCreate; %s\n", cudnnGetErrorString(st), __FILE__, __LINE__,
                    fallback_note);
            g_state = -1;
        } else {
            g_state = 1;   // default stream, like every other op
        }
    }
    return g_state > 0 ? g_handle : nullptr;
}

bool sq_cudnn_workspace_reserve(size_t bytes) {
    if (bytes <= g_ws_bytes) return true;
    // cudaFree waits for the device, so no queued op still reads the old buffer
    if (g_ws) SQ_CUDA_CHECK(cudaFree(g_ws));
    g_ws = nullptr;
    g_ws_bytes = 0;
    if (cudaMalloc(&g_ws, bytes) != cudaSuccess) {
        (void)cudaGetLastError();   // clear the (non-sticky) allocation error for the fallback kernels
        g_ws = nullptr;
        return false;
    }
    g_ws_bytes = bytes;
    cuda_graph_memory_moved();
    return true;
}

void *sq_cudnn_workspace(void) { return g_ws; }

void *sq_cudnn_plan_find(sq_cudnn_op op, const void *key, size_t key_bytes) {
    for (int i = 0; i < SQ_CUDNN_PLAN_CAP; i++) {
        const plan_entry &e = g_plans[i];
        if (e.used && e.op == op && e.key_bytes == key_bytes && !memcmp(e.key, key, key_bytes)) return e.plan;
    }
    return nullptr;
}

void sq_cudnn_plan_put(sq_cudnn_op op, const void *key, size_t key_bytes, void *plan, void (*destroy)(void *plan)) {
    SQ_CHECK(key_bytes <= SQ_CUDNN_KEY_MAX, "cuDNN plan cache: a %zu-byte key (at most %d)", key_bytes,
             (int)SQ_CUDNN_KEY_MAX);
    plan_entry *e = nullptr;
    for (int i = 0; i < SQ_CUDNN_PLAN_CAP && !e; i++)
        if (!g_plans[i].used) e = &g_plans[i];
    if (!e) {   // table full: evict round-robin
        e = &g_plans[g_next_evict];
        g_next_evict = (g_next_evict + 1) % SQ_CUDNN_PLAN_CAP;
        e->destroy(e->plan);
        cuda_graph_memory_moved();
    }
    e->used = true;
    e->op = op;
    e->key_bytes = key_bytes;
    memcpy(e->key, key, key_bytes);
    e->plan = plan;
    e->destroy = destroy;
}

size_t sq_cudnn_workspace_release(void) {
    size_t freed = g_ws_bytes;
    if (g_ws) SQ_CUDA_CHECK(cudaFree(g_ws));   // waits for queued ops that may still use it
    g_ws = nullptr;
    g_ws_bytes = 0;
    if (freed) cuda_graph_memory_moved();
    return freed;
}

#endif

// kernels/backend.c's sq_device_trim: what the CUDA backend can give back between phases.
extern "C" size_t sq_cuda_trim_impl(void) {
    cuda_graph_memory_moved();   // whatever was freed, a recorded graph may have pointed into it
    size_t freed = cuda_prefetch_release();
#ifdef SQ_HAVE_CUDNN
    freed += sq_cudnn_workspace_release();
#endif
    return freed;
}
