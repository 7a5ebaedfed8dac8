// tests/golden/test_export.c: `sd-qzo export` (app/export.h) on the tiny Large-like
// MMDiT and the committed scales checkpoint tests/fixtures/export/scales.safetensors:
// 1. the base quantised as training does, with the checkpoint's scales, runs the
//    forward that diffusers computes on the exported folder (expected.safetensors,
//    tools/check_export_roundtrip.py) within 1e-4;
// 2. the exported diffusers folder (sharded) and single file, reloaded with
//    sd_mmdit_load, give that output too, and equal the int4 + scales forward;
//    exporting from the int4 file of `sd-qzo quantize`, from the Stability single
//    file and from its int4 file gives the same weights;
// 3. the scales matter (the base scales give another output), bf16 export stays
//    within bf16 rounding, metadata names the base hash and step;
// 4. a checkpoint of another base, a quantised base of another group size, and a
//    non-empty output folder without --force are refused with a clear message;
// 5. a Medium-like model (dual attention) round-trips through both layouts.
// `test_export --write-checkpoint PATH` writes the fixture checkpoint (the base's
// own int4 scales, deterministically changed by up to ±30%, as a QZO run would
// save them); tools/check_export_roundtrip.py calls it.
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/export.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "mmdit/base_model.h"
#include "mmdit/quantize.h"
#include "mmdit/quantize_file.h"
#include "qzo/checkpoint.h"
#include "tests/test_util.h"

static const int GROUP = 32;   // the tiny models are 32 wide
static const double TOL = 1e-4;

typedef struct {
    sq_tensor x, ctx, pooled, t;
} inputs;

static sq_tensor load_io(sq_safetensors *io, const char *name) {
    const sq_st_entry *e = sq_st_find(io, name);
    sq_tensor t;
    SQ_CHECK(e && sq_tensor_alloc(&t, SQ_F32, SQ_CPU, e->ndim, e->shape) == SQ_OK, "fixture %s", name);
    SQ_CHECK(sq_st_load(io, name, &t) == SQ_OK, "%s", sq_error_message());
    return t;
}

static void load_inputs(inputs *in, const char *cas) {
    char p[1024];
    snprintf(p, sizeof p, "%s/mmdit/%s/io.safetensors", tu_fixtures_dir(), cas);
    sq_safetensors *io;
    SQ_CHECK(sq_st_open(&io, p) == SQ_OK, "%s", sq_error_message());
    in->x = load_io(io, "hidden_states");
    in->ctx = load_io(io, "encoder_hidden_states");
    in->pooled = load_io(io, "pooled_projections");
    in->t = load_io(io, "timestep");
    sq_st_close(io);
}

static void free_inputs(inputs *in) {
    sq_tensor_free(&in->x);
    sq_tensor_free(&in->ctx);
    sq_tensor_free(&in->pooled);
    sq_tensor_free(&in->t);
}

// malloc'ed output (B,C,H,W), NaN-poisoned before the forward; NULL on failure.
static float *forward(const sd_mmdit *m, const inputs *in) {
    sq_arena a;
    sq_arena_init(&a, SQ_CPU, 16 << 20);
    sq_tensor out;
    SQ_CHECK(sq_tensor_alloc(&out, SQ_F32, SQ_CPU, 4, in->x.shape) == SQ_OK, "alloc");
    tu_poison(out.data, sq_tensor_numel(&out));
    int rc = sd_mmdit_forward(m, &a, &in->x, in->t.data, &in->ctx, &in->pooled, NULL, &out, NULL);
    TU_CHECK(rc == SQ_OK, "forward: %s", sq_error_message());
    sq_arena_free(&a);
    if (rc != SQ_OK) { sq_tensor_free(&out); return NULL; }
    return out.data;
}

static float *load_and_forward(const char *path, const inputs *in) {
    sd_mmdit m;
    if (sd_mmdit_load(&m, path, SQ_CPU, SQ_F32) != SQ_OK) {
        TU_CHECK(0, "load %s: %s", path, sq_error_message());
        return NULL;
    }
    float *out = forward(&m, in);
    sd_mmdit_free(&m);
    return out;
}

