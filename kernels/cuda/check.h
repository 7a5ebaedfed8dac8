// kernels/cuda/check.h: every CUDA runtime / cuBLAS / cuDNN call goes through these so a
// failure reports the call, file and line. Host-side code paths return SQ_FAIL with
// that message; they never exit().
#ifndef SQ_CUDA_CHECK_H
#define SQ_CUDA_CHECK_H

#include <cuda_runtime.h>

#include "core/error.h"

#define SQ_CUDA_TRY(call)                                                              \
    do {                                                                               \
        cudaError_t sq_err_ = (call);                                                  \
        if (sq_err_ != cudaSuccess)                                                    \
            return sq_errorf("CUDA error %s at %s:%d in %s", cudaGetErrorString(sq_err_), \
                             __FILE__, __LINE__, #call);                               \
    } while (0)

// For void launch wrappers where a failure is unrecoverable (a kernel fault).
#define SQ_CUDA_CHECK(call)                                                            \
    do {                                                                               \
        cudaError_t sq_err_ = (call);                                                  \
        if (sq_err_ != cudaSuccess)                                                    \
            sq_panic(__FILE__, __LINE__, "CUDA error %s in %s", cudaGetErrorString(sq_err_), #call); \
    } while (0)

// cuDNN's status codes, likewise (builds that found cuDNN).
#ifdef SQ_HAVE_CUDNN
#include <cudnn.h>

#define SQ_CUDNN_CHECK(call)                                                           \
    do {                                                                               \
        cudnnStatus_t sq_st_ = (call);                                                 \
        if (sq_st_ != CUDNN_STATUS_SUCCESS)                                            \
            sq_panic(__FILE__, __LINE__, "cuDNN error %s in %s", cudnnGetErrorString(sq_st_), #call); \
    } while (0)
#endif

#endif
