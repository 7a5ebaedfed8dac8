// tests/golden/test_t5_encoder.c: the T5 encoder against transformers'
// T5EncoderModel on the fixtures of tools/make_t5_fixtures.py (fp32 CPU, ≤ 1e-4
// relative): a batch of four 32-token prompts (one empty) and one 77-token prompt,
// loaded from the sharded bf16 folder, from a pipeline folder holding it as
// text_encoder_3/, and from the fp16 single file. Also: the relative-position
// buckets equal PyTorch's for distances -1000..1000; int8 weights match PyTorch
// run with the same int8 rounding (≤ 1e-4), and their distance from fp32 is printed
// and bounded; bad input (no config.json, a missing or
// truncated shard, a missing tensor, out-of-vocabulary ids, a wrong output shape)
// fails with a message naming the file or the problem.
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "kernels/ops.h"
#include "tests/test_util.h"
#include "text_encoders/t5_encoder.h"

static char g_dir[PATH_MAX];   // tests/fixtures/t5/tiny, absolute (realpath needs PATH_MAX)

static sq_tensor load_io(sq_safetensors *io, const char *name) {
    const sq_st_entry *e = sq_st_find(io, name);
    sq_tensor t;
    SQ_CHECK(e && sq_tensor_alloc(&t, SQ_F32, SQ_CPU, e->ndim, e->shape) == SQ_OK && sq_st_load(io, name, &t) == SQ_OK,
             "fixture %s", name);
    return t;
}

static int32_t *load_ids(sq_safetensors *io, const char *name, int *B, int *T) {
    const sq_st_entry *e = sq_st_find(io, name);
    SQ_CHECK(e && e->dtype == SQ_I32 && e->ndim == 2, "fixture %s", name);
    *B = (int)e->shape[0];
    *T = (int)e->shape[1];
    int32_t *ids = malloc(e->nbytes);
    memcpy(ids, e->data, e->nbytes);
    return ids;
}

// Encodes fixture ids `ids_key` and returns the relative error against `ref_key`.
static double encode_err(const sd_t5 *m, sq_arena *a, sq_safetensors *io, const char *ids_key, const char *ref_key) {
    int B, T;
    int32_t *ids = load_ids(io, ids_key, &B, &T);
    sq_tensor out, ref = load_io(io, ref_key);
    sq_tensor_alloc(&out, SQ_F32, SQ_CPU, 3, (int64_t[]){B, T, m->cfg.d_model});
    tu_poison(out.data, sq_tensor_numel(&out));
    size_t mark = sq_arena_mark(a);
    a->high_water = mark;   // measure this call alone
    double err = INFINITY;
    if (sd_t5_encode(m, a, ids, B, T, &out) != SQ_OK) TU_CHECK(0, "encode %s: %s", ids_key, sq_error_message());
    else err = tu_rel_err(out.data, ref.data, sq_tensor_numel(&ref));
    TU_CHECK(sq_arena_mark(a) == mark, "encode %s: scratch not rewound", ids_key);
    TU_CHECK(a->high_water <= sd_t5_scratch_bytes(&m->cfg, B, T), "encode %s: used %zu scratch bytes, sd_t5_scratch_bytes says %zu",
             ids_key, a->high_water, sd_t5_scratch_bytes(&m->cfg, B, T));
    free(ids);
    sq_tensor_free(&out);
    sq_tensor_free(&ref);
    return err;
}

static void check_config(const sd_t5_config *c, const char *what) {
    printf("%s: d_model %d, %d layers, %d heads x %d, d_ff %d, vocab %d, buckets %d/%d, eps %g, %s%s\n", what, c->d_model,
           c->num_layers, c->num_heads, c->d_kv, c->d_ff, c->vocab, c->num_buckets, c->max_distance, c->eps,
           c->gated ? "gated-" : "", c->tanh_gelu ? "gelu_new" : "gelu");
    TU_CHECK(c->d_model == 64 && c->num_layers == 3 && c->num_heads == 4 && c->d_kv == 16 && c->d_ff == 96 &&
                 c->vocab == 253 && c->num_buckets == 32 && c->max_distance == 128 && c->gated && c->tanh_gelu &&
                 c->eps == 1e-6f,
             "%s: config read wrongly", what);
}

