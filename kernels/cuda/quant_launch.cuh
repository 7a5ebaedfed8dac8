// kernels/cuda/quant_launch.cuh: the int4 dequantisation launched on a given stream,
// for kernels/cuda/weight_prefetch.cu, which runs it beside the default stream's
// work (cuda_dequant_q4 of cuda_ops.h is this on the default stream).
#ifndef SQ_CUDA_QUANT_LAUNCH_CUH
#define SQ_CUDA_QUANT_LAUNCH_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/quant.h"

void cuda_dequant_q4_on(cudaStream_t stream, void *out_bf16, const uint8_t *codes, const float *scales, int64_t nout,
                        int64_t k, int group, const sq_perturb *p);

#endif
