// tests/gpu/test_gpu_quant.c: the CUDA quantised ops against the CPU reference.
// - z drawn on the device is bit-identical to z drawn on the host (kernels/rng.h);
// - fused perturbed dequantisation on CUDA (bf16) == bf16(CPU fp32 result), exactly,
//   for sign -1/0/+1 and group sizes 16/32/64/128, on a poisoned output, through the
//   tiled kernel (aligned output) and the per-chunk fallback (output 8 bytes off);
// - the quantised linear (int4 GEMV for <= 8 rows, dequantise + cuBLAS above) against
//   the CPU's fp32 qlinear on the same bf16 inputs, with bias, poisoned output;
// - the QZO scale update on CUDA == the CPU update, bit for bit;
// - the EMA of the scales (--ema) on CUDA == the CPU's sq_ema_update, bit for bit, over
//   several steps of moving scales, on an EMA that starts away from the scales.
// Skips (exit 77) without a GPU.
#include <math.h>
#include <string.h>

#include "core/error.h"
#include "kernels/backend.h"
#include "kernels/quant.h"
#include "kernels/rng.h"
#include "tests/gpu/gpu_start.h"
#include "tests/test_util.h"

// kernels/cuda/quant.cu: n normals z(seed, step, index_base + i) drawn on the device.
int cuda_rng_normals(float *host_out, int64_t n, uint64_t seed, uint64_t step, uint64_t index_base);
#ifndef SQ_HAVE_CUDA
// Without CUDA the test skips before calling it; this only satisfies the linker.
int cuda_rng_normals(float *host_out, int64_t n, uint64_t seed, uint64_t step, uint64_t index_base) {
    (void)host_out; (void)n; (void)seed; (void)step; (void)index_base;
    return sq_errorf("this build has no CUDA backend");
}
#endif

// y = x·dequant(W)ᵀ + b on CUDA (bf16) against the CPU (fp32, the same bf16-valued x
// and bias), for row counts on both sides of SQ_QGEMV_MAX_ROWS and all three signs.
static void check_qlinear(const sq_tensor *hc, const sq_tensor *hs, const sq_tensor *dc, const sq_tensor *ds, int group) {
    int64_t nout = hc->shape[0], k = hc->shape[1];
    static const int64_t row_counts[] = {1, 3, 8, 9, 40};
    uint64_t rs = 77 + (uint64_t)group;
    static float x[40 * 384], bias[77], wcpu[77 * 384], ycpu[40 * 77], ygpu[40 * 77];
    tu_fill_uniform(x, 40 * k, &rs, -2.0f, 2.0f);
    tu_fill_uniform(bias, nout, &rs, -0.5f, 0.5f);
    for (int64_t i = 0; i < 40 * k; i++) x[i] = sq_bf16_to_f32(sq_f32_to_bf16(x[i]));
    for (int64_t i = 0; i < nout; i++) bias[i] = sq_bf16_to_f32(sq_f32_to_bf16(bias[i]));
    sq_tensor hb = sq_tensor_view(bias, SQ_F32, SQ_CPU, 1, SQ_SHAPE(nout));
    sq_tensor hw = sq_tensor_view(wcpu, SQ_F32, SQ_CPU, 2, SQ_SHAPE(nout, k));
    sq_tensor db, dw;
    sq_tensor_alloc(&db, SQ_BF16, SQ_CUDA, 1, SQ_SHAPE(nout));
    sq_tensor_alloc(&dw, SQ_BF16, SQ_CUDA, 2, SQ_SHAPE(nout, k));
    sq_tensor_from_host_f32(&db, bias);
    for (size_t ri = 0; ri < sizeof row_counts / sizeof row_counts[0]; ri++) {
        int64_t rows = row_counts[ri];
        sq_tensor hx = sq_tensor_view(x, SQ_F32, SQ_CPU, 2, SQ_SHAPE(rows, k));
        sq_tensor hy = sq_tensor_view(ycpu, SQ_F32, SQ_CPU, 2, SQ_SHAPE(rows, nout));
        sq_tensor dx, dy;
        sq_tensor_alloc(&dx, SQ_BF16, SQ_CUDA, 2, SQ_SHAPE(rows, k));
        sq_tensor_alloc(&dy, SQ_BF16, SQ_CUDA, 2, SQ_SHAPE(rows, nout));
        sq_tensor_from_host_f32(&dx, x);
        for (int sign = -1; sign <= 1; sign++) {
            sq_perturb p = {.seed = 4, .step = 8, .index_base = 123456, .eps = 1e-2f, .sign = sign};
            sq_qlinear(&hy, &hx, hc, hs, &hb, group, &p, &hw, false);
            tu_poison(ygpu, rows * nout);
            sq_tensor_from_host_f32(&dy, ygpu);
            sq_qlinear(&dy, &dx, dc, ds, &db, group, &p, &dw, false);
            sq_tensor_to_host_f32(ygpu, &dy);
            double err = tu_rel_err(ygpu, ycpu, rows * nout);
            TU_CHECK(err <= 2e-2, "qlinear group %d, %lld rows (%s), sign %d: rel err %.3g > 2e-2", group, (long long)rows,
                     rows <= SQ_QGEMV_MAX_ROWS ? "int4 GEMV" : "dequantise + GEMM", sign, err);
            if (sign == 1)
                printf("qlinear group %d, %2lld rows (%s): rel err %.2e\n", group, (long long)rows,
                       rows <= SQ_QGEMV_MAX_ROWS ? "int4 GEMV" : "dequantise + GEMM", err);
        }
        sq_tensor_free(&dx);
        sq_tensor_free(&dy);
    }
    sq_tensor_free(&db);
    sq_tensor_free(&dw);
}