static void run_fp32(const char *path, const char *what, sq_safetensors *io) {
    sd_t5 m;
    if (sd_t5_load(&m, path, SQ_CPU, SQ_F32, false) != SQ_OK) { TU_CHECK(0, "load %s: %s", what, sq_error_message()); return; }
    check_config(&m.cfg, what);
    sq_arena a;
    SQ_CHECK(sq_arena_init(&a, SQ_CPU, sd_t5_scratch_bytes(&m.cfg, 4, 77)) == SQ_OK, "arena");
    double e1 = encode_err(&m, &a, io, "ids", "hidden"), e2 = encode_err(&m, &a, io, "ids_b1", "hidden_b1");
    printf("  4x32 prompts rel err %.2e, 1x77 prompt rel err %.2e (scratch %.2f MiB)\n", e1, e2, a.high_water / 1048576.0);
    TU_CHECK(e1 <= 1e-4, "%s 4x32: relative error %.3g", what, e1);
    TU_CHECK(e2 <= 1e-4, "%s 1x77: relative error %.3g", what, e2);
    sq_arena_free(&a);
    sd_t5_free(&m);
}

static void test_buckets(sq_safetensors *io) {
    const sq_st_entry *r = sq_st_find(io, "rel_pos"), *b = sq_st_find(io, "buckets");
    SQ_CHECK(r && b && r->shape[0] == b->shape[0], "fixture rel_pos/buckets");
    int bad = 0;
    for (int64_t i = 0; i < r->shape[0]; i++) {
        int32_t rp, want;
        memcpy(&rp, (const char *)r->data + 4 * i, 4);
        memcpy(&want, (const char *)b->data + 4 * i, 4);
        int got = sd_t5_relative_bucket(rp, 32, 128);
        if (got != want && bad++ < 5) fprintf(stderr, "bucket(%d) = %d, PyTorch %d\n", rp, got, want);
    }
    printf("relative buckets -1000..1000: %d differ from PyTorch\n", bad);
    TU_CHECK(bad == 0, "%d relative-position buckets differ", bad);
}

static void test_int8(sq_safetensors *io) {
    sd_t5 m;
    if (sd_t5_load(&m, g_dir, SQ_CPU, SQ_F32, true) != SQ_OK) { TU_CHECK(0, "load int8: %s", sq_error_message()); return; }
    TU_CHECK(m.int8 && m.blocks[1].wi1.codes.dtype == SQ_I8 && !m.blocks[1].wi1.w.data, "int8 weights not stored as I8");
    sq_arena a;
    SQ_CHECK(sq_arena_init(&a, SQ_CPU, sd_t5_scratch_bytes(&m.cfg, 4, 77)) == SQ_OK, "arena");
    double e1 = encode_err(&m, &a, io, "ids", "hidden_int8"), e2 = encode_err(&m, &a, io, "ids_b1", "hidden_b1_int8");
    printf("int8 weights vs transformers with the same int8 rounding: rel err 4x32 %.2e, 1x77 %.2e\n", e1, e2);
    TU_CHECK(e1 <= 1e-4 && e2 <= 1e-4, "int8 vs its reference: relative error %.3g / %.3g", e1, e2);
    double q1 = encode_err(&m, &a, io, "ids", "hidden"), q2 = encode_err(&m, &a, io, "ids_b1", "hidden_b1");
    printf("int8 weights vs fp32 weights (the cost of int8): rel err 4x32 %.2e, 1x77 %.2e\n", q1, q2);
    // On this random 3-layer model int8 moves the output by ~5 % of its largest value
    // (the same in PyTorch); bounded loosely so a wrong scale (far larger) still fails.
    TU_CHECK(q1 <= 0.1 && q2 <= 0.1 && q1 > 1e-3, "int8 vs fp32: relative error %.3g / %.3g", q1, q2);
    sq_arena_free(&a);
    sd_t5_free(&m);
}

