// tests/golden/test_export_gguf.c: `sd-qzo export --format gguf` (app/export_gguf.c)
// on the tiny Large-like MMDiT and the committed checkpoint
// tests/fixtures/export/scales.safetensors (trained at group 32):
// 1. the file parses with core/gguf.h, general.architecture is "sd3", the names
//    are the single file's keys without the prefix, with the same shapes;
// 2. each Q4_0 joint-block linear dequantises to the checkpoint's scales ⊙ codes
//    (the fp32 single-file export) within the rounding of its scale to fp16, and
//    is exactly fp16(scale) · code; the other tensors are F32 (exact) or F16;
// 3. the file loads back into sd-qzo (sd_mmdit_load through mmdit/gguf_base.h) as
//    an int4 base at group 32 whose scales are the fp16-rounded trained scales;
// 4. at group 64 (only the layers 64 wide or more are int4 then), each scale is
//    written into two blocks, and the same checks hold;
// 5. an export into an existing file name without --force is refused and leaves
//    the folder as it was.
// tools/check_gguf_export.py makes the same checks with the gguf Python package.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/export.h"
#include "core/error.h"
#include "core/gguf.h"
#include "core/safetensors.h"
#include "mmdit/base_model.h"
#include "mmdit/model.h"
#include "mmdit/quantize.h"
#include "qzo/checkpoint.h"
#include "qzo/trained_scales.h"
#include "tests/test_util.h"

static sd_export_options opts(const char *model, const char *scales, const char *out, int formats, int dtype) {
    sd_export_options o;
    sd_export_options_defaults(&o);
    o.model = model;
    o.scales = scales;
    o.out_dir = out;
    o.formats = formats;
    o.dtype = dtype;
    o.name = "ft";
    o.quiet = true;
    return o;
}

static void check_file(const char *gpath, const char *ref_path) {
    sq_gguf *g;
    sq_safetensors *ref;
    TU_CHECK(sq_gguf_open(&g, gpath) == SQ_OK, "open export: %s", sq_error_message());
    TU_CHECK(sq_st_open(&ref, ref_path) == SQ_OK, "open reference: %s", sq_error_message());
    if (!g || !ref) return;
    const char *arch = sq_gguf_get_string(g, "general.architecture");
    TU_CHECK(arch && !strcmp(arch, "sd3"), "architecture");
    int n_ref = 0;
    for (int i = 0; i < sq_st_count(ref); i++) n_ref += !strncmp(sq_st_at(ref, i)->name, SD_SINGLE_FILE_PREFIX, 22);
    TU_CHECK(sq_gguf_tensor_count(g) == n_ref && n_ref > 0, "%d tensors, reference %d", sq_gguf_tensor_count(g), n_ref);
    int nq = 0;
    double max_rel = 0;
    for (int i = 0; i < sq_gguf_tensor_count(g); i++) {
        const sq_gguf_tensor *t = sq_gguf_tensor_at(g, i);
        char key[400];
        snprintf(key, sizeof key, SD_SINGLE_FILE_PREFIX "%s", t->name);
        const sq_st_entry *e = sq_st_find(ref, key);
        TU_CHECK(e != NULL && strncmp(t->name, SD_SINGLE_FILE_PREFIX, 22), "%s: a single-file key without the prefix", t->name);
        if (!e) continue;
        bool same = t->n_dims == e->ndim;
        for (int d = 0; same && d < e->ndim; d++) same = t->ne[e->ndim - 1 - d] == e->shape[d];
        TU_CHECK(same, "%s: dims", t->name);
        int64_t n = sq_shape_numel(e->ndim, e->shape);
        float *got = malloc((size_t)n * 4), *want = malloc((size_t)n * 4);
        tu_poison(got, n);
        sq_convert_to_f32(want, e->data, e->dtype, n);
        TU_CHECK(sq_ggml_dequantize(t->type, t->data, n, got) == SQ_OK, "dequantise %s", t->name);
        if (t->type == SQ_GGML_Q4_0) {
            nq++;
            TU_CHECK(!strncmp(t->name, "joint_blocks.", 13), "%s: Q4_0 outside the joint blocks", t->name);
            // per element: got = fp16(s)·c and want = s·c, so |got - want| <= |want|·2^-11
            bool ok = true;
            for (int64_t j = 0; j < n; j++) {
                double err = fabs((double)got[j] - want[j]);
                ok &= err <= fabs(want[j]) * ldexp(1, -11) + ldexp(8, -24);
                if (fabs(want[j]) > 1e-6 && err / fabs(want[j]) > max_rel) max_rel = err / fabs(want[j]);
            }
            TU_CHECK(ok, "%s: Q4_0 values off the trained scales ⊙ codes by more than fp16 scale rounding", t->name);
        } else {
            TU_CHECK(t->type == SQ_GGML_F32 || t->type == SQ_GGML_F16, "%s: type %s", t->name, sq_ggml_type_name(t->type));
            if (t->type == SQ_GGML_F32) TU_CHECK(!memcmp(got, want, (size_t)n * 4), "%s: F32 exact", t->name);
            else TU_CHECK(tu_rel_err(got, want, n) <= 1e-3, "%s: F16 within rounding", t->name);
        }
        free(got);
        free(want);
    }
    printf("  %d Q4_0 tensors; max relative difference from the trained scales ⊙ codes %.3g\n", nq, max_rel);
    TU_CHECK(nq > 0 && max_rel > 0 && max_rel <= ldexp(1, -11), "Q4_0 count %d, max rel %.3g", nq, max_rel);
    sq_st_close(ref);
    sq_gguf_close(g);
}

