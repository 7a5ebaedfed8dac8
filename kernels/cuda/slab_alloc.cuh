// kernels/cuda/slab_alloc.cuh: device memory for tensors, with mid-sized requests
// packed into shared slabs (kernels/cuda/slab_alloc.cu says why).
#ifndef SQ_CUDA_SLAB_ALLOC_CUH
#define SQ_CUDA_SLAB_ALLOC_CUH

#include <cuda_runtime.h>
#include <stddef.h>

void *sq_slab_alloc(size_t bytes);   // NULL when out of memory
cudaError_t sq_slab_free(void *p);   // p from sq_slab_alloc (NULL is fine)

#endif
