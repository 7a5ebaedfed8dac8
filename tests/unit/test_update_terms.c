// tests/unit/test_update_terms.c: sq_qzo_update_terms, the batched QZO update (every
// layer, several terms, one call), against one sq_qzo_update per term and layer in
// order (tests/update_terms_ref.h), bit for bit (memcmp), on the CPU:
// - 1, 3, 4 (the default queries), 64 (the momentum ring) and 70 terms mixing update
//   and undo, relative and absolute, over layers of odd sizes (one empty) with
//   scales of both signs and zeros, where the projection at 0 acts;
// - no terms, or no layers, change nothing.
#include <stdlib.h>
#include <string.h>

#include "kernels/quant.h"
#include "tests/test_util.h"
#include "tests/update_terms_ref.h"

typedef struct {
    float *data[UT_LAYERS];
    sq_tensor t[UT_LAYERS];
    sq_tensor *p[UT_LAYERS];
} layers;

static void layers_make(layers *ls, uint64_t seed) {
    uint64_t rs = seed;
    for (int l = 0; l < UT_LAYERS; l++) {
        ls->data[l] = malloc((size_t)(ut_count(l) + 1) * sizeof(float));
        ut_fill_scales(ls->data[l], ut_count(l), &rs);
        ls->t[l] = sq_tensor_view(ls->data[l], SQ_F32, SQ_CPU, 2, ut_shape[l]);
        ls->p[l] = &ls->t[l];
    }
}

static void layers_free(layers *ls) {
    for (int l = 0; l < UT_LAYERS; l++) free(ls->data[l]);
}

static bool layers_equal(const layers *a, const layers *b) {
    for (int l = 0; l < UT_LAYERS; l++)
        if (memcmp(a->data[l], b->data[l], (size_t)ut_count(l) * sizeof(float))) return false;
    return true;
}

static void test_terms(int n_terms) {
    uint64_t base[UT_LAYERS];
    ut_index_bases(base);
    sq_perturb terms[UT_MAX_TERMS];
    float coeffs[UT_MAX_TERMS];
    uint64_t rs = 500 + (uint64_t)n_terms;
    ut_terms(terms, coeffs, n_terms, &rs);
    layers start, ref, got;
    layers_make(&start, 7);
    layers_make(&ref, 7);
    layers_make(&got, 7);
    ut_reference(ref.p, base, UT_LAYERS, terms, coeffs, n_terms);
    sq_qzo_update_terms(got.p, base, UT_LAYERS, terms, coeffs, n_terms);
    int64_t changed = 0, to_zero = 0, total = 0;
    for (int l = 0; l < UT_LAYERS; l++)
        for (int64_t j = 0; j < ut_count(l); j++) {
            changed += got.data[l][j] != start.data[l][j];
            to_zero += got.data[l][j] == 0.0f && start.data[l][j] != 0.0f;
            total++;
        }
    bool same = layers_equal(&got, &ref);
    TU_CHECK(same, "%d terms: the batched update differs from one update per term and layer", n_terms);
    TU_CHECK(changed > total / 2, "%d terms: the update moved only %lld of %lld scales", n_terms, (long long)changed,
             (long long)total);
    TU_CHECK(n_terms < 3 || to_zero > 0, "%d terms: the projection at 0 is exercised", n_terms);
    printf("%2d terms, %d layers (%lld scales): %s the per-layer sequence (%lld changed, %lld held at 0)\n", n_terms,
           UT_LAYERS, (long long)total, same ? "bit-identical to" : "DIFFERENT from", (long long)changed,
           (long long)to_zero);
    layers_free(&start);
    layers_free(&ref);
    layers_free(&got);
}

static void test_nothing_to_do(void) {
    uint64_t base[UT_LAYERS];
    ut_index_bases(base);
    sq_perturb terms[3];
    float coeffs[3];
    uint64_t rs = 3;
    ut_terms(terms, coeffs, 3, &rs);
    layers start, got;
    layers_make(&start, 9);
    layers_make(&got, 9);
    sq_qzo_update_terms(got.p, base, UT_LAYERS, terms, coeffs, 0);
    sq_qzo_update_terms(got.p, base, 0, terms, coeffs, 3);
    TU_CHECK(layers_equal(&got, &start), "no terms or no layers: the scales are unchanged");
    layers_free(&start);
    layers_free(&got);
}

int main(void) {
    static const int counts[] = {1, 3, 4, 64, UT_MAX_TERMS};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) test_terms(counts[i]);
    test_nothing_to_do();
    return tu_finish("test_update_terms");
}
