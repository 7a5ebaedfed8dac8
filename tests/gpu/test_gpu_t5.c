// tests/gpu/test_gpu_t5.c: the T5 encoder on CUDA against the CPU fp32 reference,
// on the fixtures of tools/make_t5_fixtures.py, plus the two ops it added:
// - sq_embedding on CUDA (f32 and bf16, more ids than one launch carries) == CPU, exactly;
// - sq_dequant_i8 on CUDA: f32 == CPU exactly, bf16 == bf16(CPU) exactly;
// - T5 in f32 on CUDA vs CPU ≤ 1e-4; bf16 vs CPU ≤ 2e-2; bf16 with int8 weights vs the
//   CPU with int8 weights ≤ 2e-2; the int8-vs-bf16 embedding error is printed (the
//   cost of int8, asked for by the text-encoder issue) and bounded loosely.
// Outputs are poisoned with NaN first. Skips (exit 77) without a GPU.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "kernels/backend.h"
#include "kernels/int8.h"
#include "kernels/ops.h"
#include "tests/gpu/gpu_start.h"
#include "tests/test_util.h"
#include "text_encoders/t5_encoder.h"

static void test_embedding(void) {
    const int64_t V = 301, C = 200, N = 1100;   // 1100 ids: three launches of at most 512
    float *table = malloc(V * C * sizeof(float)), *ref = malloc(N * C * sizeof(float)), *got = malloc(N * C * sizeof(float));
    int32_t *ids = malloc(N * sizeof(int32_t));
    uint64_t s = 11;
    tu_fill_uniform(table, V * C, &s, -3, 3);
    for (int64_t i = 0; i < N; i++) ids[i] = (int32_t)(tu_next(&s) % V);
    ids[0] = 0;
    ids[N - 1] = (int32_t)V - 1;
    sq_tensor ht = sq_tensor_view(table, SQ_F32, SQ_CPU, 2, SQ_SHAPE(V, C));
    sq_tensor hr = sq_tensor_view(ref, SQ_F32, SQ_CPU, 2, SQ_SHAPE(N, C));
    sq_embedding(&hr, &ht, ids);
    for (int r = 0; r < 2; r++) {
        sq_dtype dt = r ? SQ_BF16 : SQ_F32;
        sq_tensor dtab, dout;
        SQ_CHECK(sq_tensor_alloc(&dtab, dt, SQ_CUDA, 2, SQ_SHAPE(V, C)) == SQ_OK &&
                     sq_tensor_alloc(&dout, dt, SQ_CUDA, 2, SQ_SHAPE(N, C)) == SQ_OK && sq_tensor_copy(&dtab, &ht) == SQ_OK,
                 "%s", sq_error_message());
        sq_fill(&dout, NAN);
        sq_embedding(&dout, &dtab, ids);
        sq_tensor_to_host_f32(got, &dout);
        int64_t diff = 0;
        for (int64_t i = 0; i < N * C; i++) {
            float want = dt == SQ_F32 ? ref[i] : sq_bf16_to_f32(sq_f32_to_bf16(ref[i]));
            diff += memcmp(&want, &got[i], 4) != 0;
        }
        printf("embedding %s: %lld ids x %lld, %lld elements differ from the CPU\n", sq_dtype_name(dt), (long long)N,
               (long long)C, (long long)diff);
        TU_CHECK(diff == 0, "embedding %s: %lld elements differ", sq_dtype_name(dt), (long long)diff);
        sq_tensor_free(&dtab);
        sq_tensor_free(&dout);
    }
    free(table); free(ref); free(got); free(ids);
}