// A GEMV problem: weights w (nout, k) in [-0.1, 0.1] quantised to codes and scales,
// `rows` input rows x in [-2, 2] and a bias in [-0.5, 0.5], both rounded to bf16
// values (what the device holds), drawn in that order from rs.
static void gemv_problem(float *w, float *x, float *bias, int64_t nout, int64_t k, int64_t rows, int group,
                         uint8_t *codes, float *scales, uint64_t *rs) {
    tu_fill_uniform(w, nout * k, rs, -0.1f, 0.1f);
    tu_fill_uniform(x, rows * k, rs, -2.0f, 2.0f);
    tu_fill_uniform(bias, nout, rs, -0.5f, 0.5f);
    for (int64_t i = 0; i < rows * k; i++) x[i] = sq_bf16_to_f32(sq_f32_to_bf16(x[i]));
    for (int64_t i = 0; i < nout; i++) bias[i] = sq_bf16_to_f32(sq_f32_to_bf16(bias[i]));
    sq_quantize_q4(w, nout, k, group, codes, scales);
}

// The int4 GEMV's perturbation, exactly: under p it must give the bits it gives
// unperturbed with the scales perturbed on the host (sq_perturbed_scale of
// sq_rng_normal, the CPU's expression). Rows of 6 groups, so the rows' RNG indices
// start on and off Philox blocks of four; absolute and relative, both signs.
static void check_qgemv_perturbation(void) {
    enum { NOUT = 77, K = 384, G = 64, NG = NOUT * K / G };
    static float w[NOUT * K], x[5 * K], scales[NG], perturbed[NG], y1[5 * NOUT], y2[5 * NOUT];
    static uint8_t codes[NOUT * K / 2];
    uint64_t rs = 5;
    tu_fill_uniform(w, NOUT * K, &rs, -0.1f, 0.1f);
    tu_fill_uniform(x, 5 * K, &rs, -2.0f, 2.0f);
    sq_quantize_q4(w, NOUT, K, G, codes, scales);
    sq_tensor hc = sq_tensor_view(codes, SQ_Q4, SQ_CPU, 2, SQ_SHAPE(NOUT, K));
    sq_tensor dc, ds, dp, dx, dy, dw;
    SQ_CHECK(sq_tensor_alloc(&dc, SQ_Q4, SQ_CUDA, 2, SQ_SHAPE(NOUT, K)) == SQ_OK &&
                 sq_tensor_alloc(&ds, SQ_F32, SQ_CUDA, 2, SQ_SHAPE(NOUT, K / G)) == SQ_OK &&
                 sq_tensor_alloc(&dp, SQ_F32, SQ_CUDA, 2, SQ_SHAPE(NOUT, K / G)) == SQ_OK &&
                 sq_tensor_alloc(&dx, SQ_BF16, SQ_CUDA, 2, SQ_SHAPE(5, K)) == SQ_OK &&
                 sq_tensor_alloc(&dy, SQ_BF16, SQ_CUDA, 2, SQ_SHAPE(5, NOUT)) == SQ_OK &&
                 sq_tensor_alloc(&dw, SQ_BF16, SQ_CUDA, 2, SQ_SHAPE(NOUT, K)) == SQ_OK,
             "alloc");
    SQ_CHECK(sq_tensor_copy(&dc, &hc) == SQ_OK && sq_tensor_from_host_f32(&ds, scales) == SQ_OK &&
                 sq_tensor_from_host_f32(&dx, x) == SQ_OK,
             "upload");
    static const uint64_t bases[] = {99, 5000, (1ull << 33) + 5};
    int cases = 0;
    for (size_t bi = 0; bi < sizeof bases / sizeof bases[0]; bi++)
        for (int relative = 0; relative <= 1; relative++)
            for (int sign = -1; sign <= 1; sign += 2)
                for (int64_t rows = 1; rows <= 5; rows += 4) {
                    sq_perturb p = {.seed = 7, .step = 12, .index_base = bases[bi], .eps = 1e-2f, .sign = sign,
                                    .relative = relative};
                    for (int j = 0; j < NG; j++)
                        perturbed[j] = sq_perturbed_scale(scales[j], sq_rng_normal(p.seed, p.step, p.index_base + (uint64_t)j),
                                                          (float)sign * p.eps, relative);
                    SQ_CHECK(sq_tensor_from_host_f32(&dp, perturbed) == SQ_OK, "upload");
                    sq_tensor x_rows = sq_tensor_view(dx.data, SQ_BF16, SQ_CUDA, 2, SQ_SHAPE(rows, K));
                    sq_tensor y_rows = sq_tensor_view(dy.data, SQ_BF16, SQ_CUDA, 2, SQ_SHAPE(rows, NOUT));
                    tu_poison(y1, rows * NOUT);
                    sq_tensor_from_host_f32(&y_rows, y1);
                    sq_qlinear(&y_rows, &x_rows, &dc, &ds, NULL, G, &p, &dw, false);
                    sq_tensor_to_host_f32(y1, &y_rows);
                    tu_poison(y2, rows * NOUT);
                    sq_tensor_from_host_f32(&y_rows, y2);
                    sq_qlinear(&y_rows, &x_rows, &dc, &dp, NULL, G, NULL, &dw, false);
                    sq_tensor_to_host_f32(y2, &y_rows);
                    TU_CHECK(!memcmp(y1, y2, (size_t)(rows * NOUT) * sizeof(float)),
                             "int4 GEMV, index base %llu, %s, sign %d, %lld rows: the perturbation differs from the host's",
                             (unsigned long long)p.index_base, relative ? "relative" : "absolute", sign, (long long)rows);
                    cases++;
                }
    printf("int4 GEMV: perturbation bit-identical to host-perturbed scales in %d cases\n", cases);
    sq_tensor *ts[] = {&dc, &ds, &dp, &dx, &dy, &dw};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) sq_tensor_free(ts[i]);
}

