// tests/unit/test_ops_attention_conv.c: scaled-dot-product attention (plain, with
// additive bias, key padding mask incl. a fully masked row, causal, Tq != Tk) and
// conv2d (3x3 pad 1, 1x1, 3x3 stride 2 with the VAE's asymmetric (0,1,0,1) pad,
// 2x2 stride 2 patchify) plus nearest ×2 up-sampling, against naive double loops.
#include <math.h>
#include <string.h>

#include "tests/unit/ops_test_util.h"

static void attention_case(int64_t B, int64_t Tq, int64_t Tk, int64_t NH, int64_t HS, bool use_bias, bool use_mask,
                           bool causal) {
    sq_tensor q = ot_rand(4, SQ_SHAPE(B, Tq, NH, HS), -1, 1), k = ot_rand(4, SQ_SHAPE(B, Tk, NH, HS), -1, 1);
    sq_tensor v = ot_rand(4, SQ_SHAPE(B, Tk, NH, HS), -2, 2), bias = ot_rand(3, SQ_SHAPE(NH, Tq, Tk), -1, 1);
    sq_tensor out = ot_poisoned(4, SQ_SHAPE(B, Tq, NH, HS));
    sq_tensor mask;
    sq_tensor_alloc(&mask, SQ_U8, SQ_CPU, 2, SQ_SHAPE(B, Tk));
    uint8_t *m = mask.data;
    for (int64_t i = 0; i < B * Tk; i++) m[i] = (uint8_t)((i * 7 + 3) % 5 != 0);  // some keys padded
    if (B > 1) memset(m + Tk, 0, (size_t)Tk);                                       // batch 1: every key padded
    float scale = 1.0f / sqrtf((float)HS);
    sq_attention(&out, &q, &k, &v, use_bias ? &bias : NULL, use_mask ? &mask : NULL, causal, scale);
    double *ref = ot_ref(B * Tq * NH * HS);
    double *s = malloc((size_t)Tk * sizeof(double));
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < NH; h++)
            for (int64_t i = 0; i < Tq; i++) {
                double mx = -INFINITY;
                for (int64_t j = 0; j < Tk; j++) {
                    if ((use_mask && !m[b * Tk + j]) || (causal && j > i)) { s[j] = -INFINITY; continue; }
                    double acc = 0;
                    for (int64_t d = 0; d < HS; d++)
                        acc += (double)F32(q)[((b * Tq + i) * NH + h) * HS + d] * F32(k)[((b * Tk + j) * NH + h) * HS + d];
                    s[j] = acc * scale + (use_bias ? F32(bias)[(h * Tq + i) * Tk + j] : 0);
                    mx = fmax(mx, s[j]);
                }
                double sum = 0;
                for (int64_t j = 0; j < Tk; j++) sum += s[j] == -INFINITY ? 0 : exp(s[j] - mx);
                for (int64_t d = 0; d < HS; d++) {
                    double acc = 0;
                    for (int64_t j = 0; j < Tk; j++)
                        if (s[j] != -INFINITY) acc += exp(s[j] - mx) / sum * F32(v)[((b * Tk + j) * NH + h) * HS + d];
                    ref[((b * Tq + i) * NH + h) * HS + d] = mx == -INFINITY ? 0 : acc;
                }
            }
    free(s);
    char what[96];
    snprintf(what, sizeof what, "attention B%lld Tq%lld Tk%lld NH%lld HS%lld bias%d mask%d causal%d", (long long)B,
             (long long)Tq, (long long)Tk, (long long)NH, (long long)HS, use_bias, use_mask, causal);
    ot_expect(what, &out, ref, 1e-5);
    sq_tensor_free(&q); sq_tensor_free(&k); sq_tensor_free(&v); sq_tensor_free(&bias); sq_tensor_free(&out);
    sq_tensor_free(&mask);
}