static void test_dequant_i8(void) {
    const int64_t nout = 96, k = 260;   // k % 4 == 0: the vectorised kernel
    const int64_t k2 = 37;              // and a row length that is not: the scalar kernel
    float *w = malloc(nout * k * sizeof(float)), *ref = malloc(nout * k * sizeof(float)), *got = malloc(nout * k * sizeof(float));
    int8_t *codes = malloc(nout * k);
    float scales[96];
    uint64_t s = 5;
    for (int pass = 0; pass < 2; pass++) {
        int64_t K = pass ? k2 : k;
        tu_fill_uniform(w, nout * K, &s, -0.2f, 0.2f);
        sq_quantize_i8_rows(w, nout, K, codes, scales);
        sq_tensor hc = sq_tensor_view(codes, SQ_I8, SQ_CPU, 2, SQ_SHAPE(nout, K));
        sq_tensor hs = sq_tensor_view(scales, SQ_F32, SQ_CPU, 1, SQ_SHAPE(nout));
        sq_tensor hr = sq_tensor_view(ref, SQ_F32, SQ_CPU, 2, SQ_SHAPE(nout, K));
        sq_dequant_i8(&hr, &hc, &hs);
        sq_tensor dc, ds;
        SQ_CHECK(sq_tensor_alloc(&dc, SQ_I8, SQ_CUDA, 2, SQ_SHAPE(nout, K)) == SQ_OK &&
                     sq_tensor_alloc(&ds, SQ_F32, SQ_CUDA, 1, SQ_SHAPE(nout)) == SQ_OK && sq_tensor_copy(&dc, &hc) == SQ_OK &&
                     sq_tensor_copy(&ds, &hs) == SQ_OK,
                 "%s", sq_error_message());
        for (int r = 0; r < 2; r++) {
            sq_dtype dt = r ? SQ_BF16 : SQ_F32;
            sq_tensor dout;
            SQ_CHECK(sq_tensor_alloc(&dout, dt, SQ_CUDA, 2, SQ_SHAPE(nout, K)) == SQ_OK, "%s", sq_error_message());
            sq_fill(&dout, NAN);
            sq_dequant_i8(&dout, &dc, &ds);
            sq_tensor_to_host_f32(got, &dout);
            int64_t diff = 0;
            for (int64_t i = 0; i < nout * K; i++) {
                float want = dt == SQ_F32 ? ref[i] : sq_bf16_to_f32(sq_f32_to_bf16(ref[i]));
                diff += memcmp(&want, &got[i], 4) != 0;
            }
            printf("dequant_i8 %s (%lldx%lld): %lld elements differ from the CPU\n", sq_dtype_name(dt), (long long)nout,
                   (long long)K, (long long)diff);
            TU_CHECK(diff == 0, "dequant_i8 %s K=%lld: %lld elements differ", sq_dtype_name(dt), (long long)K, (long long)diff);
            sq_tensor_free(&dout);
        }
        sq_tensor_free(&dc);
        sq_tensor_free(&ds);
    }
    free(w); free(ref); free(got); free(codes);
}

typedef struct {
    int B, T;
    int32_t *ids;
} batch;

static batch load_batch(sq_safetensors *io, const char *name) {
    const sq_st_entry *e = sq_st_find(io, name);
    SQ_CHECK(e && e->dtype == SQ_I32 && e->ndim == 2, "fixture %s", name);
    batch b = {(int)e->shape[0], (int)e->shape[1], malloc(e->nbytes)};
    memcpy(b.ids, e->data, e->nbytes);
    return b;
}

// Encodes on the model's device and returns the output as host floats.
static float *encode(const sd_t5 *m, const batch *b) {
    sq_arena a;
    SQ_CHECK(sq_arena_init(&a, m->device, sd_t5_scratch_bytes(&m->cfg, b->B, b->T)) == SQ_OK, "%s", sq_error_message());
    sq_tensor out;
    int64_t n = (int64_t)b->B * b->T * m->cfg.d_model;
    SQ_CHECK(sq_tensor_alloc(&out, m->dtype, m->device, 3, SQ_SHAPE(b->B, b->T, m->cfg.d_model)) == SQ_OK, "%s",
             sq_error_message());
    sq_fill(&out, NAN);
    float *h = malloc((size_t)n * sizeof(float));
    tu_poison(h, n);
    if (sd_t5_encode(m, &a, b->ids, b->B, b->T, &out) != SQ_OK) TU_CHECK(0, "encode: %s", sq_error_message());
    else sq_tensor_to_host_f32(h, &out);
    sq_tensor_free(&out);
    sq_arena_free(&a);
    return h;
}