// A temp folder with symlinks to some of the fixture files (and optionally a
// truncated copy of one).
static void make_dir(char *tmp, const char *const *links, int n, const char *truncated) {
    strcpy(tmp, "/tmp/sq-t5-bad-XXXXXX");
    SQ_CHECK(mkdtemp(tmp), "mkdtemp");
    char src[PATH_MAX + 256], dst[PATH_MAX + 256];
    for (int i = 0; i < n; i++) {
        snprintf(src, sizeof src, "%s/%s", g_dir, links[i]);
        snprintf(dst, sizeof dst, "%s/%s", tmp, links[i]);
        SQ_CHECK(symlink(src, dst) == 0, "symlink %s", dst);
    }
    if (truncated) {
        snprintf(src, sizeof src, "%s/%s", g_dir, truncated);
        snprintf(dst, sizeof dst, "%s/%s", tmp, truncated);
        FILE *f = fopen(src, "rb"), *g = fopen(dst, "wb");
        SQ_CHECK(f && g, "copy %s", src);
        fseek(f, 0, SEEK_END);
        long len = ftell(f);
        fseek(f, 0, SEEK_SET);
        char *buf = malloc((size_t)len);
        SQ_CHECK(fread(buf, 1, (size_t)len, f) == (size_t)len, "read %s", src);
        fwrite(buf, 1, (size_t)len * 2 / 3, g);   // the header survives, the data does not
        free(buf);
        fclose(f);
        fclose(g);
    }
}

static void remove_dir(const char *tmp) {
    static const char *names[] = {"config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
                                  "model-00002-of-00002.safetensors", "t5_single.safetensors"};
    char p[PATH_MAX + 256];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", tmp, names[i]);
        unlink(p);
    }
    rmdir(tmp);
}

static void expect_load_error(const char *path, const char *what, const char *needle) {
    sd_t5 m;
    int rc = sd_t5_load(&m, path, SQ_CPU, SQ_F32, false);
    printf("%-22s -> %s\n", what, rc == SQ_FAIL ? sq_error_message() : "(loaded)");
    TU_CHECK(rc == SQ_FAIL && strstr(sq_error_message(), needle), "%s: expected an error naming '%s', got: %s", what, needle,
             rc == SQ_FAIL ? sq_error_message() : "success");
    if (rc == SQ_OK) sd_t5_free(&m);
    TU_CHECK(m.blocks == NULL && m.embed.data == NULL, "%s: failed load left weights behind", what);
}

