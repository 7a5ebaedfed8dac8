// tests/unit/ops_test_util.h: shared helpers for the op tests: random CPU tensors,
// NaN-poisoned outputs and a comparison against a double-precision reference.
#ifndef SQ_OPS_TEST_UTIL_H
#define SQ_OPS_TEST_UTIL_H

#include <stdlib.h>

#include "core/error.h"
#include "core/tensor.h"
#include "kernels/ops.h"
#include "tests/test_util.h"

static uint64_t ot_seed = 0x5eed;

static inline sq_tensor ot_rand(int ndim, const int64_t *shape, float lo, float hi) {
    sq_tensor t;
    SQ_CHECK(sq_tensor_alloc(&t, SQ_F32, SQ_CPU, ndim, shape) == 0, "alloc");
    tu_fill_uniform(t.data, sq_tensor_numel(&t), &ot_seed, lo, hi);
    return t;
}

static inline sq_tensor ot_poisoned(int ndim, const int64_t *shape) {
    sq_tensor t;
    SQ_CHECK(sq_tensor_alloc(&t, SQ_F32, SQ_CPU, ndim, shape) == 0, "alloc");
    tu_poison(t.data, sq_tensor_numel(&t));
    return t;
}

static inline double *ot_ref(int64_t n) {
    double *r = malloc((size_t)n * sizeof(double));
    for (int64_t i = 0; i < n; i++) r[i] = NAN;
    return r;
}

// Checks out against ref (max relative error, see tests/test_util.h) and frees ref.
static inline void ot_expect(const char *what, const sq_tensor *out, double *ref, double tol) {
    double e = tu_rel_err_f32_f64(out->data, ref, sq_tensor_numel(out));
    TU_CHECK(e <= tol, "%s: relative error %.3g > %.3g", what, e, tol);
    free(ref);
}

#define F32(t) ((float *)(t).data)

#endif
