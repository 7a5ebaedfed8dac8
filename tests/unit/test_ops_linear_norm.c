// tests/unit/test_ops_linear_norm.c: matmul (+bias, and G products of one input), layernorm (affine and not),
// RMSNorm, GroupNorm, GELU (erf, tanh), SiLU, quick GELU and softmax against naive
// double-precision references on random inputs, odd sizes, NaN-poisoned outputs,
// and in-place use where kernels/ops.h allows it.
#include <math.h>

#include "tests/ops_ref.h"
#include "tests/unit/ops_test_util.h"

static void test_matmul(void) {
    const int64_t shapes[][3] = {{1, 1, 1}, {3, 17, 5}, {65, 129, 33}, {7, 300, 260}, {128, 64, 96}};
    for (int s = 0; s < 5; s++) {
        int64_t N = shapes[s][0], K = shapes[s][1], M = shapes[s][2];
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            sq_tensor x = ot_rand(3, SQ_SHAPE(1, N, K), -1, 1), w = ot_rand(2, SQ_SHAPE(M, K), -1, 1);
            sq_tensor b = ot_rand(1, SQ_SHAPE(M), -1, 1), out = ot_poisoned(3, SQ_SHAPE(1, N, M));
            sq_matmul(&out, &x, &w, with_bias ? &b : NULL);
            double *ref = ot_ref(N * M);
            for (int64_t i = 0; i < N; i++)
                for (int64_t j = 0; j < M; j++) {
                    double acc = with_bias ? F32(b)[j] : 0;
                    for (int64_t k = 0; k < K; k++) acc += (double)F32(x)[i * K + k] * F32(w)[j * K + k];
                    ref[i * M + j] = acc;
                }
            char what[64];
            snprintf(what, sizeof what, "matmul %lldx%lldx%lld bias %d", (long long)N, (long long)K, (long long)M, with_bias);
            ot_expect(what, &out, ref, 1e-5);
            sq_tensor_free(&x); sq_tensor_free(&w); sq_tensor_free(&b); sq_tensor_free(&out);
        }
    }
}

// G products of one input written g·stride elements apart (kernels/ops.h), with
// gaps between the outputs that must stay as they were.
static void test_matmul_shared_input(void) {
    const int64_t shapes[][4] = {{1, 1, 1, 2}, {3, 17, 5, 3}, {65, 129, 33, 3}, {7, 300, 260, 4}};
    for (int s = 0; s < 4; s++) {
        int64_t N = shapes[s][0], K = shapes[s][1], M = shapes[s][2], G = shapes[s][3], stride = N * M + 5;
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            sq_tensor x = ot_rand(2, SQ_SHAPE(N, K), -1, 1), w = ot_rand(3, SQ_SHAPE(G, M, K), -1, 1);
            sq_tensor b = ot_rand(2, SQ_SHAPE(G, M), -1, 1), all = ot_poisoned(1, SQ_SHAPE(G * stride));
            for (int64_t g = 0; g < G; g++)
                for (int64_t i = N * M; i < stride; i++) F32(all)[g * stride + i] = 7.0f;   // the gaps
            sq_tensor out = sq_tensor_view(all.data, SQ_F32, SQ_CPU, 2, SQ_SHAPE(N, M));
            sq_matmul_shared_input(&out, stride, &x, &w, with_bias ? &b : NULL);
            double *ref = ot_ref(G * stride);
            for (int64_t g = 0; g < G; g++) {
                for (int64_t i = 0; i < N; i++)
                    for (int64_t j = 0; j < M; j++) {
                        double acc = with_bias ? F32(b)[g * M + j] : 0;
                        for (int64_t k = 0; k < K; k++) acc += (double)F32(x)[i * K + k] * F32(w)[(g * M + j) * K + k];
                        ref[g * stride + i * M + j] = acc;
                    }
                for (int64_t i = N * M; i < stride; i++) ref[g * stride + i] = 7.0;
            }
            char what[80];
            snprintf(what, sizeof what, "matmul_shared_input %lldx%lldx%lld G %lld bias %d", (long long)N, (long long)K,
                     (long long)M, (long long)G, with_bias);
            ot_expect(what, &all, ref, 1e-5);
            sq_tensor_free(&x); sq_tensor_free(&w); sq_tensor_free(&b); sq_tensor_free(&all);
        }
    }
}

