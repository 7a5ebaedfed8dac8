// tests/golden/test_conditioning.c: SD3 conditioning (sd_encode_prompts) on the tiny
// pipeline fixture against diffusers' StableDiffusion3Pipeline.encode_prompt
// (tests/fixtures/pipeline/tiny_encode.safetensors, tools/make_pipeline_fixtures.py;
// fp32 CPU, <= 1e-4 relative): a batch of four prompts (plain, punctuation, a long
// one that truncates, the empty one) with T5 (max length 32), the empty negative
// prompt alone, and prompt0 without T5 (zeros, width from transformer/config.json).
// Also: separate prompts per encoder land in their own slices, the single-file
// loader agrees with the CLIP fixtures, scratch sized by sd_text_scratch_bytes is
// enough, wrong output shapes are refused, and the cache hash is stable and
// depends on the T5 setting.
#include <string.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "kernels/ops.h"
#include "tests/test_util.h"
#include "text_encoders/conditioning.h"

static sq_safetensors *g_io;

static sq_tensor fixture(sq_safetensors *st, const char *name) {
    const sq_st_entry *e = sq_st_find(st, name);
    sq_tensor t;
    SQ_CHECK(e && sq_tensor_alloc(&t, SQ_F32, SQ_CPU, e->ndim, e->shape) == SQ_OK && sq_st_load(st, name, &t) == SQ_OK,
             "fixture %s", name);
    return t;
}

static sq_tensor poisoned(int ndim, const int64_t *shape) {
    sq_tensor t;
    SQ_CHECK(sq_tensor_alloc(&t, SQ_F32, SQ_CPU, ndim, shape) == SQ_OK, "alloc");
    tu_poison(t.data, sq_tensor_numel(&t));
    return t;
}

// row b of got (rows of n floats) against the whole fixture `key`
static void compare_row(const char *what, const sq_tensor *got, int b, const char *key) {
    sq_tensor ref = fixture(g_io, key);
    int64_t n = sq_tensor_numel(&ref);
    SQ_CHECK(n * got->shape[0] == sq_tensor_numel(got), "%s: fixture size", key);
    double e = tu_rel_err((const float *)got->data + b * n, ref.data, n);
    printf("  %-40s rel err %.2e\n", what, e);
    TU_CHECK(e <= 1e-4, "%s: relative error %.3g", what, e);
    sq_tensor_free(&ref);
}

static void outputs(const sd_text_encoders *te, int B, sq_tensor *ctx, sq_tensor *pooled) {
    *ctx = poisoned(3, (int64_t[]){B, sd_text_context_tokens(te), sd_text_context_dim(te)});
    *pooled = poisoned(2, (int64_t[]){B, sd_text_pooled_dim(te)});
}

static const char *prompt(int i) {
    char k[16];
    snprintf(k, sizeof k, "prompt%d", i);
    const char *p = sq_st_metadata(g_io, k);
    SQ_CHECK(p, "fixture metadata %s", k);
    return p;
}

// max |a - b| over a (B,T,D) sub-block [t0,t0+nt) x [d0,d0+nd) of two contexts
static double block_diff(const sq_tensor *a, const sq_tensor *b, int t0, int nt, int d0, int nd) {
    int64_t D = a->shape[2];
    double m = 0;
    for (int t = t0; t < t0 + nt; t++)
        for (int d = d0; d < d0 + nd; d++) {
            double x = fabs(((const float *)a->data)[t * D + d] - ((const float *)b->data)[t * D + d]);
            if (!(x <= m)) m = x;   // NaN sticks
        }
    return m;
}