// What kernels/cuda/qgemv.cu computes for output n of input row r, in its order: lane
// l takes chunks l, l + 32, ... of 32 codes, sums x·q over each chunk with fmaf and
// adds s·sum with fmaf; then a shuffle butterfly (xor 16, 8, 4, 2, 1) adds the lanes;
// the bias is added in fp32 and the result rounded once to bf16.
static float qgemv_model(const float *x, const uint8_t *codes, const float *s_eff, const float *bias, int64_t k,
                         int group, int64_t n) {
    float v[32];
    for (int l = 0; l < 32; l++) {
        float acc = 0.0f;
        for (int64_t q = l; q < k / 32; q += 32) {
            float part = 0.0f;
            for (int t = 0; t < 32; t++) {
                int64_t col = q * 32 + t;
                uint8_t byte = codes[(n * k + col) / 2];
                int c = (((col % 2 ? byte >> 4 : byte) & 0xf) ^ 8) - 8;
                part = fmaf(x[col], (float)c, part);
            }
            acc = fmaf(s_eff[n * (k / group) + q * 32 / group], part, acc);
        }
        v[l] = acc;
    }
    for (int o = 16; o > 0; o >>= 1) {
        float w[32];
        for (int l = 0; l < 32; l++) w[l] = v[l] + v[l ^ o];
        memcpy(v, w, sizeof v);
    }
    return sq_bf16_to_f32(sq_f32_to_bf16(bias ? v[0] + bias[n] : v[0]));
}

