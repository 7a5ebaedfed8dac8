// core/tensor.c: tensor allocation, views and host-side copies.
#include "core/tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

static sq_device_hooks g_hooks;
static bool g_have_hooks;

void sq_set_device_hooks(const sq_device_hooks *hooks) {
    if (hooks) { g_hooks = *hooks; g_have_hooks = true; }
    else g_have_hooks = false;
}

const sq_device_hooks *sq_get_device_hooks(void) { return g_have_hooks ? &g_hooks : NULL; }

int64_t sq_shape_numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

int64_t sq_tensor_numel(const sq_tensor *t) { return sq_shape_numel(t->ndim, t->shape); }

size_t sq_tensor_nbytes(const sq_tensor *t) { return sq_dtype_bytes(t->dtype, sq_tensor_numel(t)); }

bool sq_tensor_same_shape(const sq_tensor *a, const sq_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

const char *sq_tensor_describe(const sq_tensor *t, char *buf, size_t size) {
    int n = snprintf(buf, size, "%s[", sq_dtype_name(t->dtype));
    for (int i = 0; i < t->ndim && n > 0 && (size_t)n < size; i++)
        n += snprintf(buf + n, size - (size_t)n, i ? ",%lld" : "%lld", (long long)t->shape[i]);
    if (n > 0 && (size_t)n < size) snprintf(buf + n, size - (size_t)n, "]@%s", t->device == SQ_CUDA ? "cuda" : "cpu");
    return buf;
}

sq_tensor sq_tensor_view(void *data, sq_dtype dtype, sq_device device, int ndim, const int64_t *shape) {
    SQ_CHECK(ndim >= 0 && ndim <= SQ_MAX_DIMS, "tensor with %d dims (max %d)", ndim, SQ_MAX_DIMS);
    sq_tensor t = {.data = data, .dtype = dtype, .device = device, .ndim = ndim, .owned = false};
    for (int i = 0; i < ndim; i++) t.shape[i] = shape[i];
    return t;
}

sq_tensor sq_tensor_reshape(const sq_tensor *t, int ndim, const int64_t *shape) {
    SQ_CHECK(sq_shape_numel(ndim, shape) == sq_tensor_numel(t), "reshape changes element count");
    return sq_tensor_view(t->data, t->dtype, t->device, ndim, shape);
}

int sq_tensor_alloc(sq_tensor *t, sq_dtype dtype, sq_device device, int ndim, const int64_t *shape) {
    *t = sq_tensor_view(NULL, dtype, device, ndim, shape);
    size_t bytes = sq_tensor_nbytes(t);
    if (device == SQ_CPU) {
        t->data = sq_malloc(bytes);
    } else {
        const sq_device_hooks *h = sq_get_device_hooks();
        if (!h) return sq_errorf("CUDA tensor requested but this build has no CUDA backend");
        t->data = h->alloc(bytes);
        if (!t->data) return sq_errorf("out of GPU memory allocating %zu bytes", bytes);
    }
    if (!t->data) return SQ_FAIL;
    t->owned = true;
    return SQ_OK;
}

void sq_tensor_free(sq_tensor *t) {
    if (t->owned && t->data) {
        if (t->device == SQ_CPU) free(t->data);
        else if (sq_get_device_hooks()) sq_get_device_hooks()->free(t->data);
    }
    memset(t, 0, sizeof *t);
}

static int raw_copy(void *dst, sq_device dd, const void *src, sq_device sd, size_t bytes) {
    if (dd == SQ_CPU && sd == SQ_CPU) { memcpy(dst, src, bytes); return SQ_OK; }
    const sq_device_hooks *h = sq_get_device_hooks();
    if (!h) return sq_errorf("CUDA copy requested but this build has no CUDA backend");
    return h->copy(dst, dd, src, sd, bytes);
}

int sq_tensor_copy(sq_tensor *dst, const sq_tensor *src) {
    int64_t n = sq_tensor_numel(src);
    if (n != sq_tensor_numel(dst)) return sq_errorf("tensor copy: %lld vs %lld elements", (long long)sq_tensor_numel(dst), (long long)n);
    if (dst->dtype == src->dtype) return raw_copy(dst->data, dst->device, src->data, src->device, sq_tensor_nbytes(src));
    // dtype conversion goes through host f32
    float *tmp = sq_malloc((size_t)n * sizeof(float));
    if (!tmp) return SQ_FAIL;
    int rc = sq_tensor_to_host_f32(tmp, src);
    if (rc == SQ_OK) rc = sq_tensor_from_host_f32(dst, tmp);
    free(tmp);
    return rc;
}

int sq_tensor_from_host_f32(sq_tensor *dst, const float *src) {
    int64_t n = sq_tensor_numel(dst);
    if (dst->device == SQ_CPU) {
        if (sq_convert_from_f32(dst->data, dst->dtype, src, n))
            return sq_errorf("cannot convert f32 to %s", sq_dtype_name(dst->dtype));
        return SQ_OK;
    }
    size_t bytes = sq_tensor_nbytes(dst);
    void *tmp = sq_malloc(bytes);
    if (!tmp) return SQ_FAIL;
    int rc = sq_convert_from_f32(tmp, dst->dtype, src, n) ? sq_errorf("cannot convert f32 to %s", sq_dtype_name(dst->dtype))
                                                          : raw_copy(dst->data, dst->device, tmp, SQ_CPU, bytes);
    free(tmp);
    return rc;
}

int sq_tensor_to_host_f32(float *dst, const sq_tensor *src) {
    int64_t n = sq_tensor_numel(src);
    if (src->device == SQ_CPU) {
        if (sq_convert_to_f32(dst, src->data, src->dtype, n))
            return sq_errorf("cannot convert %s to f32", sq_dtype_name(src->dtype));
        return SQ_OK;
    }
    size_t bytes = sq_tensor_nbytes(src);
    void *tmp = sq_malloc(bytes);
    if (!tmp) return SQ_FAIL;
    int rc = raw_copy(tmp, SQ_CPU, src->data, src->device, bytes);
    if (rc == SQ_OK && sq_convert_to_f32(dst, tmp, src->dtype, n)) rc = sq_errorf("cannot convert %s to f32", sq_dtype_name(src->dtype));
    free(tmp);
    return rc;
}