// The export loads back as an int4 base whose forward weights are the Q4_0 values.
static void check_reload(const char *gpath) {
    sd_mmdit m;
    int rc = sd_mmdit_load(&m, gpath, SQ_CPU, SQ_F32);
    TU_CHECK(rc == SQ_OK, "reload: %s", sq_error_message());
    if (rc != SQ_OK) return;
    TU_CHECK(sq_linear_quantized(&m.blocks[0].to_q) && m.source_sha256[0], "int4 after reload");
    sd_mmdit_free(&m);
}

// A checkpoint at group 64 for model: its own int4 scales changed by up to ±30%.
static int write_checkpoint_g64(const char *model, const char *path) {
    sd_mmdit m;
    if (sd_mmdit_load(&m, model, SQ_CPU, SQ_F32) != SQ_OK || sd_mmdit_quantize(&m, 64, NULL) != SQ_OK) return SQ_FAIL;
    sd_scale_list sl;
    if (sd_scale_list_make(&m, model, &sl) != SQ_OK) { sd_mmdit_free(&m); return SQ_FAIL; }
    uint64_t seed = 64;
    for (int i = 0; i < sl.count; i++) {
        float *s = sl.scales[i]->data;
        for (int64_t j = 0; j < sq_tensor_numel(sl.scales[i]); j++) s[j] *= 1.0f + tu_uniform(&seed, -0.3f, 0.3f);
    }
    double losses[1] = {0.5};
    sq_checkpoint_info info = {.group_size = 64, .loss_history = losses, .loss_count = 1};
    sq_qzo_config_defaults(&info.config);
    sq_qzo_state_init(&info.state);
    info.state.step = 64;
    sd_base_model b;
    sq_safetensors *st;
    int rc = sd_base_open(model, &b, &st);
    if (rc == SQ_OK) {
        rc = sd_base_sha256(&b, st, info.base_sha256);
        sq_st_close(st);
    }
    if (rc == SQ_OK) rc = sq_checkpoint_save(path, sl.named, sl.count, &info);
    printf("group 64: %d int4 layers\n", sl.count);
    sd_scale_list_free(&sl);
    sd_mmdit_free(&m);
    return rc;
}