static void test_with_t5(const char *pipe, sd_text_options *opt) {
    sd_text_encoders te;
    if (sd_text_encoders_load(&te, pipe, SQ_CPU, SQ_F32, opt) != SQ_OK) { TU_CHECK(0, "load: %s", sq_error_message()); return; }
    printf("with T5: context %d x %d, pooled %d\n", sd_text_context_tokens(&te), sd_text_context_dim(&te),
           sd_text_pooled_dim(&te));
    TU_CHECK(sd_text_context_tokens(&te) == 77 + 32 && sd_text_context_dim(&te) == 96 && sd_text_pooled_dim(&te) == 40,
             "dims %d %d %d", sd_text_context_tokens(&te), sd_text_context_dim(&te), sd_text_pooled_dim(&te));
    sq_arena a;
    size_t need = sd_text_scratch_bytes(&te, 4);
    SQ_CHECK(sq_arena_init(&a, SQ_CPU, need) == SQ_OK, "%s", sq_error_message());
    const char *prompts[4] = {prompt(0), prompt(1), prompt(2), prompt(3)};
    sq_tensor ctx, pooled;
    outputs(&te, 4, &ctx, &pooled);
    TU_CHECK(sd_encode_prompts(&te, &a, prompts, 4, &ctx, &pooled) == SQ_OK, "encode: %s", sq_error_message());
    printf("  scratch %.1f KiB (bound %.1f KiB)\n", a.high_water / 1024.0, need / 1024.0);
    for (int i = 0; i < 4; i++) {
        char k[32], what[64];
        snprintf(k, sizeof k, "prompt%d.context", i);
        snprintf(what, sizeof what, "prompt%d context (B=4 row %d)", i, i);
        compare_row(what, &ctx, i, k);
        snprintf(k, sizeof k, "prompt%d.pooled", i);
        snprintf(what, sizeof what, "prompt%d pooled", i);
        compare_row(what, &pooled, i, k);
    }
    // the unconditional branch: "" alone
    sq_tensor c1, p1;
    outputs(&te, 1, &c1, &p1);
    const char *empty[1] = {""};
    TU_CHECK(sd_encode_prompts(&te, &a, empty, 1, &c1, &p1) == SQ_OK, "encode: %s", sq_error_message());
    compare_row("negative \"\" context", &c1, 0, "negative.context");
    compare_row("negative \"\" pooled", &p1, 0, "negative.pooled");

    // separate prompts: L from prompt0, G from prompt1, T5 from prompt2
    const char *pl[1] = {prompts[0]}, *pg[1] = {prompts[1]}, *pt[1] = {prompts[2]};
    sq_tensor cs, ps;
    outputs(&te, 1, &cs, &ps);
    TU_CHECK(sd_encode_prompts3(&te, &a, pl, pg, pt, 1, &cs, &ps) == SQ_OK, "encode3: %s", sq_error_message());
    sq_tensor row[3];
    for (int i = 0; i < 3; i++) {   // rows i of the batch run as (1,T,D) views
        row[i] = sq_tensor_view((float *)ctx.data + (int64_t)i * 109 * 96, SQ_F32, SQ_CPU, 3, (int64_t[]){1, 109, 96});
    }
    double dl = block_diff(&cs, &row[0], 0, 77, 0, 32), dg = block_diff(&cs, &row[1], 0, 77, 32, 48);
    double dz = block_diff(&cs, &row[0], 0, 77, 80, 16), dt = block_diff(&cs, &row[2], 77, 32, 0, 96);
    printf("  separate prompts: |L - prompt0| %.1e, |G - prompt1| %.1e, |pad| %.1e, |T5 - prompt2| %.1e\n", dl, dg, dz, dt);
    TU_CHECK(dl < 1e-5 && dg < 1e-5 && dz == 0 && dt < 1e-5, "separate prompts land in their slices");
    const float *pp = ps.data, *pb = pooled.data;
    TU_CHECK(fabsf(pp[3] - pb[3]) < 1e-5 && fabsf(pp[16 + 5] - pb[40 + 16 + 5]) < 1e-5, "separate pooled");

    // wrong output shape: an error, not a crash
    sq_tensor wrong = poisoned(3, (int64_t[]){1, 77, 96});
    TU_CHECK(sd_encode_prompts(&te, &a, empty, 1, &wrong, &p1) == SQ_FAIL && strstr(sq_error_message(), "context"),
             "wrong context shape refused: %s", sq_error_message());
    printf("  wrong shape: %s\n", sq_error_message());

    char h1[65], h2[65];
    TU_CHECK(sd_text_encoders_hash(&te, h1) == SQ_OK && sd_text_encoders_hash(&te, h2) == SQ_OK && !strcmp(h1, h2) &&
                 strlen(h1) == 64, "hash stable");
    printf("  hash %s over %d files\n", h1, te.n_files);
    sq_tensor_free(&ctx); sq_tensor_free(&pooled); sq_tensor_free(&c1); sq_tensor_free(&p1);
    sq_tensor_free(&cs); sq_tensor_free(&ps); sq_tensor_free(&wrong);
    sq_arena_free(&a);

    // no T5: zeros in the T5 part, a different cache hash
    sd_text_encoders te0;
    sd_text_options o0 = *opt;
    o0.use_t5 = false;
    if (sd_text_encoders_load(&te0, pipe, SQ_CPU, SQ_F32, &o0) != SQ_OK) { TU_CHECK(0, "load: %s", sq_error_message()); return; }
    TU_CHECK(!te0.has_t5 && sd_text_context_dim(&te0) == 96, "no-T5 width %d", sd_text_context_dim(&te0));
    SQ_CHECK(sq_arena_init(&a, SQ_CPU, sd_text_scratch_bytes(&te0, 1)) == SQ_OK, "%s", sq_error_message());
    outputs(&te0, 1, &c1, &p1);
    TU_CHECK(sd_encode_prompts(&te0, &a, prompts, 1, &c1, &p1) == SQ_OK, "encode: %s", sq_error_message());
    compare_row("no T5: prompt0 context", &c1, 0, "no_t5.prompt0.context");
    compare_row("no T5: prompt0 pooled", &p1, 0, "no_t5.prompt0.pooled");
    char h0[65];
    TU_CHECK(sd_text_encoders_hash(&te0, h0) == SQ_OK && strcmp(h0, h1), "hash depends on T5");
    sq_tensor_free(&c1); sq_tensor_free(&p1);
    sq_arena_free(&a);
    sd_text_encoders_free(&te0);
    sd_text_encoders_free(&te);
}