static void base_hash(const char *model, char hex[65]) {
    sd_base_model b;
    sq_safetensors *st;
    SQ_CHECK(sd_base_open(model, &b, &st) == SQ_OK && sd_base_sha256(&b, st, hex) == SQ_OK, "%s", sq_error_message());
    sq_st_close(st);
}

// The base as training holds it: int4 at the group size, scales from ckpt (NULL:
// the quantiser's own).
typedef struct {
    sd_mmdit m;
    sd_mmdit_qlayer *layers;
    sq_named_scales *named;
    char (*names)[128];
    int n;
} qmodel;

static int qmodel_load(qmodel *q, const char *model, const char *ckpt) {
    memset(q, 0, sizeof *q);
    if (sd_mmdit_load(&q->m, model, SQ_CPU, SQ_F32) != SQ_OK || sd_mmdit_quantize(&q->m, GROUP, NULL) != SQ_OK) return SQ_FAIL;
    q->n = sd_mmdit_qlayers(&q->m, NULL, 0);
    q->layers = calloc((size_t)q->n, sizeof *q->layers);
    q->named = calloc((size_t)q->n, sizeof *q->named);
    q->names = calloc((size_t)q->n, sizeof *q->names);
    SQ_CHECK(q->layers && q->named && q->names, "alloc");
    sd_mmdit_qlayers(&q->m, q->layers, q->n);
    for (int i = 0; i < q->n; i++) {
        snprintf(q->names[i], sizeof q->names[i], "%.100s.weight.scales", q->layers[i].name);
        q->named[i] = (sq_named_scales){.name = q->names[i], .scales = &q->layers[i].linear->scales};
    }
    if (!ckpt) return SQ_OK;
    char hex[65];
    base_hash(model, hex);
    sq_checkpoint_info info;
    if (sq_checkpoint_load(ckpt, q->named, q->n, hex, &info) != SQ_OK) return SQ_FAIL;
    free(info.loss_history);
    return SQ_OK;
}

static void qmodel_free(qmodel *q) {
    sd_mmdit_free(&q->m);
    free(q->layers);
    free(q->named);
    free(q->names);
}

// Writes the fixture checkpoint for `model` (see the file comment).
static int write_checkpoint(const char *model, const char *path) {
    qmodel q;
    if (qmodel_load(&q, model, NULL) != SQ_OK) return SQ_FAIL;
    uint64_t seed = 2024;
    for (int i = 0; i < q.n; i++) {
        float *s = q.layers[i].linear->scales.data;
        for (int64_t j = 0; j < sq_tensor_numel(&q.layers[i].linear->scales); j++) s[j] *= 1.0f + tu_uniform(&seed, -0.3f, 0.3f);
    }
    double losses[3] = {0.61, 0.58, 0.55};
    sq_checkpoint_info info = {.group_size = GROUP, .loss_history = losses, .loss_count = 3};
    sq_qzo_config_defaults(&info.config);
    sq_qzo_state_init(&info.state);
    info.state.step = 1234;
    base_hash(model, info.base_sha256);
    int rc = sq_checkpoint_save(path, q.named, q.n, &info);
    qmodel_free(&q);
    return rc;
}

static void check_close(const char *what, const float *got, const float *ref, int64_t n, double tol) {
    double e = got && ref ? tu_rel_err(got, ref, n) : INFINITY;
    printf("  %-52s rel err %.2e\n", what, e);
    TU_CHECK(e <= tol, "%s: relative error %.3g > %g", what, e, tol);
}

static sd_export_options opts(const char *model, const char *scales, const char *out, int formats, int dtype) {
    sd_export_options o;
    sd_export_options_defaults(&o);
    o.model = model;
    o.scales = scales;
    o.out_dir = out;
    o.formats = formats;
    o.dtype = dtype;
    o.quiet = true;
    return o;
}

