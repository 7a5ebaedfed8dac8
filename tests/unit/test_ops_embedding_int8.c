// tests/unit/test_ops_embedding_int8.c: the two ops the T5 encoder added: the
// embedding gather (sq_embedding, exact row copies, repeated and boundary ids) and
// per-row absmax int8 quantisation + dequantisation (kernels/int8.h) against their
// definition: codes in [-127, 127] with 127 reached in every non-zero row, error per
// weight at most half a step, an all-zero row, and dequant == scale · code exactly.
#include <math.h>
#include <string.h>

#include "kernels/int8.h"
#include "tests/unit/ops_test_util.h"

static void test_embedding(void) {
    const int64_t V = 37, C = 19, B = 3, T = 9;
    sq_tensor table = ot_rand(2, SQ_SHAPE(V, C), -2, 2), out = ot_poisoned(3, SQ_SHAPE(B, T, C));
    int32_t ids[27];
    uint64_t s = 7;
    for (int i = 0; i < B * T; i++) ids[i] = (int32_t)(tu_next(&s) % V);
    ids[0] = 0; ids[1] = (int32_t)V - 1; ids[2] = (int32_t)V - 1;   // both ends, and a repeat
    sq_embedding(&out, &table, ids);
    double *ref = ot_ref(B * T * C);
    for (int64_t i = 0; i < B * T * C; i++) ref[i] = ((float *)table.data)[ids[i / C] * C + i % C];
    ot_expect("embedding", &out, ref, 0.0);
    sq_tensor_free(&table); sq_tensor_free(&out);
}

static void test_int8(void) {
    const int64_t N = 13, K = 24;
    sq_tensor w = ot_rand(2, SQ_SHAPE(N, K), -0.5f, 0.5f);
    float *wd = w.data;
    for (int64_t k = 0; k < K; k++) wd[3 * K + k] = 0.0f;   // an all-zero row
    wd[5 * K + 7] = 40.0f;                                  // an outlier dominates its row's scale
    int8_t codes[13 * 24];
    float scales[13];
    double err = sq_quantize_i8_rows(wd, N, K, codes, scales);
    double recomputed = 0;
    for (int64_t n = 0; n < N; n++) {
        float amax = 0;
        int cmax = 0;
        for (int64_t k = 0; k < K; k++) {
            amax = fmaxf(amax, fabsf(wd[n * K + k]));
            int c = codes[n * K + k];
            TU_CHECK(c >= -127 && c <= 127, "row %lld: code %d out of range", (long long)n, c);
            cmax = abs(c) > cmax ? abs(c) : cmax;
            double d = (double)wd[n * K + k] - (double)scales[n] * c;
            recomputed += d * d;
            TU_CHECK(fabs(d) <= 0.5 * scales[n] * (1 + 1e-6) + 1e-12, "row %lld col %lld: error %.3g > half step %.3g",
                     (long long)n, (long long)k, fabs(d), 0.5 * scales[n]);
        }
        TU_CHECK(fabsf(scales[n] - amax / 127.0f) <= 1e-7f * amax, "row %lld: scale %g, absmax/127 %g", (long long)n,
                 scales[n], amax / 127.0f);
        TU_CHECK(n == 3 ? cmax == 0 && scales[n] == 0 : cmax == 127, "row %lld: largest |code| %d", (long long)n, cmax);
    }
    TU_CHECK(fabs(err - recomputed) <= 1e-9 * (1 + recomputed), "returned error %.6g vs %.6g", err, recomputed);
    sq_tensor ct = sq_tensor_view(codes, SQ_I8, SQ_CPU, 2, SQ_SHAPE(N, K));
    sq_tensor st = sq_tensor_view(scales, SQ_F32, SQ_CPU, 1, SQ_SHAPE(N));
    sq_tensor out = ot_poisoned(2, SQ_SHAPE(N, K));
    sq_dequant_i8(&out, &ct, &st);
    double *ref = ot_ref(N * K);
    for (int64_t i = 0; i < N * K; i++) ref[i] = (double)(scales[i / K] * (float)codes[i]);
    ot_expect("dequant_i8", &out, ref, 0.0);
    // and the dequantised weight is close to the original (the outlier row is the worst)
    double *orig = ot_ref(N * K);
    for (int64_t i = 0; i < N * K; i++) orig[i] = wd[i];
    double rel = tu_rel_err_f32_f64(out.data, orig, N * K);
    printf("int8 per-row absmax: max error / max |w| = %.2e\n", rel);
    TU_CHECK(rel <= 0.5 / 127 + 1e-6, "dequantised weight relative error %.3g", rel);
    free(orig);
    sq_tensor_free(&w); sq_tensor_free(&out);
}

int main(void) {
    test_embedding();
    test_int8();
    return tu_finish("test_ops_embedding_int8");
}
