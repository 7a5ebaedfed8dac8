// kernels/cuda/weight_prefetch.cu: the device half of kernels/weight_prefetch.h: two
// bf16 weight buffers, a low-priority side stream that dequantises the next int4
// linear into one of them while the default stream's GEMM reads the other, and the
// events that order the two streams.
//
// Why: at 512² an SD3.5 Large forward spent a quarter of its time (7.2 of 28.5 ms,
// bench/RESULTS.md) writing dequantised weights that only the next GEMM reads. The
// dequantisation is memory-bound and the GEMMs compute-bound, and a GEMM of a few
// hundred tiles leaves SMs idle in its last wave: run side by side, the
// dequantisation mostly hides. The side stream has the lowest priority so its
// blocks take SMs only when the default stream's kernels leave them free.
//
// Ordering (buffer i of two):
//   the side stream writes i only after `read[i]`, recorded on the default stream
//   after the last GEMM that read i; the default stream reads i only after
//   `written[i]`, recorded on the side stream after the dequantisation into i.
// A dequantisation that was started and never taken (the layer that came next was
// another one) is still waited for before i is written or read again.
//
// While a CUDA graph is captured (kernels/graph.h) an event may only be waited for
// if it was recorded in the same capture. One recorded before stands for work that
// a replay follows anyway (the graph runs on the default stream after the pass
// before it), so the default stream skips that wait, and the side stream, which has
// to join the capture, waits for a fresh record on the capture's stream instead.
// After a replay every event is recorded again on the default stream: the replay's
// own records were graph edges, not events the next eager pass could wait for.
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cuda/check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/quant_launch.cuh"
#include "kernels/cuda/stream.cuh"

typedef struct {
    void *buf;
    size_t bytes;
    cudaEvent_t written, read;
    unsigned long written_epoch, read_epoch;   // the capture each was last recorded in (0: none)
    bool pending;          // a side-stream dequantisation of `job` was queued into buf
    cuda_q4_weight job;
} slot;

static cudaStream_t g_side;
static slot g_slot[2];
static int g_last = 1;     // the slot the default stream read last; the next one is 1 - g_last
static long g_taken_ahead, g_taken_in_line;

static void start(void) {
    if (g_side) return;
    int least, greatest;   // numerically greatest = lowest priority
    SQ_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    (void)least;
    SQ_CUDA_CHECK(cudaStreamCreateWithPriority(&g_side, cudaStreamNonBlocking, greatest));
    for (int i = 0; i < 2; i++) {
        SQ_CUDA_CHECK(cudaEventCreateWithFlags(&g_slot[i].written, cudaEventDisableTiming));
        SQ_CUDA_CHECK(cudaEventCreateWithFlags(&g_slot[i].read, cudaEventDisableTiming));
    }
}

static size_t weight_bytes(const cuda_q4_weight *w) { return (size_t)w->nout * (size_t)w->k * 2; }

static bool same_job(const cuda_q4_weight *a, const cuda_q4_weight *b) {
    const sq_perturb *p = &a->p, *q = &b->p;
    return a->codes == b->codes && a->scales == b->scales && a->nout == b->nout && a->k == b->k &&
           a->group == b->group && p->seed == q->seed && p->step == q->step && p->index_base == q->index_base &&
           p->sign == q->sign && p->relative == q->relative && (p->sign == 0 || p->eps == q->eps);
}

static void record(cudaEvent_t e, unsigned long *epoch, cudaStream_t stream) {
    SQ_CUDA_CHECK(cudaEventRecord(e, stream));
    *epoch = cuda_graph_epoch();
}

// `stream` waits for e, recorded with `epoch` (see the top of this file for captures).
static void wait_for(cudaStream_t stream, cudaEvent_t e, unsigned long *epoch) {
    unsigned long now = cuda_graph_epoch();
    if (now && *epoch != now) {
        if (stream == SQ_STREAM) return;
        record(e, epoch, SQ_STREAM);
    }
    SQ_CUDA_CHECK(cudaStreamWaitEvent(stream, e, 0));
}

// Slot s large enough for w. Growing frees the old buffer, which no stream may still
// use: the device is drained first (growth happens in a model's first pass only).
static void reserve(slot *s, const cuda_q4_weight *w) {
    size_t need = weight_bytes(w);
    if (need <= s->bytes) return;
    SQ_CUDA_CHECK(cudaDeviceSynchronize());
    if (s->buf) SQ_CUDA_CHECK(cudaFree(s->buf));
    s->buf = NULL;
    s->bytes = 0;
    SQ_CUDA_CHECK(cudaMalloc(&s->buf, need));
    s->bytes = need;
    s->pending = false;
    cuda_graph_memory_moved();
}

extern "C" void *cuda_prefetch_take(const cuda_q4_weight *w) {
    start();
    int i = 1 - g_last;
    slot *s = &g_slot[i];
    bool ready = s->pending && same_job(&s->job, w);
    s->pending = false;
    // the side stream's last write into this slot, taken or not, comes first
    wait_for(SQ_STREAM, s->written, &s->written_epoch);
    if (ready) g_taken_ahead++;
    else g_taken_in_line++;
    if (!ready) {
        reserve(s, w);
        cuda_dequant_q4_on(SQ_STREAM, s->buf, w->codes, w->scales, w->nout, w->k, w->group, &w->p);
    }
    g_last = i;
    return s->buf;
}

extern "C" void cuda_prefetch_taken_read(void) { record(g_slot[g_last].read, &g_slot[g_last].read_epoch, SQ_STREAM); }

extern "C" void cuda_prefetch_start(const cuda_q4_weight *w) {
    start();
    slot *s = &g_slot[1 - g_last];
    if (weight_bytes(w) > s->bytes) return;   // not in the first pass's sizes: take() dequantises it in line
    wait_for(g_side, s->read, &s->read_epoch);
    cuda_dequant_q4_on(g_side, s->buf, w->codes, w->scales, w->nout, w->k, w->group, &w->p);
    record(s->written, &s->written_epoch, g_side);
    s->pending = true;
    s->job = *w;
}

extern "C" void cuda_prefetch_finish(void) {
    if (!g_side) return;
    for (int i = 0; i < 2; i++) {
        wait_for(SQ_STREAM, g_slot[i].written, &g_slot[i].written_epoch);
        g_slot[i].pending = false;
    }
}

extern "C" void cuda_prefetch_after_graph(void) {
    if (!g_side) return;
    for (int i = 0; i < 2; i++) {
        record(g_slot[i].written, &g_slot[i].written_epoch, SQ_STREAM);
        record(g_slot[i].read, &g_slot[i].read_epoch, SQ_STREAM);
        g_slot[i].pending = false;
    }
}

extern "C" void cuda_prefetch_counts(long *ahead, long *in_line) {
    *ahead = g_taken_ahead;
    *in_line = g_taken_in_line;
}

extern "C" size_t cuda_prefetch_release(void) {
    if (!g_side) return 0;
    SQ_CUDA_CHECK(cudaDeviceSynchronize());
    size_t freed = 0;
    for (int i = 0; i < 2; i++) {
        if (g_slot[i].buf) SQ_CUDA_CHECK(cudaFree(g_slot[i].buf));
        freed += g_slot[i].bytes;
        g_slot[i].buf = NULL;
        g_slot[i].bytes = 0;
        g_slot[i].pending = false;
    }
    if (freed) cuda_graph_memory_moved();
    return freed;
}
