// kernels/backend.c: backend selection; the CUDA half lives in kernels/cuda/device.cu.
#include "kernels/backend.h"

#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/progress.h"

#ifdef SQ_HAVE_CUDA
int sq_cuda_device_count_impl(void);
void sq_cuda_synchronize_impl(void);
int sq_cuda_mem_info_impl(size_t *free_bytes, size_t *total_bytes);
void sq_device_synchronize(sq_device device) { if (device == SQ_CUDA) sq_cuda_synchronize_impl(); }
int sq_cuda_mem_info(size_t *f, size_t *t) { return sq_cuda_mem_info_impl(f, t); }
void *sq_cuda_host_alloc_impl(size_t bytes);
void sq_cuda_host_free_impl(void *ptr);
void *sq_host_pinned_alloc(size_t bytes) { return sq_cuda_device_count_impl() > 0 ? sq_cuda_host_alloc_impl(bytes) : NULL; }
void sq_host_pinned_free(void *ptr) { sq_cuda_host_free_impl(ptr); }
void sq_cuda_describe_impl(char *buf, int size);
int sq_cuda_init_impl(int ordinal);
bool sq_cuda_compiled(void) { return true; }
int sq_cuda_device_count(void) { return sq_cuda_device_count_impl(); }
void sq_cuda_describe(char *buf, int size) { sq_cuda_describe_impl(buf, size); }
int sq_cuda_timer_start_impl(void **ev_start, void **ev_stop);
int sq_cuda_timer_stop_impl(void *ev_start, void *ev_stop, float *ms);
void sq_cuda_profiler_capture_impl(bool on);
void sq_profiler_capture(bool on) { sq_cuda_profiler_capture_impl(on); }
size_t sq_cuda_trim_impl(void);
size_t sq_device_trim(sq_device device) { return device == SQ_CUDA ? sq_cuda_trim_impl() : 0; }
#else
void sq_profiler_capture(bool on) { (void)on; }
size_t sq_device_trim(sq_device device) { (void)device; return 0; }
void sq_device_synchronize(sq_device device) { (void)device; }
int sq_cuda_mem_info(size_t *f, size_t *t) { *f = *t = 0; return sq_errorf("this build has no CUDA backend"); }
void *sq_host_pinned_alloc(size_t bytes) { (void)bytes; return NULL; }
void sq_host_pinned_free(void *ptr) { (void)ptr; }
bool sq_cuda_compiled(void) { return false; }
int sq_cuda_device_count(void) { return 0; }
void sq_cuda_describe(char *buf, int size) { if (size > 0) buf[0] = 0; }
#endif

static int g_ordinal;

void sq_cuda_set_ordinal(int ordinal) { g_ordinal = ordinal; }

int sq_backend_select(sq_device_request request, sq_device *out) {
    if (request == SQ_DEVICE_AUTO) {
        *out = sq_cuda_device_count() > 0 ? SQ_CUDA : SQ_CPU;
    } else if (request == SQ_DEVICE_CPU) {
        *out = SQ_CPU;
    } else {
        if (!sq_cuda_compiled()) return sq_errorf("--device cuda: this build of sd-qzo has no CUDA backend (rebuild with nvcc present)");
        if (sq_cuda_device_count() <= 0) return sq_errorf("--device cuda: no CUDA GPU found");
        *out = SQ_CUDA;
    }
#ifdef SQ_HAVE_CUDA
    // one visible GPU is this process's whatever its LOCAL_RANK (a launcher that binds
    // one GPU per task through CUDA_VISIBLE_DEVICES, e.g. srun --gpus-per-task 1)
    int n = *out == SQ_CUDA ? sq_cuda_device_count() : 0, ordinal = n == 1 ? 0 : g_ordinal;
    if (*out == SQ_CUDA && ordinal >= n)
        return sq_errorf("GPU %d was asked for (LOCAL_RANK) but %d are visible", ordinal, n);
    if (*out == SQ_CUDA && sq_cuda_init_impl(ordinal) != SQ_OK) return SQ_FAIL;
#endif
    return SQ_OK;
}

int sq_backend_init(const char *request, sq_device *out) {
    if (!request || !strcmp(request, "auto")) return sq_backend_select(SQ_DEVICE_AUTO, out);
    if (!strcmp(request, "cpu")) return sq_backend_select(SQ_DEVICE_CPU, out);
    if (!strcmp(request, "cuda")) return sq_backend_select(SQ_DEVICE_CUDA, out);
    return sq_errorf("unknown device '%s' (expected auto, cpu or cuda)", request);
}

const char *sq_timer_kind(sq_device device) { return device == SQ_CUDA ? "cuda_events" : "wall"; }

int sq_timer_start(sq_timer *t, sq_device device) {
    *t = (sq_timer){.device = device};
#ifdef SQ_HAVE_CUDA
    if (device == SQ_CUDA) return sq_cuda_timer_start_impl(&t->ev_start, &t->ev_stop);
#endif
    t->start_s = sq_time_now();
    return SQ_OK;
}

double sq_timer_stop(sq_timer *t) {
#ifdef SQ_HAVE_CUDA
    if (t->device == SQ_CUDA) {
        float ms = 0;
        int rc = sq_cuda_timer_stop_impl(t->ev_start, t->ev_stop, &ms);
        t->ev_start = t->ev_stop = NULL;
        return rc == SQ_OK ? (double)ms : -1.0;
    }
#endif
    return (sq_time_now() - t->start_s) * 1e3;
}