// The int4 GEMV bit for bit against qgemv_model: 77 outputs (a partial block), K of
// 384 (12 chunks, lanes idle) and 5184 (the tail loop), groups 32 and 64, 1 to 8
// input rows, perturbed and not, with a bias and without.
static void check_qgemv_bits(void) {
    enum { NOUT = 77, KMAX = 5184 };
    static float w[NOUT * KMAX], x[8 * KMAX], bias[NOUT], scales[NOUT * KMAX / 32], s_eff[NOUT * KMAX / 32],
        y[8 * NOUT];
    static uint8_t codes[NOUT * KMAX / 2];
    static const int64_t ks[] = {384, 5184};
    static const int rows_for[] = {1, 2, 3, 8};
    uint64_t rs = 31;
    int cases = 0;
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
        for (int group = 32; group <= 64; group *= 2) {
            int64_t k = ks[ki], ng = NOUT * (k / group);
            gemv_problem(w, x, bias, NOUT, k, 8, group, codes, scales, &rs);
            sq_tensor hc = sq_tensor_view(codes, SQ_Q4, SQ_CPU, 2, SQ_SHAPE(NOUT, k));
            sq_tensor dc, ds, db, dx, dy, dw;
            SQ_CHECK(sq_tensor_alloc(&dc, SQ_Q4, SQ_CUDA, 2, SQ_SHAPE(NOUT, k)) == SQ_OK &&
                         sq_tensor_alloc(&ds, SQ_F32, SQ_CUDA, 2, SQ_SHAPE(NOUT, k / group)) == SQ_OK &&
                         sq_tensor_alloc(&db, SQ_BF16, SQ_CUDA, 1, SQ_SHAPE(NOUT)) == SQ_OK &&
                         sq_tensor_alloc(&dx, SQ_BF16, SQ_CUDA, 2, SQ_SHAPE(8, k)) == SQ_OK &&
                         sq_tensor_alloc(&dy, SQ_BF16, SQ_CUDA, 2, SQ_SHAPE(8, NOUT)) == SQ_OK &&
                         sq_tensor_alloc(&dw, SQ_BF16, SQ_CUDA, 2, SQ_SHAPE(NOUT, k)) == SQ_OK,
                     "alloc");
            SQ_CHECK(sq_tensor_copy(&dc, &hc) == SQ_OK && sq_tensor_from_host_f32(&ds, scales) == SQ_OK &&
                         sq_tensor_from_host_f32(&db, bias) == SQ_OK && sq_tensor_from_host_f32(&dx, x) == SQ_OK,
                     "upload");
            for (size_t ri = 0; ri < sizeof rows_for / sizeof rows_for[0]; ri++)
                for (int sign = 0; sign <= 1; sign++) {
                    int64_t rows = rows_for[ri];
                    sq_tensor xr = sq_tensor_view(dx.data, SQ_BF16, SQ_CUDA, 2, SQ_SHAPE(rows, k));
                    sq_tensor yr = sq_tensor_view(dy.data, SQ_BF16, SQ_CUDA, 2, SQ_SHAPE(rows, NOUT));
                    if (!sq_qlinear_uses_gemv(&yr, &xr, &dc, &db, group)) continue;   // shared memory too small here
                    sq_perturb p = {.seed = 3, .step = 4, .index_base = 17, .eps = 1e-2f, .sign = sign, .relative = 1};
                    for (int64_t j = 0; j < ng; j++)
                        s_eff[j] = sign ? sq_perturbed_scale(scales[j], sq_rng_normal(p.seed, p.step, p.index_base + (uint64_t)j),
                                                             p.eps, 1)
                                        : scales[j];
                    tu_poison(y, rows * NOUT);
                    sq_tensor_from_host_f32(&yr, y);
                    const sq_tensor *b = ri % 2 ? NULL : &db;   // with a bias on rows 1 and 3, without on 2 and 8
                    sq_qlinear(&yr, &xr, &dc, &ds, b, group, &p, &dw, false);
                    sq_tensor_to_host_f32(y, &yr);
                    int bad = 0;
                    for (int64_t r = 0; r < rows; r++)
                        for (int64_t n = 0; n < NOUT; n++)
                            if (y[r * NOUT + n] != qgemv_model(x + r * k, codes, s_eff, b ? bias : NULL, k, group, n)) bad++;
                    TU_CHECK(bad == 0, "int4 GEMV K %lld group %d, %lld rows, sign %d: %d of %lld outputs differ from the model",
                             (long long)k, group, (long long)rows, sign, bad, (long long)(rows * NOUT));
                    cases++;
                }
            sq_tensor *ts[] = {&dc, &ds, &db, &dx, &dy, &dw};
            for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) sq_tensor_free(ts[i]);
        }
    printf("int4 GEMV: bit-identical to its arithmetic written out on the host in %d cases\n", cases);
    TU_CHECK(cases >= 24, "only %d GEMV cases ran", cases);
}

