// kernels/cuda/stream.cuh: the stream every op launches on. It is the default
// (legacy) stream, except while a forward pass runs independent work on the side
// stream of kernels/streams.h (cuda_stream_side): then the ops in between go there;
// and while a CUDA graph is captured (kernels/graph.h): then it is the capture's.
#ifndef SQ_CUDA_STREAM_CUH
#define SQ_CUDA_STREAM_CUH

#include <cuda_runtime.h>

extern cudaStream_t g_sq_stream;   // kernels/cuda/streams.cu
#define SQ_STREAM g_sq_stream
// The stream the ops go to when not on the side stream: the default (legacy) stream,
// or while a CUDA graph is captured the capture's stream (kernels/cuda/graph.cu sets
// it); defined beside g_sq_stream in kernels/cuda/streams.cu.
extern cudaStream_t g_sq_main_stream;

#endif