static void test_norms(void) {
    const int64_t rows = 37, Cs[] = {1, 16, 129};
    for (int ci = 0; ci < 3; ci++) {
        int64_t C = Cs[ci];
        for (int affine = 0; affine < 2; affine++) {
            sq_tensor x = ot_rand(2, SQ_SHAPE(rows, C), -3, 5), w = ot_rand(1, SQ_SHAPE(C), 0.5f, 1.5f);
            sq_tensor b = ot_rand(1, SQ_SHAPE(C), -1, 1), out = ot_poisoned(2, SQ_SHAPE(rows, C));
            sq_tensor out2 = ot_poisoned(2, SQ_SHAPE(rows, C));
            sq_layernorm(&out, &x, affine ? &w : NULL, affine ? &b : NULL, 1e-5f);
            sq_rmsnorm(&out2, &x, affine ? &w : NULL, 1e-6f);
            double *ref = ot_ref(rows * C), *ref2 = ot_ref(rows * C);
            for (int64_t r = 0; r < rows; r++) {
                double m = 0, v = 0, ss = 0;
                for (int64_t i = 0; i < C; i++) m += F32(x)[r * C + i];
                m /= C;
                for (int64_t i = 0; i < C; i++) {
                    double d = F32(x)[r * C + i] - m;
                    v += d * d;
                    ss += (double)F32(x)[r * C + i] * F32(x)[r * C + i];
                }
                v /= C;
                for (int64_t i = 0; i < C; i++) {
                    double y = (F32(x)[r * C + i] - m) / sqrt(v + 1e-5);
                    double z = F32(x)[r * C + i] / sqrt(ss / C + 1e-6);
                    if (affine) { y = y * F32(w)[i] + F32(b)[i]; z *= F32(w)[i]; }
                    ref[r * C + i] = y;
                    ref2[r * C + i] = z;
                }
            }
            ot_expect(affine ? "layernorm affine" : "layernorm", &out, ref, 1e-5);
            ot_expect(affine ? "rmsnorm weight" : "rmsnorm", &out2, ref2, 1e-5);
            // in place
            sq_layernorm(&x, &x, affine ? &w : NULL, affine ? &b : NULL, 1e-5f);
            TU_CHECK(tu_rel_err(F32(x), F32(out), rows * C) == 0, "layernorm in place equals out of place");
            sq_tensor_free(&x); sq_tensor_free(&w); sq_tensor_free(&b); sq_tensor_free(&out); sq_tensor_free(&out2);
        }
    }
    // groupnorm (B,C,H,W)
    const int64_t B = 2, C = 12, H = 5, W = 7;
    for (int groups = 1; groups <= 12; groups *= 2) {
        if (C % groups) continue;
        sq_tensor x = ot_rand(4, SQ_SHAPE(B, C, H, W), -2, 3), w = ot_rand(1, SQ_SHAPE(C), 0.5f, 1.5f);
        sq_tensor b = ot_rand(1, SQ_SHAPE(C), -1, 1), out = ot_poisoned(4, SQ_SHAPE(B, C, H, W));
        sq_groupnorm(&out, &x, &w, &b, groups, 1e-6f);
        double *ref = ot_ref(B * C * H * W);
        int64_t cpg = C / groups, HW = H * W;
        for (int64_t bi = 0; bi < B; bi++)
            for (int g = 0; g < groups; g++) {
                double m = 0, v = 0;
                const float *xg = F32(x) + (bi * C + g * cpg) * HW;
                for (int64_t i = 0; i < cpg * HW; i++) m += xg[i];
                m /= (double)(cpg * HW);
                for (int64_t i = 0; i < cpg * HW; i++) v += (xg[i] - m) * (xg[i] - m);
                v /= (double)(cpg * HW);
                for (int64_t i = 0; i < cpg * HW; i++) {
                    int64_t ch = g * cpg + i / HW;
                    ref[(bi * C + g * cpg) * HW + i] = (xg[i] - m) / sqrt(v + 1e-6) * F32(w)[ch] + F32(b)[ch];
                }
            }
        ot_expect("groupnorm", &out, ref, 1e-5);
        sq_tensor_free(&x); sq_tensor_free(&w); sq_tensor_free(&b); sq_tensor_free(&out);
    }
}

static void test_activations(void) {
    const int64_t n = 1031;
    sq_tensor x = ot_rand(1, SQ_SHAPE(n), -6, 6);
    for (int kind = 0; kind < 4; kind++) {
        sq_tensor out = ot_poisoned(1, SQ_SHAPE(n));
        double *ref = ot_ref(n);
        for (int64_t i = 0; i < n; i++) {
            double v = F32(x)[i];
            if (kind == 0) ref[i] = 0.5 * v * (1 + erf(v / sqrt(2.0)));
            if (kind == 1) ref[i] = 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
            if (kind == 2) ref[i] = v / (1 + exp(-v));
            if (kind == 3) ref[i] = v / (1 + exp(-1.702 * v));
        }
        if (kind == 0) sq_gelu(&out, &x, false);
        if (kind == 1) sq_gelu(&out, &x, true);
        if (kind == 2) sq_silu(&out, &x);
        if (kind == 3) sq_quick_gelu(&out, &x);
        static const char *names[] = {"gelu erf", "gelu tanh", "silu", "quick_gelu"};
        ot_expect(names[kind], &out, ref, 1e-6);
        sq_tensor_free(&out);
    }
    // softmax over rows
    const int64_t rows = 9, C = 77;
    sq_tensor s = ot_rand(2, SQ_SHAPE(rows, C), -20, 20), out = ot_poisoned(2, SQ_SHAPE(rows, C));
    tr_softmax(&out, &s);
    double *ref = ot_ref(rows * C);
    for (int64_t r = 0; r < rows; r++) {
        double mx = -INFINITY, sum = 0;
        for (int64_t i = 0; i < C; i++) mx = fmax(mx, F32(s)[r * C + i]);
        for (int64_t i = 0; i < C; i++) sum += exp(F32(s)[r * C + i] - mx);
        for (int64_t i = 0; i < C; i++) ref[r * C + i] = exp(F32(s)[r * C + i] - mx) / sum;
    }
    ot_expect("softmax", &out, ref, 1e-5);
    tr_softmax(&s, &s);
    TU_CHECK(tu_rel_err(F32(s), F32(out), rows * C) == 0, "softmax in place");
    sq_tensor_free(&s); sq_tensor_free(&out); sq_tensor_free(&x);
}

int main(void) {
    test_matmul();
    test_matmul_shared_input();
    test_norms();
    test_activations();
    return tu_finish("test_ops_linear_norm");
}