// The int4 GEMV on rows longer than its register-held chunks (K > 4096 codes: the
// tail loop of kernels/cuda/qgemv.cu), 1 and 5 input rows, against the CPU.
static void check_qgemv_long_rows(void) {
    enum { NOUT = 10, K = 5184, G = 64 };   // 162 chunks of 32 codes: 5 per lane, the 5th from the tail loop
    static float w[NOUT * K], x[5 * K], bias[NOUT], wcpu[NOUT * K], ycpu[5 * NOUT], ygpu[5 * NOUT];
    static uint8_t codes[NOUT * K / 2];
    static float scales[NOUT * K / G];
    uint64_t rs = 99;
    gemv_problem(w, x, bias, NOUT, K, 5, G, codes, scales, &rs);
    sq_tensor hc = sq_tensor_view(codes, SQ_Q4, SQ_CPU, 2, SQ_SHAPE(NOUT, K));
    sq_tensor hs = sq_tensor_view(scales, SQ_F32, SQ_CPU, 2, SQ_SHAPE(NOUT, K / G));
    sq_tensor hb = sq_tensor_view(bias, SQ_F32, SQ_CPU, 1, SQ_SHAPE(NOUT));
    sq_tensor hw = sq_tensor_view(wcpu, SQ_F32, SQ_CPU, 2, SQ_SHAPE(NOUT, K));
    sq_tensor dc, ds, db, dw;
    SQ_CHECK(sq_tensor_alloc(&dc, SQ_Q4, SQ_CUDA, 2, SQ_SHAPE(NOUT, K)) == SQ_OK &&
                 sq_tensor_alloc(&ds, SQ_F32, SQ_CUDA, 2, SQ_SHAPE(NOUT, K / G)) == SQ_OK &&
                 sq_tensor_alloc(&db, SQ_BF16, SQ_CUDA, 1, SQ_SHAPE(NOUT)) == SQ_OK &&
                 sq_tensor_alloc(&dw, SQ_BF16, SQ_CUDA, 2, SQ_SHAPE(NOUT, K)) == SQ_OK,
             "alloc");
    SQ_CHECK(sq_tensor_copy(&dc, &hc) == SQ_OK && sq_tensor_copy(&ds, &hs) == SQ_OK &&
                 sq_tensor_from_host_f32(&db, bias) == SQ_OK,
             "upload");
    for (int64_t rows = 1; rows <= 5; rows += 4) {
        sq_tensor hx = sq_tensor_view(x, SQ_F32, SQ_CPU, 2, SQ_SHAPE(rows, K));
        sq_tensor hy = sq_tensor_view(ycpu, SQ_F32, SQ_CPU, 2, SQ_SHAPE(rows, NOUT));
        sq_tensor dx, dy;
        SQ_CHECK(sq_tensor_alloc(&dx, SQ_BF16, SQ_CUDA, 2, SQ_SHAPE(rows, K)) == SQ_OK &&
                     sq_tensor_alloc(&dy, SQ_BF16, SQ_CUDA, 2, SQ_SHAPE(rows, NOUT)) == SQ_OK,
                 "alloc");
        sq_tensor_from_host_f32(&dx, x);
        sq_perturb p = {.seed = 4, .step = 8, .index_base = 99, .eps = 1e-2f, .sign = -1};
        sq_qlinear(&hy, &hx, &hc, &hs, &hb, G, &p, &hw, false);
        tu_poison(ygpu, rows * NOUT);
        sq_tensor_from_host_f32(&dy, ygpu);
        sq_qlinear(&dy, &dx, &dc, &ds, &db, G, &p, &dw, false);
        sq_tensor_to_host_f32(ygpu, &dy);
        double err = tu_rel_err(ygpu, ycpu, rows * NOUT);
        printf("int4 GEMV, K %d, %lld rows: rel err %.2e\n", K, (long long)rows, err);
        TU_CHECK(err <= 2e-2, "int4 GEMV with K %d, %lld rows: rel err %.3g > 2e-2", K, (long long)rows, err);
        sq_tensor_free(&dx);
        sq_tensor_free(&dy);
    }
    sq_tensor_free(&dc);
    sq_tensor_free(&ds);
    sq_tensor_free(&db);
    sq_tensor_free(&dw);
}