// clip_l / clip_g single files + the pipeline's tokenizers, no T5: the CLIP part of
// the context is the CLIP fixtures' penultimate states (fp16-rounded weights).
static void test_single_files(const char *fx, const char *pipe) {
    char l[1024], g[1024], io_path[1024];
    snprintf(l, sizeof l, "%s/clip/clip_l.safetensors", fx);
    snprintf(g, sizeof g, "%s/clip/clip_g.safetensors", fx);
    snprintf(io_path, sizeof io_path, "%s/clip/io.safetensors", fx);
    sd_text_encoders te;
    if (sd_text_encoders_load_files(&te, l, g, NULL, pipe, SQ_CPU, SQ_F32, NULL) != SQ_OK) {
        TU_CHECK(0, "load files: %s", sq_error_message());
        return;
    }
    sq_safetensors *cio;
    SQ_CHECK(sq_st_open(&cio, io_path) == SQ_OK, "%s", sq_error_message());
    const char *prompts[2] = {sq_st_metadata(cio, "prompt0"), sq_st_metadata(cio, "prompt1")};
    sq_arena a;
    SQ_CHECK(sq_arena_init(&a, SQ_CPU, sd_text_scratch_bytes(&te, 2)) == SQ_OK, "%s", sq_error_message());
    sq_tensor ctx, pooled;
    outputs(&te, 2, &ctx, &pooled);
    TU_CHECK(sd_encode_prompts(&te, &a, prompts, 2, &ctx, &pooled) == SQ_OK, "encode: %s", sq_error_message());
    sq_tensor pl = fixture(cio, "single_l.penultimate"), pg = fixture(cio, "single_g.penultimate");
    sq_tensor ql = fixture(cio, "single_l.pooled"), qg = fixture(cio, "single_g.pooled");
    int64_t D = sd_text_context_dim(&te), Tt = sd_text_context_tokens(&te);
    double worst = 0, zmax = 0;
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < Tt; t++)
            for (int d = 0; d < D; d++) {
                float got = ((const float *)ctx.data)[((int64_t)b * Tt + t) * D + d];
                float want = t >= 77 || d >= 80 ? 0.0f
                           : d < 32 ? ((const float *)pl.data)[((int64_t)b * 77 + t) * 32 + d]
                                    : ((const float *)pg.data)[((int64_t)b * 77 + t) * 48 + d - 32];
                double e = fabs(got - want);
                if (!(e <= worst)) worst = e;
                if (want == 0.0f && !(fabs(got) <= zmax)) zmax = fabs(got);
            }
    for (int b = 0; b < 2; b++)
        for (int d = 0; d < 40; d++) {
            float got = ((const float *)pooled.data)[b * 40 + d];
            float want = d < 16 ? ((const float *)ql.data)[b * 16 + d] : ((const float *)qg.data)[b * 24 + d - 16];
            double e = fabs(got - want);
            if (!(e <= worst)) worst = e;
        }
    printf("single files: context %lld x %lld, max |diff| vs CLIP fixtures %.2e, padding max %.1e\n", (long long)Tt,
           (long long)D, worst, zmax);
    TU_CHECK(worst < 1e-4 && zmax == 0, "single-file conditioning: %g", worst);
    sq_tensor_free(&pl); sq_tensor_free(&pg); sq_tensor_free(&ql); sq_tensor_free(&qg);
    sq_tensor_free(&ctx); sq_tensor_free(&pooled);
    sq_arena_free(&a);
    sq_st_close(cio);
    sd_text_encoders_free(&te);
}

int main(void) {
    const char *fx = tu_fixtures_dir();
    char io_path[1024], pipe[1024];
    snprintf(io_path, sizeof io_path, "%s/pipeline/tiny_encode.safetensors", fx);
    snprintf(pipe, sizeof pipe, "%s/pipeline/tiny", fx);
    if (sq_st_open(&g_io, io_path) != SQ_OK) { fprintf(stderr, "%s\n", sq_error_message()); return 1; }
    sd_text_options opt;
    sd_text_options_defaults(&opt);
    TU_CHECK(opt.t5_max_length == 256 && opt.use_t5 && !opt.t5_int8, "defaults");
    const char *len = sq_st_metadata(g_io, "t5_max_length");
    opt.t5_max_length = len ? atoi(len) : 32;
    test_with_t5(pipe, &opt);
    test_single_files(fx, pipe);
    sq_st_close(g_io);
    return tu_finish("test_conditioning");
}
