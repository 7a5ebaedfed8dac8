// tests/unit/test_ops_adaln.c: the fused adaLN ops on the CPU equal the separate ops
// bit for bit (sq_layernorm_modulate = sq_layernorm + tr_modulate;
// sq_gated_add_layernorm_modulate = sq_gated_add + both), so the MMDiT's fp32
// golden results do not move when it uses them. Shift and scale are views into one
// (B, 6C) adaLN output as mmdit/ chunks it for one sample, copies for two; the
// fused ops run out of place and in place, with and without a gate.
#include <string.h>

#include "tests/ops_ref.h"
#include "tests/unit/ops_test_util.h"

static bool same_bits(const sq_tensor *a, const sq_tensor *b) {
    return memcmp(a->data, b->data, (size_t)sq_tensor_numel(a) * sizeof(float)) == 0;
}

static sq_tensor copy_of(const sq_tensor *t) {
    sq_tensor c = ot_poisoned(t->ndim, t->shape);
    memcpy(c.data, t->data, (size_t)sq_tensor_numel(t) * sizeof(float));
    return c;
}

static void adaln_case(int64_t B, int64_t T, int64_t C) {
    char what[96];
    snprintf(what, sizeof what, "B %lld T %lld C %lld", (long long)B, (long long)T, (long long)C);
    sq_tensor x = ot_rand(3, SQ_SHAPE(B, T, C), -3, 5), y = ot_rand(3, SQ_SHAPE(B, T, C), -2, 2);
    sq_tensor mod = ot_rand(2, SQ_SHAPE(B, 6 * C), -1, 1), vec[3];
    for (int i = 0; i < 3; i++) {   // shift, scale, gate: chunks 1, 2, 5 of the adaLN output
        int chunk = i == 2 ? 5 : i + 1;
        if (B == 1) {
            vec[i] = sq_tensor_view(F32(mod) + chunk * C, SQ_F32, SQ_CPU, 2, SQ_SHAPE(1, C));
        } else {
            vec[i] = ot_poisoned(2, SQ_SHAPE(B, C));
            sq_slice(&vec[i], &mod, 1, chunk * C);
        }
    }
    sq_tensor *shift = &vec[0], *scale = &vec[1], *gate = &vec[2];

    // layernorm + modulate
    sq_tensor ref = ot_poisoned(3, x.shape), out = ot_poisoned(3, x.shape);
    sq_layernorm(&ref, &x, NULL, NULL, 1e-6f);
    tr_modulate(&ref, &ref, shift, scale);
    sq_layernorm_modulate(&out, &x, shift, scale, 1e-6f);
    TU_CHECK(same_bits(&out, &ref), "layernorm_modulate %s: differs from layernorm + modulate", what);
    sq_tensor xi = copy_of(&x);
    sq_layernorm_modulate(&xi, &xi, shift, scale, 1e-6f);
    TU_CHECK(same_bits(&xi, &ref), "layernorm_modulate %s: in place differs", what);

    // gated residual + layernorm + modulate, with the gate and without
    for (int gated = 0; gated < 2; gated++) {
        sq_tensor xr = copy_of(&x), xf = copy_of(&x), h = ot_poisoned(3, x.shape);
        sq_gated_add(&xr, gated ? gate : NULL, &y);
        sq_layernorm(&ref, &xr, NULL, NULL, 1e-6f);
        tr_modulate(&ref, &ref, shift, scale);
        sq_gated_add_layernorm_modulate(&xf, gated ? gate : NULL, &y, &h, shift, scale, 1e-6f);
        TU_CHECK(same_bits(&xf, &xr), "gated_add_layernorm_modulate %s gate %d: x differs from gated_add", what, gated);
        TU_CHECK(same_bits(&h, &ref), "gated_add_layernorm_modulate %s gate %d: h differs from the separate ops", what,
                 gated);
        sq_tensor_free(&xr); sq_tensor_free(&xf); sq_tensor_free(&h);
    }
    printf("  %-22s fused == separate ops, bit for bit\n", what);
    for (int i = 0; i < 3; i++) sq_tensor_free(&vec[i]);
    sq_tensor_free(&x); sq_tensor_free(&y); sq_tensor_free(&mod); sq_tensor_free(&ref); sq_tensor_free(&out);
    sq_tensor_free(&xi);
}

int main(void) {
    adaln_case(1, 1, 8);
    adaln_case(1, 37, 64);
    adaln_case(2, 17, 129);
    adaln_case(1, 333, 2432);
    adaln_case(2, 77, 2432);
    return tu_finish("test_ops_adaln");
}