// sq_ema_update on the device against the CPU's, bit for bit: 20 steps of scales
// moving by up to 2 %, at two betas, on a size that is not a multiple of the block.
static void check_ema(void) {
    enum { N = 70001 };
    static float s[N], e_cpu[N], e_gpu[N];
    const float betas[2] = {0.9f, 0.999f};
    for (int b = 0; b < 2; b++) {
        uint64_t rs = 41 + (uint64_t)b;
        tu_fill_uniform(s, N, &rs, 1e-3f, 2e-2f);
        for (int i = 0; i < N; i++) e_cpu[i] = s[i] * tu_uniform(&rs, 0.5f, 1.5f);
        sq_tensor hs = sq_tensor_view(s, SQ_F32, SQ_CPU, 1, SQ_SHAPE(N)), he = sq_tensor_view(e_cpu, SQ_F32, SQ_CPU, 1, SQ_SHAPE(N));
        sq_tensor ds, de;
        SQ_CHECK(sq_tensor_alloc(&ds, SQ_F32, SQ_CUDA, 1, SQ_SHAPE(N)) == SQ_OK &&
                     sq_tensor_alloc(&de, SQ_F32, SQ_CUDA, 1, SQ_SHAPE(N)) == SQ_OK,
                 "%s", sq_error_message());
        sq_tensor_from_host_f32(&de, e_cpu);
        for (int k = 0; k < 20; k++) {
            for (int i = 0; i < N; i++) s[i] *= 1.0f + tu_uniform(&rs, -0.02f, 0.02f);
            sq_tensor_from_host_f32(&ds, s);
            sq_ema_update(&he, &hs, betas[b]);
            sq_ema_update(&de, &ds, betas[b]);
        }
        tu_poison(e_gpu, N);
        sq_tensor_to_host_f32(e_gpu, &de);
        TU_CHECK(!memcmp(e_cpu, e_gpu, sizeof e_cpu), "EMA beta %g: CUDA != CPU", (double)betas[b]);
        printf("EMA beta %g: 20 steps of %d scales bit-identical to CPU\n", (double)betas[b], N);
        sq_tensor_free(&ds);
        sq_tensor_free(&de);
    }
}