static bool exists(const char *dir, const char *name) {
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static void check_metadata(const char *file, const char *hash) {
    sq_safetensors *st;
    if (sq_st_open(&st, file) != SQ_OK) { TU_CHECK(0, "%s", sq_error_message()); return; }
    const char *h = sq_st_metadata(st, "sd_qzo.base_sha256"), *step = sq_st_metadata(st, "sd_qzo.step"),
               *from = sq_st_metadata(st, "sd_qzo.exported_from");
    TU_CHECK(h && !strcmp(h, hash) && step && !strcmp(step, "1234") && from && strstr(from, "scales.safetensors"),
             "%s: metadata base hash / step / exported_from missing or wrong", file);
    TU_CHECK(!sq_st_metadata(st, "sd_qzo.format"), "%s: an export must not look like a quantised file", file);
    sq_st_close(st);
}

static void test_large_like(const char *tmp) {
    char base[1024], single_base[1024], ckpt[1024], expected[1024];
    snprintf(base, sizeof base, "%s/mmdit/large_like/transformer", tu_fixtures_dir());
    snprintf(single_base, sizeof single_base, "%s/mmdit/large_like/single_file.safetensors", tu_fixtures_dir());
    snprintf(ckpt, sizeof ckpt, "%s/export/scales.safetensors", tu_fixtures_dir());
    snprintf(expected, sizeof expected, "%s/export/expected.safetensors", tu_fixtures_dir());
    inputs in;
    load_inputs(&in, "large_like");
    int64_t numel = sq_tensor_numel(&in.x);
    sq_safetensors *ex;
    SQ_CHECK(sq_st_open(&ex, expected) == SQ_OK, "%s", sq_error_message());
    sq_tensor ref = load_io(ex, "output");
    sq_st_close(ex);
    char hash[65];
    base_hash(base, hash);
    printf("large_like, group %d, checkpoint step 1234:\n", GROUP);

    // 1. the training-side model with the checkpoint's scales vs diffusers on the export
    qmodel q;
    float *out_q = NULL, *out_base_scales = NULL;
    if (qmodel_load(&q, base, ckpt) == SQ_OK) out_q = forward(&q.m, &in);
    else TU_CHECK(0, "int4 base + checkpoint: %s", sq_error_message());
    qmodel_free(&q);
    check_close("int4 + checkpoint scales (C) vs diffusers on export", out_q, ref.data, numel, TOL);
    if (qmodel_load(&q, base, NULL) == SQ_OK) out_base_scales = forward(&q.m, &in);
    qmodel_free(&q);
    double moved = out_base_scales && out_q ? tu_rel_err(out_base_scales, out_q, numel) : 0;
    printf("  the trained scales move the output by rel %.3f from the base int4 scales\n", moved);
    TU_CHECK(moved > 1e-2, "the checkpoint's scales should change the output (rel %.3g)", moved);

    // 2. export both layouts (fp32, small shards so the index path runs), reload, run
    char a[1100], file[1200];
    snprintf(a, sizeof a, "%s/ft", tmp);
    sd_export_options o = opts(base, ckpt, a, SD_EXPORT_DIFFUSERS | SD_EXPORT_SINGLE, SQ_F32);
    o.max_shard_bytes = 150000;
    TU_CHECK(sd_export(&o) == SQ_OK, "export: %s", sq_error_message());
    TU_CHECK(exists(a, "transformer/config.json") && exists(a, "transformer/diffusion_pytorch_model.safetensors.index.json") &&
                 exists(a, "transformer/diffusion_pytorch_model-00001-of-00004.safetensors") && exists(a, "ft.safetensors"),
             "export layout: config.json, index + 4 shards of 150 kB, ft.safetensors");
    float *out_dir = load_and_forward(a, &in);
    snprintf(file, sizeof file, "%s/ft.safetensors", a);
    float *out_single = load_and_forward(file, &in);
    check_close("exported diffusers folder (C) vs diffusers", out_dir, ref.data, numel, TOL);
    check_close("exported single file (C) vs diffusers", out_single, ref.data, numel, TOL);
    check_close("exported folder vs int4 + scales (C, same arithmetic)", out_dir, out_q, numel, 1e-6);
    check_close("exported single file vs exported folder (C)", out_single, out_dir, numel, 0);
    snprintf(file, sizeof file, "%s/transformer/diffusion_pytorch_model-00002-of-00004.safetensors", a);
    check_metadata(file, hash);
    snprintf(file, sizeof file, "%s/ft.safetensors", a);
    check_metadata(file, hash);

    // from the int4 file of `sd-qzo quantize` (same source hash): the same weights
    char qfile[1100], b[1100];
    snprintf(qfile, sizeof qfile, "%s/q32.safetensors", tmp);
    snprintf(b, sizeof b, "%s/from_q", tmp);
    TU_CHECK(sd_quantize_checkpoint(base, qfile, GROUP, true) == SQ_OK, "quantize: %s", sq_error_message());
    o = opts(qfile, ckpt, b, SD_EXPORT_SINGLE, SQ_F32);
    o.name = "w";
    TU_CHECK(sd_export(&o) == SQ_OK, "export from the int4 file: %s", sq_error_message());
    snprintf(file, sizeof file, "%s/w.safetensors", b);
    float *out_fromq = load_and_forward(file, &in);
    check_close("export from the int4 file vs from the dense folder", out_fromq, out_single, numel, 0);

    // a Stability single file as the base (dense, and its int4 file): same weights,
    // so the same export; its own checkpoint, since its key names give it its own hash
    char ck_single[1100], e[1100], qsingle[1100];
    snprintf(ck_single, sizeof ck_single, "%s/single_scales.safetensors", tmp);
    snprintf(qsingle, sizeof qsingle, "%s/q_single.safetensors", tmp);
    snprintf(e, sizeof e, "%s/from_single", tmp);
    TU_CHECK(write_checkpoint(single_base, ck_single) == SQ_OK, "single-file checkpoint: %s", sq_error_message());
    TU_CHECK(sd_quantize_checkpoint(single_base, qsingle, GROUP, true) == SQ_OK, "quantize single: %s", sq_error_message());
    o = opts(single_base, ck_single, e, SD_EXPORT_DIFFUSERS, SQ_F32);
    TU_CHECK(sd_export(&o) == SQ_OK, "export from a single file: %s", sq_error_message());
    float *out_from_single = load_and_forward(e, &in);
    check_close("export of the single-file base vs of the folder", out_from_single, out_dir, numel, 0);
    o = opts(qsingle, ck_single, e, SD_EXPORT_SINGLE, SQ_F32);
    o.force = true;
    o.name = "w";
    TU_CHECK(sd_export(&o) == SQ_OK, "export from the single-layout int4 file: %s", sq_error_message());
    snprintf(file, sizeof file, "%s/w.safetensors", e);
    float *out_from_qsingle = load_and_forward(file, &in);
    check_close("export of its int4 file vs of the folder", out_from_qsingle, out_dir, numel, 0);

    // 3. bf16 export: the fp32 result rounded once
    char c[1100];
    snprintf(c, sizeof c, "%s/bf16", tmp);
    o = opts(base, ckpt, c, SD_EXPORT_DIFFUSERS, SQ_BF16);
    TU_CHECK(sd_export(&o) == SQ_OK, "bf16 export: %s", sq_error_message());
    TU_CHECK(exists(c, "transformer/diffusion_pytorch_model.safetensors") && !exists(c, "bf16.safetensors"),
             "default shard size: one file; no single file unless asked");
    float *out_bf16 = load_and_forward(c, &in);
    check_close("bf16 export (C) vs diffusers fp32", out_bf16, ref.data, numel, 2e-2);

    // 4. refusals
    char d[1100];
    snprintf(d, sizeof d, "%s/never", tmp);
    o = opts(single_base, ckpt, d, SD_EXPORT_DIFFUSERS, SQ_F32);
    TU_CHECK(sd_export(&o) == SQ_FAIL && strstr(sq_error_message(), "another base model") &&
                 strstr(sq_error_message(), "scales.safetensors"),
             "a checkpoint of another base is refused: %s", sq_error_message());
    printf("  wrong base: %s\n", sq_error_message());
    TU_CHECK(access(d, F_OK) != 0, "a refused export creates no folder");
    snprintf(qfile, sizeof qfile, "%s/q64.safetensors", tmp);
    TU_CHECK(sd_quantize_checkpoint(base, qfile, 64, true) == SQ_OK, "quantize at 64: %s", sq_error_message());
    o = opts(qfile, ckpt, d, SD_EXPORT_DIFFUSERS, SQ_F32);
    TU_CHECK(sd_export(&o) == SQ_FAIL && strstr(sq_error_message(), "group size"),
             "a quantised base of another group size is refused: %s", sq_error_message());
    printf("  wrong group: %s\n", sq_error_message());
    o = opts(base, ckpt, a, SD_EXPORT_DIFFUSERS, SQ_F32);
    TU_CHECK(sd_export(&o) == SQ_FAIL && strstr(sq_error_message(), "not empty") && strstr(sq_error_message(), "--force"),
             "a non-empty output folder is refused without --force: %s", sq_error_message());
    printf("  non-empty folder: %s\n", sq_error_message());
    // --force, now unsharded: the earlier index and shards must go
    o.force = true;
    TU_CHECK(sd_export(&o) == SQ_OK, "export --force: %s", sq_error_message());
    TU_CHECK(!exists(a, "transformer/diffusion_pytorch_model.safetensors.index.json") &&
                 !exists(a, "transformer/diffusion_pytorch_model-00001-of-00004.safetensors"),
             "--force removes the earlier shards and index");
    float *out_forced = load_and_forward(a, &in);
    check_close("re-export with --force vs first export", out_forced, out_dir, numel, 0);

    free(out_q); free(out_base_scales); free(out_dir); free(out_single); free(out_fromq); free(out_bf16); free(out_forced);
    free(out_from_single); free(out_from_qsingle);
    sq_tensor_free(&ref);
    free_inputs(&in);
}

// Dual attention (attn2, 9-way adaLN) through both layouts; C against C.
static void test_medium_like(const char *tmp) {
    char base[1024], ckpt[1100], out[1100], file[1200];
    snprintf(base, sizeof base, "%s/mmdit/medium_like/transformer", tu_fixtures_dir());
    snprintf(ckpt, sizeof ckpt, "%s/medium_scales.safetensors", tmp);
    snprintf(out, sizeof out, "%s/medium", tmp);
    printf("medium_like (dual attention):\n");
    TU_CHECK(write_checkpoint(base, ckpt) == SQ_OK, "medium checkpoint: %s", sq_error_message());
    inputs in;
    load_inputs(&in, "medium_like");
    int64_t numel = sq_tensor_numel(&in.x);
    qmodel q;
    float *out_q = NULL;
    if (qmodel_load(&q, base, ckpt) == SQ_OK) out_q = forward(&q.m, &in);
    else TU_CHECK(0, "medium int4 + checkpoint: %s", sq_error_message());
    qmodel_free(&q);
    sd_export_options o = opts(base, ckpt, out, SD_EXPORT_DIFFUSERS | SD_EXPORT_SINGLE, SQ_F32);
    TU_CHECK(sd_export(&o) == SQ_OK, "medium export: %s", sq_error_message());
    float *out_dir = load_and_forward(out, &in);
    snprintf(file, sizeof file, "%s/medium.safetensors", out);
    float *out_single = load_and_forward(file, &in);
    check_close("exported folder vs int4 + scales", out_dir, out_q, numel, 1e-6);
    check_close("exported single file vs int4 + scales", out_single, out_q, numel, 1e-6);
    free(out_q); free(out_dir); free(out_single);
    free_inputs(&in);
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--write-checkpoint")) {
        char base[1024];
        snprintf(base, sizeof base, "%s/mmdit/large_like/transformer", tu_fixtures_dir());
        if (write_checkpoint(base, argv[2]) != SQ_OK) {
            fprintf(stderr, "test_export: %s\n", sq_error_message());
            return 1;
        }
        printf("wrote %s\n", argv[2]);
        return 0;
    }
    char tmp[64] = "/tmp/sq-export-XXXXXX";
    if (!mkdtemp(tmp)) return 1;
    test_large_like(tmp);
    test_medium_like(tmp);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    return tu_finish("test_export");
}
