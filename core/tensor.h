// core/tensor.h: the one tensor struct every module passes around.
// A tensor is a contiguous row-major block of up to 4 dimensions, on the host or on
// a CUDA device, that either owns its memory (sq_tensor_free releases it) or borrows
// it (a view into an mmapped checkpoint, an arena, or another tensor).
// Shapes are outermost first, like PyTorch: a (B,T,C) activation has shape {B,T,C}.
#ifndef SQ_TENSOR_H
#define SQ_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SQ_MAX_DIMS 4

typedef enum { SQ_CPU = 0, SQ_CUDA = 1 } sq_device;

typedef struct {
    void *data;
    sq_dtype dtype;
    sq_device device;
    int ndim;
    int64_t shape[SQ_MAX_DIMS];
    bool owned;
} sq_tensor;

// Device memory hooks: core/ knows nothing of CUDA; kernels/cuda registers these
// at start-up so tensors and arenas can live on the GPU.
typedef struct {
    void *(*alloc)(size_t bytes);                          // NULL on failure
    void (*free)(void *ptr);
    int (*copy)(void *dst, sq_device dst_dev, const void *src, sq_device src_dev, size_t bytes);
} sq_device_hooks;
void sq_set_device_hooks(const sq_device_hooks *hooks);
const sq_device_hooks *sq_get_device_hooks(void);          // NULL when no CUDA backend

int64_t sq_shape_numel(int ndim, const int64_t *shape);
int64_t sq_tensor_numel(const sq_tensor *t);
size_t sq_tensor_nbytes(const sq_tensor *t);
bool sq_tensor_same_shape(const sq_tensor *a, const sq_tensor *b);
// "bf16[2,77,4096]@cpu" into buf, for messages.
const char *sq_tensor_describe(const sq_tensor *t, char *buf, size_t size);

// A borrowed view of existing memory.
sq_tensor sq_tensor_view(void *data, sq_dtype dtype, sq_device device, int ndim, const int64_t *shape);
// Same memory, new shape (numel must match). Never copies.
sq_tensor sq_tensor_reshape(const sq_tensor *t, int ndim, const int64_t *shape);
// Allocates an owned tensor (uninitialised). Returns SQ_FAIL with a message on OOM
// or when CUDA memory is asked for without a CUDA backend.
int sq_tensor_alloc(sq_tensor *t, sq_dtype dtype, sq_device device, int ndim, const int64_t *shape);
void sq_tensor_free(sq_tensor *t);   // no-op for views; leaves t zeroed

// Copies between tensors of equal numel on any devices, converting dtype on the
// host when dtypes differ (f32/bf16/f16 only). Used for loading and uploading.
int sq_tensor_copy(sq_tensor *dst, const sq_tensor *src);
// Host float array <-> tensor of any device and float dtype.
int sq_tensor_from_host_f32(sq_tensor *dst, const float *src);
int sq_tensor_to_host_f32(float *dst, const sq_tensor *src);

// Shape helpers: sq_shape2(a,b) etc. fill a static-free array literal.
#define SQ_SHAPE(...) ((const int64_t[]){__VA_ARGS__})

#ifdef __cplusplus
}
#endif

#endif