static void conv_case(int64_t B, int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t KH, int64_t KW, int stride,
                      int pt, int pb, int pl, int pr, bool use_bias) {
    int64_t Ho = (H + pt + pb - KH) / stride + 1, Wo = (W + pl + pr - KW) / stride + 1;
    sq_tensor x = ot_rand(4, SQ_SHAPE(B, Cin, H, W), -1, 1), w = ot_rand(4, SQ_SHAPE(Cout, Cin, KH, KW), -1, 1);
    sq_tensor b = ot_rand(1, SQ_SHAPE(Cout), -1, 1), out = ot_poisoned(4, SQ_SHAPE(B, Cout, Ho, Wo));
    sq_conv2d(&out, &x, &w, use_bias ? &b : NULL, stride, pt, pb, pl, pr);
    double *ref = ot_ref(B * Cout * Ho * Wo);
    for (int64_t bi = 0; bi < B; bi++)
        for (int64_t co = 0; co < Cout; co++)
            for (int64_t oy = 0; oy < Ho; oy++)
                for (int64_t ox = 0; ox < Wo; ox++) {
                    double acc = use_bias ? F32(b)[co] : 0;
                    for (int64_t ci = 0; ci < Cin; ci++)
                        for (int64_t ky = 0; ky < KH; ky++)
                            for (int64_t kx = 0; kx < KW; kx++) {
                                int64_t iy = oy * stride + ky - pt, ix = ox * stride + kx - pl;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                acc += (double)F32(x)[((bi * Cin + ci) * H + iy) * W + ix] *
                                       F32(w)[((co * Cin + ci) * KH + ky) * KW + kx];
                            }
                    ref[((bi * Cout + co) * Ho + oy) * Wo + ox] = acc;
                }
    char what[128];
    snprintf(what, sizeof what, "conv2d %lldx%lld k%lldx%lld s%d pad(%d,%d,%d,%d) %lld->%lld", (long long)H, (long long)W,
             (long long)KH, (long long)KW, stride, pt, pb, pl, pr, (long long)Cin, (long long)Cout);
    ot_expect(what, &out, ref, 1e-5);
    sq_tensor_free(&x); sq_tensor_free(&w); sq_tensor_free(&b); sq_tensor_free(&out);
}

static void test_upsample(void) {
    sq_tensor x = ot_rand(4, SQ_SHAPE(2, 3, 5, 7), -1, 1), out = ot_poisoned(4, SQ_SHAPE(2, 3, 10, 14));
    sq_upsample_nearest2x(&out, &x);
    double *ref = ot_ref(2 * 3 * 10 * 14);
    for (int64_t c = 0; c < 6; c++)
        for (int64_t y = 0; y < 10; y++)
            for (int64_t xx = 0; xx < 14; xx++) ref[(c * 10 + y) * 14 + xx] = F32(x)[(c * 5 + y / 2) * 7 + xx / 2];
    ot_expect("upsample nearest 2x", &out, ref, 0);
    sq_tensor_free(&x); sq_tensor_free(&out);
}

int main(void) {
    attention_case(1, 1, 1, 1, 8, false, false, false);
    attention_case(2, 17, 17, 3, 16, false, false, false);
    attention_case(2, 13, 29, 2, 8, true, false, false);
    attention_case(3, 11, 23, 2, 12, false, true, false);
    attention_case(2, 19, 19, 4, 8, false, false, true);
    attention_case(2, 9, 9, 2, 8, true, true, true);
    conv_case(2, 3, 9, 11, 5, 3, 3, 1, 1, 1, 1, 1, true);
    conv_case(1, 16, 8, 8, 7, 1, 1, 1, 0, 0, 0, 0, true);
    conv_case(2, 4, 9, 10, 6, 3, 3, 2, 0, 1, 0, 1, true);    // SD3 VAE down-sampler pad
    conv_case(2, 16, 8, 12, 32, 2, 2, 2, 0, 0, 0, 0, true);  // MMDiT patchify
    conv_case(1, 33, 20, 17, 9, 3, 3, 1, 1, 1, 1, 1, false);
    test_upsample();
    return tu_finish("test_ops_attention_conv");
}