static void test_bad_input(void) {
    const char *shard1 = "model-00001-of-00002.safetensors", *shard2 = "model-00002-of-00002.safetensors";
    const char *all[] = {"config.json", "model.safetensors.index.json", shard1, shard2};
    char tmp[64];
    make_dir(tmp, all + 1, 3, NULL);   // no config.json
    expect_load_error(tmp, "no config.json", "config.json");
    remove_dir(tmp);
    make_dir(tmp, all, 3, NULL);       // shard 2 missing
    expect_load_error(tmp, "missing shard", shard2);
    remove_dir(tmp);
    make_dir(tmp, all, 3, shard2);     // shard 2 truncated
    expect_load_error(tmp, "truncated shard", shard2);
    remove_dir(tmp);

    // a single file without one of its tensors
    char src[PATH_MAX + 256], dst[PATH_MAX + 256];
    snprintf(src, sizeof src, "%s/t5_single.safetensors", g_dir);
    make_dir(tmp, NULL, 0, NULL);
    snprintf(dst, sizeof dst, "%s/t5_single.safetensors", tmp);
    sq_safetensors *st;
    SQ_CHECK(sq_st_open(&st, src) == SQ_OK, "%s", sq_error_message());
    const char *victim = "encoder.block.2.layer.1.DenseReluDense.wo.weight";
    int n = sq_st_count(st), k = 0;
    sq_st_tensor_desc *d = calloc((size_t)n, sizeof *d);
    for (int i = 0; i < n; i++) {
        const sq_st_entry *e = sq_st_at(st, i);
        if (!strcmp(e->name, victim)) continue;
        d[k] = (sq_st_tensor_desc){.name = e->name, .dtype = e->dtype, .ndim = e->ndim, .data = e->data};
        memcpy(d[k].shape, e->shape, sizeof e->shape);
        k++;
    }
    SQ_CHECK(k == n - 1 && sq_st_write(dst, d, k, NULL, 0) == SQ_OK, "write %s", dst);
    free(d);
    sq_st_close(st);
    expect_load_error(dst, "missing tensor", victim);
    remove_dir(tmp);
    expect_load_error("/nonexistent/t5xxl_fp16.safetensors", "no such file", "t5xxl_fp16.safetensors");

    sd_t5 m;
    TU_CHECK(sd_t5_load(&m, g_dir, SQ_CPU, SQ_BF16, false) == SQ_FAIL && strstr(sq_error_message(), "f32 on the CPU"),
             "bf16 on the CPU refused: %s", sq_error_message());
    // encode-time errors
    SQ_CHECK(sd_t5_load(&m, g_dir, SQ_CPU, SQ_F32, false) == SQ_OK, "%s", sq_error_message());
    sq_arena a;
    SQ_CHECK(sq_arena_init(&a, SQ_CPU, sd_t5_scratch_bytes(&m.cfg, 1, 8)) == SQ_OK, "arena");
    int32_t ids[8] = {4, 41, 10, 14, 253, 1, 0, 0};   // 253 = vocab: one past the last id
    sq_tensor out;
    sq_tensor_alloc(&out, SQ_F32, SQ_CPU, 3, (int64_t[]){1, 8, 64});
    TU_CHECK(sd_t5_encode(&m, &a, ids, 1, 8, &out) == SQ_FAIL && strstr(sq_error_message(), "outside the vocabulary"),
             "id 253 refused: %s", sq_error_message());
    printf("%-22s -> %s\n", "id out of vocabulary", sq_error_message());
    ids[4] = 5;
    sq_tensor wrong = sq_tensor_reshape(&out, 3, (int64_t[]){1, 4, 128});
    TU_CHECK(sd_t5_encode(&m, &a, ids, 1, 8, &wrong) == SQ_FAIL && strstr(sq_error_message(), "expected"),
             "wrong out shape refused: %s", sq_error_message());
    printf("%-22s -> %s\n", "wrong output shape", sq_error_message());
    sq_arena small;
    SQ_CHECK(sq_arena_init(&small, SQ_CPU, 4096) == SQ_OK, "arena");
    TU_CHECK(sd_t5_encode(&m, &small, ids, 1, 8, &out) == SQ_FAIL && small.used == 0, "tiny scratch refused and rewound: %s",
             sq_error_message());
    printf("%-22s -> %s\n", "scratch too small", sq_error_message());
    sq_arena_free(&small);
    sq_arena_free(&a);
    sq_tensor_free(&out);
    sd_t5_free(&m);
}

int main(void) {
    char rel[1024], io_path[PATH_MAX + 256], p[PATH_MAX + 256];
    snprintf(rel, sizeof rel, "%s/t5/tiny", tu_fixtures_dir());
    if (!realpath(rel, g_dir)) { fprintf(stderr, "%s: fixture folder not found\n", rel); return 1; }
    snprintf(io_path, sizeof io_path, "%s/io.safetensors", g_dir);
    sq_safetensors *io;
    if (sq_st_open(&io, io_path) != SQ_OK) { fprintf(stderr, "%s\n", sq_error_message()); return 1; }
    test_buckets(io);
    run_fp32(g_dir, "sharded bf16 folder", io);
    // a pipeline folder: the loader looks into text_encoder_3/
    char pipe[64] = "/tmp/sq-t5-pipe-XXXXXX", link[128];
    SQ_CHECK(mkdtemp(pipe), "mkdtemp");
    snprintf(link, sizeof link, "%s/text_encoder_3", pipe);
    SQ_CHECK(symlink(g_dir, link) == 0, "symlink");
    run_fp32(pipe, "pipeline folder", io);
    unlink(link);
    rmdir(pipe);
    snprintf(p, sizeof p, "%s/t5_single.safetensors", g_dir);
    run_fp32(p, "fp16 single file", io);
    test_int8(io);
    test_bad_input();
    sq_st_close(io);
    return tu_finish("test_t5_encoder");
}
