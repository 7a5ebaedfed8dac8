// kernels/cuda/cudnn_context.cuh: the one cuDNN handle and the one workspace every
// cuDNN op shares (convolution, fused attention), so the library is started once and
// the device holds a single workspace, sized by the largest plan seen. Callers fall
// back to their own kernels when the handle cannot be made or the workspace cannot
// grow. Not thread-safe: like every op here, one host thread drives the default stream.
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
#endif

#endif
