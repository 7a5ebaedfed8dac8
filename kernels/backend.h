// kernels/backend.h: choosing and starting a backend. The CPU backend is always
// there; the CUDA backend exists when the build found nvcc and a GPU is visible at
// run time. Starting CUDA registers the device hooks that core/ tensors use.
#ifndef SQ_BACKEND_H
#define SQ_BACKEND_H

#include <stdbool.h>
#include <stddef.h>

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

bool sq_cuda_compiled(void);     // this build has the CUDA backend
int sq_cuda_device_count(void);  // 0 when not compiled, no driver or no GPU
// Describes GPU 0 ("NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB") into buf; "" if none.
void sq_cuda_describe(char *buf, int size);
// What a command's --device asks for (app/options.h parses the word into it).
typedef enum { SQ_DEVICE_AUTO = 0, SQ_DEVICE_CPU, SQ_DEVICE_CUDA } sq_device_request;
// The GPU that starting CUDA selects (default 0): a multi-process run gives each
// process its LOCAL_RANK; a process that sees one GPU takes it whatever the
// ordinal. Call before sq_backend_select.
void sq_cuda_set_ordinal(int ordinal);
// AUTO (CUDA when a GPU is present, else CPU), CPU or CUDA. Initialises the chosen
// backend. SQ_FAIL with a message when CUDA is asked for and unavailable.
int sq_backend_select(sq_device_request request, sq_device *out);
// The same from the words "auto", "cpu" or "cuda" (NULL: auto).
int sq_backend_init(const char *request, sq_device *out);
// Waits for all queued device work (no-op on the CPU); for timing.
void sq_device_synchronize(sq_device device);
// Free and total device memory in bytes; SQ_FAIL without CUDA.
int sq_cuda_mem_info(size_t *free_bytes, size_t *total_bytes);
// Page-locked host memory (cudaHostAlloc): the GPU copies from it at full PCIe speed
// without a driver bounce buffer (text_encoders/offload.h streams blocks from it).
// NULL without a CUDA backend or when the driver refuses to pin that much; callers
// then fall back to malloc. Release with sq_host_pinned_free.
void *sq_host_pinned_alloc(size_t bytes);
void sq_host_pinned_free(void *ptr);

// Times one region of queued device work (sd-qzo bench). On CUDA: two events on the
// default stream, where all of sd-qzo's kernels run, so the figure is the GPU's time
// for the region without host timing noise; elsewhere the host monotonic clock.
//   sq_timer t; sq_timer_start(&t, dev); ...work...; double ms = sq_timer_stop(&t);
// sq_timer_stop waits for the region's work and releases the events; it returns
// milliseconds, or a negative value with the message set when a CUDA call failed.
typedef struct {
    sq_device device;
    double start_s;            // host clock (CPU device)
    void *ev_start, *ev_stop;  // cudaEvent_t (CUDA device)
} sq_timer;
int sq_timer_start(sq_timer *t, sq_device device);
double sq_timer_stop(sq_timer *t);
// "cuda_events" or "wall": what sq_timer measures with on this device.
const char *sq_timer_kind(sq_device device);

// Starts/stops an external profiler's capture (cudaProfilerStart/Stop; no-op without
// CUDA), so e.g. `ncu --profile-from-start off` sees just the region in between.
void sq_profiler_capture(bool on);

// Gives back device memory the backend keeps between ops (the cuDNN workspace, sized
// by the largest convolution or attention seen, and the int4 weight buffers of
// kernels/weight_prefetch.h); ops take it back as needed.
// Returns the bytes released. For the start of a phase that needs less.
size_t sq_device_trim(sq_device device);

#ifdef __cplusplus
}
#endif

#endif
