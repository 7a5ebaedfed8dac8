// text_encoders/offload.h: a model's transformer blocks kept in host memory and
// uploaded one at a time into a single device "staging" block right before each
// runs (sd_text_options.offload, `sd-qzo train --low-vram`). T5-XXL's 24 blocks take
// 4.9 GB in int8 (9.5 GB bf16) but one block only ~200 MB (400 MB), so the GPU holds
// one block + the embedding + activations while encoding, at the price of one
// host-to-device copy of every block per encode (PCIe: ~25 GB/s pinned).
//
// Layout: the blocks of one model all have the same tensors, so each block's tensors
// are packed, in a fixed order and 256-byte aligned, into one contiguous region of
// block_bytes; block i sits at host + i * block_bytes. One cudaMemcpy then uploads a
// whole block, and a tensor's offset inside its block is also its offset inside the
// staging block. The model's block structs keep their tensors as views into the host
// store (device SQ_CPU); sd_offload_stage rebases a copy of a block struct onto the
// staging block, so the forward pass reads every weight "where it is" through the
// same struct either way.
//
// Host memory is page-locked (cudaHostAlloc through kernels/backend.h) when the
// driver grants it, else plain malloc (slower copies, same numbers). Everything runs
// on the default stream, so an upload is ordered after the previous block's kernels
// that read the staging block: no extra synchronisation is needed for correctness.
#ifndef SD_TEXT_OFFLOAD_H
#define SD_TEXT_OFFLOAD_H

#include <stdbool.h>
#include <stddef.h>

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char *host;          // n_blocks * block_bytes; NULL when the model is not offloaded
    bool pinned;         // host came from sq_host_pinned_alloc
    size_t block_bytes;
    int n_blocks;
    sq_tensor staging;   // U8 (block_bytes) on the compute device: the block that runs now
} sd_offload;

// Moves block i's tensors ts[0..n) (owned host tensors, or empty ones, in the same
// order for every block) into the store, freeing each and replacing it by a view of
// its copy. The first call sizes the store for n_blocks blocks like this one and
// allocates the staging block on `device`; a later block of another size is an error.
int sd_offload_adopt(sd_offload *o, int n_blocks, int i, sq_tensor *const *ts, int n, sq_device device);

// Uploads block i into the staging block and rebases ts[0..n) — the tensors of a
// COPY of block i's struct (views into the store) — onto it. SQ_FAIL on a failed copy.
int sd_offload_stage(const sd_offload *o, int i, sq_tensor *const *ts, int n);

void sd_offload_free(sd_offload *o);   // the store and the staging block; safe on a zeroed one

#ifdef __cplusplus
}
#endif

#endif
