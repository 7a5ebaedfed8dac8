// tests/update_terms_ref.h: the cases of the batched QZO update tests
// (tests/unit/test_update_terms.c on the CPU, tests/gpu/test_gpu_update_terms.c on
// CUDA) and their reference: sq_qzo_update once per term and layer, term-major, the
// order qzo/qzo.c applied a step's terms in before sq_qzo_update_terms.
// Header-only (static); only the tests include it.
#ifndef SQ_TESTS_UPDATE_TERMS_REF_H
#define SQ_TESTS_UPDATE_TERMS_REF_H

#include <stdint.h>

#include "kernels/quant.h"
#include "tests/test_util.h"

// Layers of odd sizes: one scale, an empty layer, exactly one block of 256, one past
// it, and 4087 (not a multiple of the CUDA block of 256); index bases with gaps, one past 2^32.
enum { UT_LAYERS = 7, UT_MAX_TERMS = 70 };
static const int64_t ut_shape[UT_LAYERS][2] = {{1, 1}, {3, 7}, {0, 5}, {1, 256}, {31, 33}, {257, 1}, {61, 67}};

static inline int64_t ut_count(int l) { return ut_shape[l][0] * ut_shape[l][1]; }

static inline void ut_index_bases(uint64_t *base) {
    uint64_t next = 0;
    for (int l = 0; l < UT_LAYERS; l++) {
        base[l] = l == 4 ? (1ull << 33) + 5 : next;
        next = base[l] + (uint64_t)ut_count(l) + 1000 * (uint64_t)l;
    }
}

// Scales of both signs (a Q4_0 GGUF base's are negative in about half its blocks:
// sq_scale_same_side), with some exact +0 and -0.
static inline void ut_fill_scales(float *s, int64_t n, uint64_t *rs) {
    tu_fill_uniform(s, n, rs, -0.02f, 0.02f);
    for (int64_t j = 0; j < n; j += 17) s[j] = (j / 17) % 2 ? -0.0f : 0.0f;
}

// n terms mixing update (sign 0 and +1) and undo (sign -1), relative and absolute,
// several seeds and steps; some coefficients large enough that the projection at 0
// acts (relative 0.9: 1 - c·z <= 0 for z >= 1.1; absolute 0.01 against scales of
// 0.02 at most). eps and index_base hold values the op must ignore.
static inline void ut_terms(sq_perturb *terms, float *coeffs, int n, uint64_t *rs) {
    for (int t = 0; t < n; t++) {
        int relative = t % 2 == 0 || t % 7 == 3;
        int sign = t % 3 == 2 ? -1 : t % 5 == 0 ? +1 : 0;
        terms[t] = (sq_perturb){.seed = 11 + (uint64_t)(t % 3), .step = 100 + 7 * (uint64_t)t, .index_base = 999999,
                                .eps = 0.5f, .sign = sign, .relative = relative};
        int big = t % 4 == 1;
        coeffs[t] = relative ? (big ? 0.9f : tu_uniform(rs, -0.05f, 0.05f))
                             : (big ? 0.01f : tu_uniform(rs, -1e-3f, 1e-3f));
    }
}

// The reference: one sq_qzo_update per (term, layer), terms in order, on whichever
// device the scales are.
static inline void ut_reference(sq_tensor *const *scales, const uint64_t *base, int n_layers, const sq_perturb *terms,
                                const float *coeffs, int n_terms) {
    for (int t = 0; t < n_terms; t++)
        for (int l = 0; l < n_layers; l++) {
            sq_perturb p = terms[t];
            p.index_base = base[l];
            sq_qzo_update(scales[l], &p, coeffs[t]);
        }
}

#endif
