// tests/unit/test_ops_layout.c: elementwise ops, adaLN modulate / gated residual,
// copy with dtype conversion, concat / slice / permute / transpose on every dim,
// and the mean / MSE / weighted-MSE reductions, against plain double loops.
#include <math.h>
#include <string.h>

#include "tests/ops_ref.h"
#include "tests/unit/ops_test_util.h"

static void test_elementwise(void) {
    const int64_t n = 999;
    sq_tensor a = ot_rand(1, SQ_SHAPE(n), -3, 3), b = ot_rand(1, SQ_SHAPE(n), -3, 3);
    for (int kind = 0; kind < 6; kind++) {
        sq_tensor out = ot_poisoned(1, SQ_SHAPE(n));
        double *ref = ot_ref(n);
        for (int64_t i = 0; i < n; i++) {
            double x = F32(a)[i], y = F32(b)[i];
            ref[i] = kind == 0 ? x + y : kind == 1 ? x - y : kind == 2 ? x * y : kind == 3 ? 1.5 * x - 0.25
                   : kind == 4 ? 0.5 * x - 2.0 * y : -1.25;
        }
        if (kind == 0) sq_add(&out, &a, &b);
        if (kind == 1) sq_sub(&out, &a, &b);
        if (kind == 2) sq_mul(&out, &a, &b);
        if (kind == 3) sq_scale(&out, &a, 1.5f, -0.25f);
        if (kind == 4) sq_axpby(&out, 0.5f, &a, -2.0f, &b);
        if (kind == 5) sq_fill(&out, -1.25f);
        static const char *names[] = {"add", "sub", "mul", "scale", "axpby", "fill"};
        ot_expect(names[kind], &out, ref, 1e-7);
        sq_tensor_free(&out);
    }
    // row bias and channel bias (in place)
    sq_tensor x = ot_rand(2, SQ_SHAPE(7, 13), -1, 1), rb = ot_rand(1, SQ_SHAPE(13), -1, 1);
    double *ref = ot_ref(7 * 13);
    for (int64_t i = 0; i < 7 * 13; i++) ref[i] = (double)F32(x)[i] + F32(rb)[i % 13];
    tr_add_row_bias(&x, &rb);
    ot_expect("add_row_bias", &x, ref, 1e-7);
    sq_tensor y = ot_rand(4, SQ_SHAPE(2, 3, 4, 5), -1, 1), cb = ot_rand(2, SQ_SHAPE(2, 3), -1, 1);
    ref = ot_ref(120);
    for (int64_t i = 0; i < 120; i++) ref[i] = (double)F32(y)[i] + F32(cb)[i / 20];
    tr_add_channel_bias(&y, &cb);
    ot_expect("add_channel_bias", &y, ref, 1e-7);
    sq_tensor_free(&a); sq_tensor_free(&b); sq_tensor_free(&x); sq_tensor_free(&rb); sq_tensor_free(&y);
    sq_tensor_free(&cb);
}

static void test_adaln(void) {
    const int64_t B = 2, T = 11, C = 24;
    sq_tensor x = ot_rand(3, SQ_SHAPE(B, T, C), -2, 2), sh = ot_rand(2, SQ_SHAPE(B, C), -1, 1);
    sq_tensor sc = ot_rand(2, SQ_SHAPE(B, C), -1, 1), g = ot_rand(2, SQ_SHAPE(B, C), -1, 1);
    sq_tensor y = ot_rand(3, SQ_SHAPE(B, T, C), -2, 2), out = ot_poisoned(3, SQ_SHAPE(B, T, C));
    tr_modulate(&out, &x, &sh, &sc);
    double *ref = ot_ref(B * T * C);
    for (int64_t i = 0; i < B * T * C; i++) {
        int64_t b = i / (T * C), c = i % C;
        ref[i] = F32(x)[i] * (1.0 + F32(sc)[b * C + c]) + F32(sh)[b * C + c];
    }
    ot_expect("modulate", &out, ref, 1e-6);
    ref = ot_ref(B * T * C);
    for (int64_t i = 0; i < B * T * C; i++) ref[i] = F32(x)[i] + (double)F32(g)[(i / (T * C)) * C + i % C] * F32(y)[i];
    sq_gated_add(&x, &g, &y);
    ot_expect("gated_add", &x, ref, 1e-6);
    ref = ot_ref(B * T * C);
    for (int64_t i = 0; i < B * T * C; i++) ref[i] = (double)F32(x)[i] + F32(y)[i];
    sq_gated_add(&x, NULL, &y);
    ot_expect("gated_add without gate", &x, ref, 1e-6);
    sq_tensor_free(&x); sq_tensor_free(&sh); sq_tensor_free(&sc); sq_tensor_free(&g); sq_tensor_free(&y);
    sq_tensor_free(&out);
}

