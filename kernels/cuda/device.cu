// kernels/cuda/device.cu: CUDA start-up: device query and the memory hooks core/
// tensors and arenas use. Plain C linkage so kernels/backend.c can call it.
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>
#include <stdio.h>

#include "core/tensor.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/slab_alloc.cuh"

static void *cuda_alloc(size_t bytes) { return sq_slab_alloc(bytes); }

static void cuda_free(void *p) { SQ_CUDA_CHECK(sq_slab_free(p)); }

static int cuda_copy(void *dst, sq_device dd, const void *src, sq_device sd, size_t bytes) {
    cudaMemcpyKind kind = dd == SQ_CUDA ? (sd == SQ_CUDA ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                        : (sd == SQ_CUDA ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
    SQ_CUDA_TRY(cudaMemcpy(dst, src, bytes, kind));
    return SQ_OK;
}

extern "C" int sq_cuda_device_count_impl(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" void sq_cuda_describe_impl(char *buf, int size) {
    cudaDeviceProp prop;
    if (size <= 0) return;
    buf[0] = 0;
    if (sq_cuda_device_count_impl() <= 0 || cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return;
    snprintf(buf, (size_t)size, "%s, sm_%d%d, %.1f GiB", prop.name, prop.major, prop.minor,
             (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
}

extern "C" int cuda_matmul_init(void);
extern "C" int cuda_reduce_init(void);

extern "C" int cuda_ops_init(void) {
    if (cuda_matmul_init() != SQ_OK || cuda_reduce_init() != SQ_OK) return SQ_FAIL;
    return SQ_OK;
}

extern "C" int sq_cuda_init_impl(int ordinal) {
    SQ_CUDA_TRY(cudaSetDevice(ordinal));
    static const sq_device_hooks hooks = {cuda_alloc, cuda_free, cuda_copy};
    sq_set_device_hooks(&hooks);
    return cuda_ops_init();
}

extern "C" void sq_cuda_synchronize_impl(void) { SQ_CUDA_CHECK(cudaDeviceSynchronize()); }

extern "C" void sq_cuda_profiler_capture_impl(bool on) { SQ_CUDA_CHECK(on ? cudaProfilerStart() : cudaProfilerStop()); }

// A failed pin is not an error: the caller falls back to pageable memory.
extern "C" void *sq_cuda_host_alloc_impl(size_t bytes) {
    void *p = NULL;
    if (cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault) != cudaSuccess) {
        cudaGetLastError();   // clear the error so the next call does not see it
        return NULL;
    }
    return p;
}

extern "C" void sq_cuda_host_free_impl(void *p) {
    if (p) SQ_CUDA_CHECK(cudaFreeHost(p));
}

extern "C" int sq_cuda_mem_info_impl(size_t *free_bytes, size_t *total_bytes) {
    SQ_CUDA_TRY(cudaMemGetInfo(free_bytes, total_bytes));
    return SQ_OK;
}

// sq_timer (kernels/backend.h): events on the default (legacy) stream, which every
// sd-qzo kernel, cuBLAS and cuDNN call uses. On failure nothing is left allocated.
extern "C" int sq_cuda_timer_start_impl(void **ev_start, void **ev_stop) {
    cudaEvent_t a = NULL, b = NULL;
    *ev_start = *ev_stop = NULL;
    SQ_CUDA_TRY(cudaEventCreate(&a));
    cudaError_t e = cudaEventCreate(&b);
    if (e == cudaSuccess) e = cudaEventRecord(a, 0);
    if (e != cudaSuccess) {
        if (b) cudaEventDestroy(b);   // best effort: the first error is the one reported
        cudaEventDestroy(a);
        return sq_errorf("CUDA error %s at %s:%d starting a timer", cudaGetErrorString(e), __FILE__, __LINE__);
    }
    *ev_start = (void *)a;
    *ev_stop = (void *)b;
    return SQ_OK;
}

extern "C" int sq_cuda_timer_stop_impl(void *ev_start, void *ev_stop, float *ms) {
    cudaEvent_t a = (cudaEvent_t)ev_start, b = (cudaEvent_t)ev_stop;
    cudaError_t e = cudaEventRecord(b, 0);
    if (e == cudaSuccess) e = cudaEventSynchronize(b);
    if (e == cudaSuccess) e = cudaEventElapsedTime(ms, a, b);
    cudaError_t d1 = cudaEventDestroy(a), d2 = cudaEventDestroy(b);
    if (e == cudaSuccess) e = d1 != cudaSuccess ? d1 : d2;
    if (e != cudaSuccess)
        return sq_errorf("CUDA error %s at %s:%d stopping a timer", cudaGetErrorString(e), __FILE__, __LINE__);
    return SQ_OK;
}
