// kernels/cuda/streams.cu: the device half of kernels/streams.h: the current stream
// every op launches on (kernels/cuda/stream.cuh), a side stream, and the two events
// that fork work onto it and join it back.
//
// The side stream is non-blocking: the legacy default stream does not wait for it
// implicitly (a blocking stream would serialise the two again), so every hand-over
// is an explicit event. "The default stream" here is g_sq_main_stream: the capture's
// stream while a CUDA graph is captured, and the fork's event then joins the side
// stream to the capture.
#include <cuda_runtime.h>

#include "kernels/cuda/check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/stream.cuh"

cudaStream_t g_sq_stream = 0;
// the capture's stream while kernels/cuda/graph.cu records a graph, else the default
cudaStream_t g_sq_main_stream = 0;

static cudaStream_t g_side;
static cudaEvent_t g_fork, g_join;

static void start(void) {
    if (g_side) return;
    SQ_CUDA_CHECK(cudaStreamCreateWithFlags(&g_side, cudaStreamNonBlocking));
    SQ_CUDA_CHECK(cudaEventCreateWithFlags(&g_fork, cudaEventDisableTiming));
    SQ_CUDA_CHECK(cudaEventCreateWithFlags(&g_join, cudaEventDisableTiming));
}

extern "C" void cuda_stream_fork(void) {
    start();
    SQ_CUDA_CHECK(cudaEventRecord(g_fork, g_sq_main_stream));
    SQ_CUDA_CHECK(cudaStreamWaitEvent(g_side, g_fork, 0));
}

extern "C" void cuda_stream_side(bool on) {
    start();
    g_sq_stream = on ? g_side : g_sq_main_stream;
}

extern "C" void cuda_stream_join(void) {
    if (!g_side) return;
    SQ_CUDA_CHECK(cudaEventRecord(g_join, g_side));
    SQ_CUDA_CHECK(cudaStreamWaitEvent(g_sq_main_stream, g_join, 0));
}