static double at4(const sq_tensor *t, const int64_t *idx) {
    int64_t off = 0;
    for (int d = 0; d < t->ndim; d++) off = off * t->shape[d] + idx[d];
    return F32(*t)[off];
}

static void test_layout(void) {
    const int64_t s[4] = {2, 3, 4, 5};
    sq_tensor x = ot_rand(4, s, -1, 1);
    // every permutation of 4 dims
    int perms = 0;
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++)
            for (int c = 0; c < 4; c++)
                for (int d = 0; d < 4; d++) {
                    if (a == b || a == c || a == d || b == c || b == d || c == d) continue;
                    int p[4] = {a, b, c, d};
                    sq_tensor out = ot_poisoned(4, SQ_SHAPE(s[a], s[b], s[c], s[d]));
                    sq_permute(&out, &x, p);
                    double *ref = ot_ref(120);
                    int64_t i[4];
                    for (i[0] = 0; i[0] < s[a]; i[0]++)
                        for (i[1] = 0; i[1] < s[b]; i[1]++)
                            for (i[2] = 0; i[2] < s[c]; i[2]++)
                                for (i[3] = 0; i[3] < s[d]; i[3]++) {
                                    int64_t src[4];
                                    for (int k = 0; k < 4; k++) src[p[k]] = i[k];
                                    ref[((i[0] * s[b] + i[1]) * s[c] + i[2]) * s[d] + i[3]] = at4(&x, src);
                                }
                    ot_expect("permute", &out, ref, 0);
                    sq_tensor_free(&out);
                    perms++;
                }
    TU_CHECK(perms == 24, "24 permutations");
    // transpose of a 3-D tensor
    sq_tensor t3 = ot_rand(3, SQ_SHAPE(4, 6, 3), -1, 1), t3o = ot_poisoned(3, SQ_SHAPE(3, 6, 4));
    tr_transpose(&t3o, &t3, 0, 2);
    double *ref = ot_ref(72);
    for (int64_t i = 0; i < 4; i++)
        for (int64_t j = 0; j < 6; j++)
            for (int64_t k = 0; k < 3; k++) ref[(k * 6 + j) * 4 + i] = F32(t3)[(i * 6 + j) * 3 + k];
    ot_expect("transpose", &t3o, ref, 0);
    // slice + concat along every dim: concat(slices) == x
    for (int dim = 0; dim < 4; dim++) {
        int64_t cut = s[dim] / 2 ? s[dim] / 2 : 1;
        int64_t sa[4] = {s[0], s[1], s[2], s[3]}, sb[4] = {s[0], s[1], s[2], s[3]};
        sa[dim] = cut;
        sb[dim] = s[dim] - cut;
        sq_tensor pa = ot_poisoned(4, sa), pb = ot_poisoned(4, sb), back = ot_poisoned(4, s);
        sq_slice(&pa, &x, dim, 0);
        sq_slice(&pb, &x, dim, cut);
        // check the slice contents directly
        double *refa = ot_ref(sq_tensor_numel(&pa));
        int64_t i[4], n = 0;
        for (i[0] = 0; i[0] < sa[0]; i[0]++)
            for (i[1] = 0; i[1] < sa[1]; i[1]++)
                for (i[2] = 0; i[2] < sa[2]; i[2]++)
                    for (i[3] = 0; i[3] < sa[3]; i[3]++) refa[n++] = at4(&x, i);
        ot_expect("slice", &pa, refa, 0);
        const sq_tensor *parts[2] = {&pa, &pb};
        sq_concat(&back, parts, 2, dim);
        TU_CHECK(tu_rel_err(F32(back), F32(x), 120) == 0, "concat(slice, slice) along dim %d restores x", dim);
        sq_tensor_free(&pa); sq_tensor_free(&pb); sq_tensor_free(&back);
    }
    // copy with conversion to bf16 and back
    sq_tensor h;
    sq_tensor_alloc(&h, SQ_BF16, SQ_CPU, 4, s);
    sq_copy(&h, &x);
    sq_tensor back = ot_poisoned(4, s);
    sq_copy(&back, &h);
    TU_CHECK(tu_rel_err(F32(back), F32(x), 120) < 0x1p-8, "copy through bf16");
    sq_tensor_free(&h); sq_tensor_free(&back); sq_tensor_free(&x); sq_tensor_free(&t3); sq_tensor_free(&t3o);
}

