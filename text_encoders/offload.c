// text_encoders/offload.c: the host block store and the device staging block of
// text_encoders/offload.h.
#include "text_encoders/offload.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "kernels/backend.h"

// cudaMalloc's alignment: the vectorised kernels need aligned operands, and the
// cuBLASLt algorithms kernels/cuda/matmul.cu caches per shape were chosen for
// operands aligned as cudaMalloc aligns them (the heuristic's default 256 bytes).
// A staged weight aligned like a resident one runs the same GEMM: the same bits.
#define BLOCK_ALIGN 256

static size_t aligned(size_t n) { return (n + BLOCK_ALIGN - 1) / BLOCK_ALIGN * BLOCK_ALIGN; }

static size_t packed_bytes(sq_tensor *const *ts, int n) {
    size_t b = 0;
    for (int j = 0; j < n; j++)
        if (ts[j]->data) b += aligned(sq_tensor_nbytes(ts[j]));
    return b;
}

static int allocate(sd_offload *o, int n_blocks, size_t block_bytes, sq_device device) {
    size_t total = (size_t)n_blocks * block_bytes;
    o->n_blocks = n_blocks;
    o->block_bytes = block_bytes;
    // (a staging block on the CPU only happens in tests of the layout: nothing to pin)
    o->host = device == SQ_CUDA ? sq_host_pinned_alloc(total) : NULL;
    o->pinned = o->host != NULL;
    if (!o->pinned) {
        // pageable memory works too: cudaMemcpy stages it through a driver buffer
        if (device == SQ_CUDA)
            sq_log_warn("offload: %.2f GB of host memory could not be page-locked; block uploads will be slower",
                        (double)total / 1e9);
        o->host = malloc(total);
        if (!o->host) return sq_errorf("offload: out of host memory for %d blocks of %zu bytes", n_blocks, block_bytes);
    }
    if (sq_tensor_alloc(&o->staging, SQ_U8, device, 1, SQ_SHAPE((int64_t)block_bytes)) != SQ_OK)
        return sq_error_context("offload: the %zu-byte staging block", block_bytes);
    return SQ_OK;
}

int sd_offload_adopt(sd_offload *o, int n_blocks, int i, sq_tensor *const *ts, int n, sq_device device) {
    size_t bytes = packed_bytes(ts, n);
    if (!o->host && allocate(o, n_blocks, bytes, device) != SQ_OK) return SQ_FAIL;
    if (bytes != o->block_bytes || i < 0 || i >= o->n_blocks)
        return sq_errorf("offload: block %d has %zu bytes of weights, block 0 %zu (blocks must be alike)", i, bytes,
                         o->block_bytes);
    char *p = o->host + (size_t)i * o->block_bytes;
    for (int j = 0; j < n; j++) {
        sq_tensor *t = ts[j];
        if (!t->data) continue;   // a tensor this block does not use (int8's dense w, ...)
        if (t->device != SQ_CPU) return sq_errorf("offload: block %d tensor %d is not on the host", i, j);
        size_t nb = sq_tensor_nbytes(t);
        memcpy(p, t->data, nb);
        sq_tensor view = sq_tensor_view(p, t->dtype, SQ_CPU, t->ndim, t->shape);
        sq_tensor_free(t);
        *t = view;
        p += aligned(nb);
    }
    return SQ_OK;
}

int sd_offload_stage(const sd_offload *o, int i, sq_tensor *const *ts, int n) {
    char *base = o->host + (size_t)i * o->block_bytes;
    sq_tensor src = sq_tensor_view(base, SQ_U8, SQ_CPU, 1, SQ_SHAPE((int64_t)o->block_bytes));
    sq_tensor dst = o->staging;   // a view; the memory it points at is what changes
    // one synchronous copy on the default stream: ordered after the kernels of the
    // block that used the staging block before
    if (sq_tensor_copy(&dst, &src) != SQ_OK) return sq_error_context("offload: uploading block %d", i);
    for (int j = 0; j < n; j++) {
        sq_tensor *t = ts[j];
        if (!t->data) continue;
        size_t off = (size_t)((char *)t->data - base);
        *t = sq_tensor_view((char *)o->staging.data + off, t->dtype, o->staging.device, t->ndim, t->shape);
    }
    return SQ_OK;
}

void sd_offload_free(sd_offload *o) {
    if (o->host) {
        if (o->pinned) sq_host_pinned_free(o->host);
        else free(o->host);
    }
    sq_tensor_free(&o->staging);
    memset(o, 0, sizeof *o);
}
