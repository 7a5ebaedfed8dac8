// kernels/cuda/cudnn_context.cuh: what every cuDNN op shares (convolution, fused
// attention): the one handle, so the library is started once; the one workspace, so
// the device holds a single buffer sized by the largest plan seen; and the one plan
// cache, so each op keeps its per-shape plans in the same small table with the same
// eviction. Callers fall back to their own kernels when the handle cannot be made or
// the workspace cannot grow. Not thread-safe: like every op here, one host thread
// drives the default stream.
#ifndef SQ_CUDNN_CONTEXT_CUH
#define SQ_CUDNN_CONTEXT_CUH

#ifdef SQ_HAVE_CUDNN
#include <stddef.h>

#include "kernels/cuda/check.h"

// The shared handle, created on first use; nullptr when cudnnCreate failed (said once
// on stderr, naming `who` falls back to what).
cudnnHandle_t sq_cudnn_handle(const char *fallback_note);
// Makes the shared workspace at least `bytes` long (frees and reallocates when it
// grows). False, with the CUDA error cleared, when the device is out of memory.
bool sq_cudnn_workspace_reserve(size_t bytes);
// The workspace now (valid until the next reserve that grows it, or a release);
// nullptr if empty. Ops reserve their plan's size before every call, so a released
// workspace comes back at the size the next op needs.
void *sq_cudnn_workspace(void);
// Frees the workspace; returns the bytes given back. Training calls it (through
// sq_device_trim) between phases: the VAE's convolutions want far more than the
// MMDiT's attention, and that memory would otherwise stay held for the whole run.
size_t sq_cudnn_workspace_release(void);

// ---- plan cache ----
// Per-shape plans (descriptors, a chosen algorithm or execution plan, its workspace
// size), built on a shape's first call and reused after. An entry is keyed by the op
// and up to SQ_CUDNN_KEY_MAX key bytes, compared with memcmp (so a key struct must have
// no padding); the plan itself is opaque here, owned by the cache once put, and freed
// through its destroy callback when evicted. A plan the op could not build is cached
// too (the op marks it failed), so a shape is never tried twice. SQ_CUDNN_PLAN_CAP
// entries in all; when full, the entries are evicted round-robin. The sizes: SD3.5's
// MMDiT runs a handful of attention shapes per resolution, its VAE a few dozen
// convolution shapes, so a bucketed run's working set stays well inside the table.
enum { SQ_CUDNN_KEY_MAX = 64, SQ_CUDNN_PLAN_CAP = 96 };
typedef enum { SQ_CUDNN_OP_CONV = 1, SQ_CUDNN_OP_ATTENTION = 2 } sq_cudnn_op;
// The plan put for (op, key), or nullptr if none is cached.
void *sq_cudnn_plan_find(sq_cudnn_op op, const void *key, size_t key_bytes);
// Caches plan for (op, key) (not already cached; key_bytes <= SQ_CUDNN_KEY_MAX),
// evicting another entry, through its destroy, when the table is full.
void sq_cudnn_plan_put(sq_cudnn_op op, const void *key, size_t key_bytes, void *plan, void (*destroy)(void *plan));
#endif

#endif