static int64_t file_size(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 ? (int64_t)st.st_size : -1;
}

int main(void) {
    char tmp[] = "/tmp/sq_export_gguf_XXXXXX";
    TU_CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    char base[1024], ckpt[1024], a[1100], b[1100], gpath[1200], ref[1200];
    snprintf(base, sizeof base, "%s/mmdit/large_like/transformer", tu_fixtures_dir());
    snprintf(ckpt, sizeof ckpt, "%s/export/scales.safetensors", tu_fixtures_dir());
    snprintf(a, sizeof a, "%s/gguf", tmp);
    snprintf(b, sizeof b, "%s/single", tmp);
    sd_export_options o = opts(base, ckpt, a, SD_EXPORT_GGUF, -1);
    TU_CHECK(sd_export(&o) == SQ_OK, "gguf export: %s", sq_error_message());
    o = opts(base, ckpt, b, SD_EXPORT_SINGLE, SQ_F32);
    TU_CHECK(sd_export(&o) == SQ_OK, "single export: %s", sq_error_message());
    snprintf(gpath, sizeof gpath, "%s/ft.gguf", a);
    snprintf(ref, sizeof ref, "%s/ft.safetensors", b);
    printf("large_like, group 32, gguf %lld bytes, fp32 single file %lld bytes:\n", (long long)file_size(gpath),
           (long long)file_size(ref));
    check_file(gpath, ref);
    check_reload(gpath);
    // group 64: two blocks per scale
    char ck64[1200], a64[1200], b64[1200], g64[1300], r64[1300];
    snprintf(ck64, sizeof ck64, "%s/g64.safetensors", tmp);
    snprintf(a64, sizeof a64, "%s/gguf64", tmp);
    snprintf(b64, sizeof b64, "%s/single64", tmp);
    TU_CHECK(write_checkpoint_g64(base, ck64) == SQ_OK, "group-64 checkpoint: %s", sq_error_message());
    o = opts(base, ck64, a64, SD_EXPORT_GGUF, -1);
    TU_CHECK(sd_export(&o) == SQ_OK, "gguf export at group 64: %s", sq_error_message());
    o = opts(base, ck64, b64, SD_EXPORT_SINGLE, SQ_F32);
    TU_CHECK(sd_export(&o) == SQ_OK, "single export at group 64: %s", sq_error_message());
    snprintf(g64, sizeof g64, "%s/ft.gguf", a64);
    snprintf(r64, sizeof r64, "%s/ft.safetensors", b64);
    check_file(g64, r64);
    sq_gguf *g;
    if (sq_gguf_open(&g, g64) == SQ_OK) {
        int pairs = 0, same = 0;
        for (int i = 0; i < sq_gguf_tensor_count(g); i++) {
            const sq_gguf_tensor *t = sq_gguf_tensor_at(g, i);
            if (t->type != SQ_GGML_Q4_0) continue;
            const uint8_t *d = t->data;
            for (int64_t blk = 0; blk + 1 < (int64_t)(t->nbytes / 18); blk += 2, pairs++) same += !memcmp(d + blk * 18, d + (blk + 1) * 18, 2);
        }
        TU_CHECK(pairs > 0 && same == pairs, "group 64: %d of %d block pairs share their scale", same, pairs);
        sq_gguf_close(g);
    }
    // without --force, an existing export is left alone
    int64_t before = file_size(gpath);
    o = opts(base, ckpt, a, SD_EXPORT_GGUF, -1);
    TU_CHECK(sd_export(&o) == SQ_FAIL && strstr(sq_error_message(), "not empty"), "non-empty folder refused: %s",
             sq_error_message());
    TU_CHECK(file_size(gpath) == before, "export left as it was");
    char cmd[1300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    TU_CHECK(system(cmd) == 0, "cleanup");
    return tu_finish("export_gguf");
}