int main(void) {
    sq_device dev;
    int start = tu_gpu_start(&dev);
    if (start) return start;
    // 1. RNG identity, including indices past 2^32
    enum { N = 1 << 20 };
    static float host[N], device[N];
    uint64_t bases[2] = {0, (1ull << 33) + 5};
    for (int b = 0; b < 2; b++) {
        for (int i = 0; i < N; i++) host[i] = sq_rng_normal(0xC0FFEEull, 12345, bases[b] + (uint64_t)i);
        memset(device, 0xff, sizeof device);
        TU_CHECK(cuda_rng_normals(device, N, 0xC0FFEEull, 12345, bases[b]) == SQ_OK, "rng kernel: %s", sq_error_message());
        int diff = 0;
        for (int i = 0; i < N; i++) diff += memcmp(&host[i], &device[i], 4) != 0;
        TU_CHECK(diff == 0, "host and device z differ at %d of %d indices (base %llu)", diff, N, (unsigned long long)bases[b]);
        printf("rng: %d normals bit-identical host vs device (base %llu): %s\n", N, (unsigned long long)bases[b], diff ? "NO" : "yes");
    }
    // 2. dequantisation
    uint64_t rs = 2024;
    const int64_t nout = 77, k = 384;
    static float w[77 * 384], cpu_out[77 * 384], back[77 * 384];
    static uint8_t codes[77 * 384 / 2];
    static float scales[77 * 384 / 16], scales_cpu[77 * 384 / 16], scales_gpu[77 * 384 / 16];
    tu_fill_uniform(w, nout * k, &rs, -0.1f, 0.1f);
    // group 16 takes the 8-wide kernel; 32, 64 and 128 the 32-wide one (kernels/cuda/quant.cu)
    for (int group = 16; group <= 128; group *= 2) {
        int64_t ng = k / group;
        sq_quantize_q4(w, nout, k, group, codes, scales);
        sq_tensor hc = sq_tensor_view(codes, SQ_Q4, SQ_CPU, 2, SQ_SHAPE(nout, k));
        sq_tensor hs = sq_tensor_view(scales, SQ_F32, SQ_CPU, 2, SQ_SHAPE(nout, ng));
        sq_tensor ho = sq_tensor_view(cpu_out, SQ_F32, SQ_CPU, 2, SQ_SHAPE(nout, k));
        sq_tensor dc, ds, dout;
        sq_tensor_alloc(&dc, SQ_Q4, SQ_CUDA, 2, SQ_SHAPE(nout, k));
        sq_tensor_alloc(&ds, SQ_F32, SQ_CUDA, 2, SQ_SHAPE(nout, ng));
        sq_tensor_alloc(&dout, SQ_BF16, SQ_CUDA, 2, SQ_SHAPE(nout, k));
        sq_tensor_copy(&dc, &hc);
        sq_tensor_copy(&ds, &hs);
        // 4 extra elements so a view 8 bytes in is not 16-byte aligned: the fallback kernel
        sq_tensor shifted_buf;
        sq_tensor_alloc(&shifted_buf, SQ_BF16, SQ_CUDA, 1, SQ_SHAPE(nout * k + 4));
        sq_tensor shifted = sq_tensor_view((char *)shifted_buf.data + 8, SQ_BF16, SQ_CUDA, 2, SQ_SHAPE(nout, k));
        // index bases on and off a Philox block of four (kernels/rng.h)
        for (int sign = -1; sign <= 1; sign++) for (int unaligned = 0; unaligned <= 1; unaligned++) for (int off = 0; off <= 3; off += 3) {
            sq_tensor *target = unaligned ? &shifted : &dout;
            sq_perturb p = {.seed = 9, .step = 31, .index_base = 5000 + (uint64_t)off, .eps = 1e-3f, .sign = sign};
            sq_dequant_q4(&ho, &hc, &hs, (int)group, &p);
            tu_poison(back, nout * k);
            sq_tensor_from_host_f32(target, back);   // NaN-poison the device output
            sq_dequant_q4(target, &dc, &ds, (int)group, &p);
            sq_tensor_to_host_f32(back, target);
            int bad = 0;
            for (int64_t i = 0; i < nout * k; i++)
                if (sq_f32_to_bf16(cpu_out[i]) != sq_f32_to_bf16(back[i]) || isnan(back[i])) bad++;
            TU_CHECK(bad == 0, "dequant group %d sign %d index base %llu %s: %d of %lld elements differ from bf16(CPU)",
                     group, sign, (unsigned long long)p.index_base, unaligned ? "fallback" : "tiled", bad,
                     (long long)(nout * k));
        }
        sq_tensor_free(&shifted_buf);
        if (group >= 32) check_qlinear(&hc, &hs, &dc, &ds, group);   // before the update changes ds
        // 3. update
        memcpy(scales_cpu, scales, (size_t)(nout * ng) * sizeof(float));
        sq_tensor hsc = sq_tensor_view(scales_cpu, SQ_F32, SQ_CPU, 2, SQ_SHAPE(nout, ng));
        sq_perturb up = {.seed = 9, .step = 31, .index_base = 5000};
        sq_qzo_update(&hsc, &up, 3e-3f);
        sq_qzo_update(&ds, &up, 3e-3f);
        sq_tensor_to_host_f32(scales_gpu, &ds);
        TU_CHECK(!memcmp(scales_cpu, scales_gpu, (size_t)(nout * ng) * sizeof(float)), "update group %d: CUDA != CPU", group);
        printf("group %d: dequant (3 signs, both kernels) and update bit-identical to CPU\n", group);
        sq_tensor_free(&dc);
        sq_tensor_free(&ds);
        sq_tensor_free(&dout);
    }
    check_ema();
    check_qgemv_long_rows();
    check_qgemv_perturbation();
    check_qgemv_bits();
    return tu_finish("test_gpu_quant");
}