static void test_reductions(void) {
    const int64_t n = 100003;
    sq_tensor a = ot_rand(1, SQ_SHAPE(n), -1, 3), b = ot_rand(1, SQ_SHAPE(n), -2, 2);
    double mean = 0, mse = 0;
    for (int64_t i = 0; i < n; i++) {
        mean += F32(a)[i];
        mse += ((double)F32(a)[i] - F32(b)[i]) * ((double)F32(a)[i] - F32(b)[i]);
    }
    mean /= n;
    mse /= n;
    TU_CHECK(fabs(tr_mean(&a) - mean) <= 1e-6 * fabs(mean), "mean %g vs %g", tr_mean(&a), mean);
    TU_CHECK(fabs(sq_mse(&a, &b) - mse) <= 1e-6 * mse, "mse %g vs %g", sq_mse(&a, &b), mse);
    // reproducible: same value twice
    TU_CHECK(sq_mse(&a, &b) == sq_mse(&a, &b), "mse deterministic");
    sq_tensor_free(&a); sq_tensor_free(&b);
}

// The loss-mask reduction: sum_c sum_p w[p] (a - b)^2 / (C sum_p w), written out
// here as the formula reads (channel-major, unlike the op's pixel-major order).
static double ref_weighted_mse(const float *a, const float *b, const float *w, int64_t C, int64_t P) {
    double num = 0, den = 0;
    for (int64_t c = 0; c < C; c++)
        for (int64_t p = 0; p < P; p++) {
            double d = (double)a[c * P + p] - (double)b[c * P + p];
            num += (double)w[p] * d * d;
        }
    for (int64_t p = 0; p < P; p++) den += w[p];
    return num / ((double)C * den);
}

static void test_weighted_mse(void) {
    const int64_t C = 16, H = 9, W = 13, P = H * W;
    sq_tensor a = ot_rand(3, SQ_SHAPE(C, H, W), -2, 2), b = ot_rand(3, SQ_SHAPE(C, H, W), -1, 3);
    sq_tensor w = ot_rand(2, SQ_SHAPE(H, W), 0, 1);
    float *wf = w.data;
    for (int64_t p = 0; p < P; p += 3) wf[p] = 0.0f;   // a mask's black pixels
    double ref = ref_weighted_mse(a.data, b.data, wf, C, P), got = sq_weighted_mse(&a, &b, &w);
    TU_CHECK(fabs(got - ref) <= 1e-12 * ref, "weighted mse %.17g vs reference %.17g", got, ref);
    TU_CHECK(sq_weighted_mse(&a, &b, &w) == got, "weighted mse deterministic");
    double plain = sq_mse(&a, &b);
    TU_CHECK(fabs(got - plain) > 1e-3 * plain, "the weights matter: %g vs unweighted %g", got, plain);
    // a flat view of a and b reads the same (C, P) layout
    int64_t n = C * P;
    sq_tensor af = sq_tensor_view(a.data, SQ_F32, SQ_CPU, 1, &n), bf = sq_tensor_view(b.data, SQ_F32, SQ_CPU, 1, &n);
    TU_CHECK(sq_weighted_mse(&af, &bf, &w) == got, "flat views give the same bits");
    // half the pixels at 1, half at 0: the mean over the kept half only
    for (int64_t p = 0; p < P; p++) wf[p] = (p % W) < W / 2 ? 1.0f : 0.0f;
    double half = 0;
    int64_t kept = 0;
    for (int64_t c = 0; c < C; c++)
        for (int64_t p = 0; p < P; p++)
            if ((p % W) < W / 2) {
                double d = (double)F32(a)[c * P + p] - F32(b)[c * P + p];
                half += d * d;
                kept++;
            }
    half /= (double)kept;
    got = sq_weighted_mse(&a, &b, &w);
    TU_CHECK(fabs(got - half) <= 1e-12 * half, "half mask: %.17g vs the mean over the kept half %.17g", got, half);
    // a constant weight c > 0 is the plain mean squared error
    for (int64_t p = 0; p < P; p++) wf[p] = 0.37f;
    got = sq_weighted_mse(&a, &b, &w);
    TU_CHECK(fabs(got - plain) <= 1e-12 * plain, "constant weights %.17g vs mse %.17g", got, plain);
    // all zero: NaN, never a silent 0
    for (int64_t p = 0; p < P; p++) wf[p] = 0.0f;
    TU_CHECK(isnan(sq_weighted_mse(&a, &b, &w)), "all-zero weights give NaN");
    sq_tensor_free(&a); sq_tensor_free(&b); sq_tensor_free(&w);
}

int main(void) {
    test_elementwise();
    test_adaln();
    test_layout();
    test_reductions();
    test_weighted_mse();
    return tu_finish("test_ops_layout");
}
