// tests/gpu/test_gpu_update_terms.c: sq_qzo_update_terms (the batched QZO update: every
// layer and every term of a step in one kernel launch) on CUDA against the CPU's, bit
// for bit, on the cases of tests/update_terms_ref.h: layers of odd sizes (one empty,
// one of 4087 scales, not a multiple of the block), scales of both signs and zeros,
// terms mixing update and undo, relative and absolute. In sequence on the same
// scales, so the device's cached layer table is exercised:
// - 4 terms on all layers (the table is uploaded), then 3 more (the cached table);
// - 5 terms on 3 of the layers in another order (a new table);
// - 70 terms on all layers again (the table again; two launches of 64 + 6 terms);
// - the per-layer CUDA update (one sq_qzo_update per term and layer) == the CPU's too,
//   undo included (its 1 - c·z is not contracted into an fma: kernels/quant.h).
// Skips (exit 77) without a GPU.
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "kernels/backend.h"
#include "kernels/quant.h"
#include "tests/gpu/gpu_start.h"
#include "tests/test_util.h"
#include "tests/update_terms_ref.h"

static float *host[UT_LAYERS], *back[UT_LAYERS];
static sq_tensor hts[UT_LAYERS], dts[UT_LAYERS];

// Device scales == host scales, bit for bit, read into a NaN-poisoned buffer.
static bool same_on_both(void) {
    bool same = true;
    for (int l = 0; l < UT_LAYERS; l++) {
        tu_poison(back[l], ut_count(l));
        SQ_CHECK(sq_tensor_to_host_f32(back[l], &dts[l]) == SQ_OK, "%s", sq_error_message());
        same = same && !memcmp(back[l], host[l], (size_t)ut_count(l) * sizeof(float));
    }
    return same;
}

// The same terms through sq_qzo_update_terms on both devices, for the layers `pick`.
static void step_both(const int *pick, int n_layers, int n_terms, uint64_t seed, const char *what) {
    uint64_t all_bases[UT_LAYERS], base[UT_LAYERS];
    ut_index_bases(all_bases);
    sq_tensor *hp[UT_LAYERS], *dp[UT_LAYERS];
    for (int i = 0; i < n_layers; i++) {
        hp[i] = &hts[pick[i]];
        dp[i] = &dts[pick[i]];
        base[i] = all_bases[pick[i]];
    }
    sq_perturb terms[UT_MAX_TERMS];
    float coeffs[UT_MAX_TERMS];
    ut_terms(terms, coeffs, n_terms, &seed);
    sq_qzo_update_terms(hp, base, n_layers, terms, coeffs, n_terms);
    sq_qzo_update_terms(dp, base, n_layers, terms, coeffs, n_terms);
    bool same = same_on_both();
    TU_CHECK(same, "%s: CUDA != CPU", what);
    printf("%s: %s\n", what, same ? "bit-identical to the CPU" : "DIFFERENT from the CPU");
}

int main(void) {
    sq_device dev;
    int start = tu_gpu_start(&dev);
    if (start) return start;
    uint64_t rs = 31;
    for (int l = 0; l < UT_LAYERS; l++) {
        host[l] = malloc((size_t)(ut_count(l) + 1) * sizeof(float));
        back[l] = malloc((size_t)(ut_count(l) + 1) * sizeof(float));
        SQ_CHECK(host[l] && back[l], "out of memory");
        ut_fill_scales(host[l], ut_count(l), &rs);
        hts[l] = sq_tensor_view(host[l], SQ_F32, SQ_CPU, 2, ut_shape[l]);
        SQ_CHECK(sq_tensor_alloc(&dts[l], SQ_F32, SQ_CUDA, 2, ut_shape[l]) == SQ_OK &&
                     sq_tensor_from_host_f32(&dts[l], host[l]) == SQ_OK,
                 "%s", sq_error_message());
    }
    const int all[UT_LAYERS] = {0, 1, 2, 3, 4, 5, 6}, some[3] = {6, 1, 4};
    step_both(all, UT_LAYERS, 4, 1, "4 terms, all layers (table uploaded)");
    step_both(all, UT_LAYERS, 3, 2, "3 terms, all layers (table cached)");
    step_both(some, 3, 5, 3, "5 terms, layers 6, 1, 4 (another table)");
    step_both(all, UT_LAYERS, UT_MAX_TERMS, 4, "70 terms, all layers (two launches)");

    // the per-layer op on both devices: the reference order of the batched tests
    uint64_t base[UT_LAYERS];
    ut_index_bases(base);
    sq_tensor *hp[UT_LAYERS], *dp[UT_LAYERS];
    for (int l = 0; l < UT_LAYERS; l++) {
        hp[l] = &hts[l];
        dp[l] = &dts[l];
    }
    sq_perturb terms[6];
    float coeffs[6];
    uint64_t ts = 5;
    ut_terms(terms, coeffs, 6, &ts);
    ut_reference(hp, base, UT_LAYERS, terms, coeffs, 6);
    ut_reference(dp, base, UT_LAYERS, terms, coeffs, 6);
    bool same = same_on_both();
    TU_CHECK(same, "per-layer update and undo: CUDA != CPU");
    printf("6 terms one layer at a time (sq_qzo_update): %s\n", same ? "bit-identical to the CPU" : "DIFFERENT from the CPU");

    for (int l = 0; l < UT_LAYERS; l++) {
        sq_tensor_free(&dts[l]);
        free(host[l]);
        free(back[l]);
    }
    return tu_finish("test_gpu_update_terms");
}
