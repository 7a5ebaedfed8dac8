// distributed/nccl.c: the all-gathers of distributed/exchange.h on an NCCL communicator (GPU runs).
// The communicator is non-blocking (ncclConfig_t.blocking = 0), so no NCCL call can
// hang the process: every wait is a loop that polls the stream, NCCL's own error
// state, the deadline, and the sockets of distributed/exchange.c through d->poll_peers
// (a rank that died closed its socket, or sent why it stopped), and a communicator
// that timed out is aborted. exchange.c drives this file (the id's broadcast, marking
// the exchange broken on a failure); this file calls nothing of exchange.c by name.
// The records are a few hundred bytes: they go host → device, ncclAllGather, device
// → host on one stream of their own; the model's kernels stay on the default stream.
#include "distributed/dist_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"

#ifdef SQ_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>

_Static_assert(sizeof(ncclUniqueId) == SQ_DIST_NCCL_ID_BYTES, "dist_internal.h's NCCL id size");

struct sq_dist_nccl {
    ncclComm_t comm;
    cudaStream_t stream;
    char *dbuf;          // device: the rank's record, then world records
    char *hbuf;          // pinned host: the same layout (pageable memory would make the
                         // async copies wait for the stream, out of reach of the timeout)
    size_t cap;
};

#define CUDA_TRY(call)                                                                                      \
    do {                                                                                                    \
        cudaError_t e_ = (call);                                                                            \
        if (e_ != cudaSuccess) return sq_errorf("CUDA error %s at %s:%d in %s", cudaGetErrorString(e_), __FILE__, __LINE__, #call); \
    } while (0)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

bool sq_dist_nccl_compiled(void) { return true; }

// Waits until NCCL has finished what it was asked (ncclInProgress no more) or the
// stream `s` (when not NULL) is done, watching the deadline and the other ranks.
static int wait_nccl(sq_dist *d, cudaStream_t s, const char *what) {
    struct sq_dist_nccl *n = d->nccl;
    double deadline = now_s() + d->cfg.timeout_s;
    for (int spin = 0;; spin++) {
        ncclResult_t st = ncclSuccess;
        ncclResult_t q = ncclCommGetAsyncError(n->comm, &st);
        if (q != ncclSuccess) st = q;
        if (st != ncclSuccess && st != ncclInProgress)
            return sq_errorf("NCCL error at '%s': %s (%s)", what, ncclGetErrorString(st), ncclGetLastError(n->comm));
        bool done = st == ncclSuccess;
        if (done && s) {
            cudaError_t e = cudaStreamQuery(s);
            if (e != cudaSuccess && e != cudaErrorNotReady)
                return sq_errorf("CUDA error %s at '%s'", cudaGetErrorString(e), what);
            done = e == cudaSuccess;
        }
        if (done) return SQ_OK;
        if (d->poll_peers(d) != SQ_OK) return SQ_FAIL;
        if (now_s() > deadline)
            return sq_errorf("timed out after %.0f s in the NCCL exchange at '%s': a rank hangs, or died without its "
                             "connection closing (--rank-timeout)", d->cfg.timeout_s, what);
        if (spin > 1000) usleep(50);   // spin briefly (a step's exchange takes microseconds), then yield
    }
}

int sq_dist_nccl_unique_id(void *id, size_t size) {
    if (size < sizeof(ncclUniqueId)) return sq_errorf("NCCL id: %zu bytes, needs %zu", size, sizeof(ncclUniqueId));
    ncclUniqueId u;
    ncclResult_t r = ncclGetUniqueId(&u);
    if (r != ncclSuccess) return sq_errorf("ncclGetUniqueId: %s", ncclGetErrorString(r));
    memcpy(id, &u, sizeof u);
    return SQ_OK;
}

int sq_dist_nccl_open(sq_dist *d, const void *id_bytes) {
    // NVLink multicast (NVLS) buys nothing for records of a few hundred bytes, costs
    // GPU memory for its buffers, and some machines' drivers refuse it: off unless the
    // user says otherwise
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    ncclUniqueId id;
    memcpy(&id, id_bytes, sizeof id);
    struct sq_dist_nccl *n = calloc(1, sizeof *n);
    if (!n) return sq_errorf("out of host memory");
    d->nccl = n;
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    ncclResult_t r = ncclCommInitRankConfig(&n->comm, d->cfg.world_size, id, d->cfg.rank, &cfg);
    if (r != ncclSuccess && r != ncclInProgress) {
        d->nccl = NULL;
        free(n);
        return sq_errorf("ncclCommInitRankConfig (rank %d of %d): %s", d->cfg.rank, d->cfg.world_size, ncclGetErrorString(r));
    }
    if (wait_nccl(d, NULL, "NCCL start") != SQ_OK) return SQ_FAIL;
    CUDA_TRY(cudaStreamCreateWithFlags(&n->stream, cudaStreamNonBlocking));
    return SQ_OK;
}

int sq_dist_nccl_allgather(sq_dist *d, const void *mine, size_t bytes, void *all, const char *what) {
    struct sq_dist_nccl *n = d->nccl;
    size_t need = bytes * (size_t)(d->cfg.world_size + 1);
    if (need > n->cap) {
        if (n->dbuf) CUDA_TRY(cudaFree(n->dbuf));
        if (n->hbuf) CUDA_TRY(cudaFreeHost(n->hbuf));
        n->dbuf = n->hbuf = NULL;
        n->cap = 0;
        CUDA_TRY(cudaMalloc((void **)&n->dbuf, need));
        CUDA_TRY(cudaMallocHost((void **)&n->hbuf, need));
        n->cap = need;
    }
    char *send = n->dbuf, *recv = n->dbuf + bytes;
    memcpy(n->hbuf, mine, bytes);
    CUDA_TRY(cudaMemcpyAsync(send, n->hbuf, bytes, cudaMemcpyHostToDevice, n->stream));
    ncclResult_t r = ncclAllGather(send, recv, bytes, ncclUint8, n->comm, n->stream);
    if (r != ncclSuccess && r != ncclInProgress) return sq_errorf("ncclAllGather at '%s': %s", what, ncclGetErrorString(r));
    if (wait_nccl(d, NULL, what) != SQ_OK) return SQ_FAIL;   // enqueued
    cudaError_t e = cudaMemcpyAsync(n->hbuf + bytes, recv, bytes * (size_t)d->cfg.world_size, cudaMemcpyDeviceToHost, n->stream);
    if (e != cudaSuccess) return sq_errorf("CUDA error %s at '%s'", cudaGetErrorString(e), what);
    if (wait_nccl(d, n->stream, what) != SQ_OK) return SQ_FAIL;   // arrived
    memcpy(all, n->hbuf + bytes, bytes * (size_t)d->cfg.world_size);
    return SQ_OK;
}

void sq_dist_nccl_close(sq_dist *d, bool abort) {
    struct sq_dist_nccl *n = d->nccl;
    d->nccl = NULL;
    if (!n) return;
    if (n->comm) {
        // a healthy communicator is finalised (its peers may still be flushing);
        // a broken one is aborted, which never waits for the others
        if (!abort && ncclCommFinalize(n->comm) == ncclSuccess) {
            ncclResult_t st = ncclInProgress;
            double deadline = now_s() + 10;
            while (st == ncclInProgress && now_s() < deadline && ncclCommGetAsyncError(n->comm, &st) == ncclSuccess) usleep(100);
            if (st == ncclSuccess) ncclCommDestroy(n->comm);
            else ncclCommAbort(n->comm);
        } else {
            ncclCommAbort(n->comm);
        }
    }
    if (n->stream) cudaStreamDestroy(n->stream);
    if (n->dbuf) cudaFree(n->dbuf);
    if (n->hbuf) cudaFreeHost(n->hbuf);
    free(n);
}

#else

bool sq_dist_nccl_compiled(void) { return false; }

int sq_dist_nccl_unique_id(void *id, size_t size) {
    (void)id; (void)size;
    return sq_errorf("this build of sd-qzo has no NCCL (meson found no nccl.h and libnccl; see README, \"Several GPUs\")");
}

int sq_dist_nccl_open(sq_dist *d, const void *id) {
    (void)d; (void)id;
    return sq_dist_nccl_unique_id(NULL, 0);
}

int sq_dist_nccl_allgather(sq_dist *d, const void *mine, size_t bytes, void *all, const char *what) {
    (void)d; (void)mine; (void)bytes; (void)all;
    return sq_errorf("exchange '%s': no NCCL in this build", what);
}

void sq_dist_nccl_close(sq_dist *d, bool abort) { (void)d; (void)abort; }

#endif
