// kernels/cuda/graph.cu: the device half of kernels/graph.h: ops captured from a
// stream of our own into a CUDA graph, the graph replayed on the default stream, and
// the device copy of the perturbation a replay applies (kernels/cuda/live_perturb.cuh).
//
// Capture runs on a non-blocking stream (the legacy default stream cannot be
// captured) in thread-local mode: a call that would synchronise or allocate fails the
// capture rather than running outside it. The side streams (kernels/streams.h,
// kernels/weight_prefetch.h) join the capture through events recorded on it.
#include <cuda_runtime.h>

#include "kernels/cuda/check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/live_perturb.cuh"
#include "kernels/cuda/stream.cuh"

static cudaStream_t g_capture;
static sq_perturb *g_live;              // device: the perturbation of the replay under way
static unsigned long g_epoch;           // the capture under way, 0 when none
static unsigned long g_captures;
static unsigned long g_generation = 1;  // moves when memory a graph may point into is freed

cuda_perturb cuda_perturb_of(const sq_perturb *p) {
    cuda_perturb c = {};
    if (p) c.p = *p;
    if (g_epoch && p && p->sign != 0) c.live = g_live;
    return c;
}

extern "C" unsigned long cuda_graph_epoch(void) { return g_epoch; }

extern "C" unsigned long cuda_graph_generation(void) { return g_generation; }

extern "C" void cuda_graph_memory_moved(void) { g_generation++; }

extern "C" int cuda_graph_begin(void) {
    if (g_epoch) return sq_errorf("CUDA graph: a capture is already under way");
    if (g_sq_stream != g_sq_main_stream) return sq_errorf("CUDA graph: a capture must start on the default stream");
    if (!g_capture) SQ_CUDA_TRY(cudaStreamCreateWithFlags(&g_capture, cudaStreamNonBlocking));
    if (!g_live) SQ_CUDA_TRY(cudaMalloc((void **)&g_live, sizeof *g_live));
    SQ_CUDA_TRY(cudaStreamBeginCapture(g_capture, cudaStreamCaptureModeThreadLocal));
    g_epoch = ++g_captures;
    g_sq_main_stream = g_sq_stream = g_capture;
    return SQ_OK;
}

extern "C" void *cuda_graph_end(void) {
    cudaGraph_t graph = nullptr;
    cudaError_t e = cudaStreamEndCapture(g_capture, &graph);
    g_epoch = 0;
    g_sq_main_stream = g_sq_stream = 0;
    cudaGraphExec_t exec = nullptr;
    if (e == cudaSuccess) e = cudaGraphInstantiate(&exec, graph, 0);
    if (graph) SQ_CUDA_CHECK(cudaGraphDestroy(graph));
    if (e != cudaSuccess) {
        (void)cudaGetLastError();   // capture errors are not sticky: the eager path goes on
        sq_errorf("CUDA graph: %s", cudaGetErrorString(e));
        return nullptr;
    }
    return exec;
}

// One thread stores the replay's perturbation: a kernel's arguments are copied at
// launch, so nothing on the host has to outlive the call (a copy from pageable
// memory could also wait for the device).
__global__ void set_live_kernel(sq_perturb *live, sq_perturb p) { *live = p; }

extern "C" void cuda_graph_launch(void *exec, const sq_perturb *p) {
    sq_perturb none = {0, 0, 0, 0.0f, 0, 0};
    set_live_kernel<<<1, 1, 0, 0>>>(g_live, p ? *p : none);
    SQ_CUDA_CHECK(cudaGetLastError());
    SQ_CUDA_CHECK(cudaGraphLaunch((cudaGraphExec_t)exec, 0));
    cuda_prefetch_after_graph();
}

extern "C" void cuda_graph_free(void *exec) {
    if (exec) SQ_CUDA_CHECK(cudaGraphExecDestroy((cudaGraphExec_t)exec));
}