static float *run(const char *path, sq_device dev, sq_dtype dt, bool int8, const batch *b) {
    sd_t5 m;
    SQ_CHECK(sd_t5_load(&m, path, dev, dt, int8) == SQ_OK, "load: %s", sq_error_message());
    float *h = encode(&m, b);
    sd_t5_free(&m);
    return h;
}

int main(void) {
    sq_device dev;
    int start = tu_gpu_start(&dev);
    if (start) return start;
    test_embedding();
    test_dequant_i8();

    char path[1024], io_path[1100];
    snprintf(path, sizeof path, "%s/t5/tiny", tu_fixtures_dir());
    snprintf(io_path, sizeof io_path, "%s/io.safetensors", path);
    sq_safetensors *io;
    SQ_CHECK(sq_st_open(&io, io_path) == SQ_OK, "%s", sq_error_message());
    const char *keys[2] = {"ids", "ids_b1"};
    for (int i = 0; i < 2; i++) {
        batch b = load_batch(io, keys[i]);
        int64_t n = (int64_t)b.B * b.T * 64;
        float *cpu = run(path, SQ_CPU, SQ_F32, false, &b), *cpu8 = run(path, SQ_CPU, SQ_F32, true, &b);
        float *f32 = run(path, SQ_CUDA, SQ_F32, false, &b), *bf = run(path, SQ_CUDA, SQ_BF16, false, &b);
        float *bf8 = run(path, SQ_CUDA, SQ_BF16, true, &b);
        double e_f32 = tu_rel_err(f32, cpu, n), e_bf = tu_rel_err(bf, cpu, n), e_bf8 = tu_rel_err(bf8, cpu8, n);
        double e_q = tu_rel_err(bf8, bf, n);
        double n_bf = tu_norm_rel_err(bf, cpu, n), n_bf8 = tu_norm_rel_err(bf8, cpu8, n);
        printf("T5 %dx%d: CUDA f32 vs CPU %.2e | CUDA bf16 vs CPU %.2e (norm %.2e) | CUDA bf16+int8 vs CPU int8 %.2e "
               "(norm %.2e)\n", b.B, b.T, e_f32, e_bf, n_bf, e_bf8, n_bf8);
        printf("T5 %dx%d: int8-vs-bf16 embedding relative error (CUDA) %.2e\n", b.B, b.T, e_q);
        TU_CHECK(e_f32 <= 1e-4, "%s: CUDA f32 vs CPU %.3g", keys[i], e_f32);
        // bf16: the tensor error within 2e-2; single elements of this random model's
        // largest activations round further (max-relative 2-3e-2 measured on an H100)
        TU_CHECK(n_bf <= 2e-2 && e_bf <= 5e-2, "%s: CUDA bf16 vs CPU %.3g (norm %.3g)", keys[i], e_bf, n_bf);
        TU_CHECK(n_bf8 <= 2e-2 && e_bf8 <= 5e-2, "%s: CUDA bf16 int8 vs CPU int8 %.3g (norm %.3g)", keys[i], e_bf8, n_bf8);
        // the CPU shows ~5e-2 for int8 vs fp32 on this random model (tests/golden/test_t5_encoder.c)
        TU_CHECK(e_q <= 0.1 && e_q > 1e-3, "%s: int8 vs bf16 %.3g", keys[i], e_q);
        free(cpu); free(cpu8); free(f32); free(bf); free(bf8); free(b.ids);
    }
    sq_st_close(io);
    return tu_finish("test_gpu_t5");
}
