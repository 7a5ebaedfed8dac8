// tests/bad_input/test_bad_checkpoint.c: damaged QZO checkpoints are refused with
// one line naming the file and the field or tensor, in the one place that reads
// them (qzo/checkpoint.c), never used:
//   1. every number of the metadata is parsed strictly and range-checked
//      (sd_qzo.group_size "-1" or "64x", a non-numeric sd_qzo.step, the optimiser
//      JSON's eps <= 0, queries outside 1..64, a non-finite float, ...);
//   2. a NaN or infinite scale is refused naming the tensor, by
//      `sd-qzo export`, `sd-qzo sample --scales` and `sd-qzo train --resume`;
//   3. the int4 file header (mmdit/base_model.c): a group size that is not exactly
//      32, 64 or 128, or an unknown format;
//   4. `train --resume` with a damaged checkpoint refuses before writing anything:
//      the run's run.json is not rewritten.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "core/tensor.h"
#include "mmdit/base_model.h"
#include "qzo/checkpoint.h"
#include "tests/e2e/train_fixture.h"
#include "tests/test_util.h"

static char dir[64] = "/tmp/sq-bad-ckpt-XXXXXX";

// A valid checkpoint of two small scale tensors, written by sq_checkpoint_save.
static void make_valid(const char *path) {
    sq_tensor t[2];
    float v[8] = {0.5f, 1.0f, 0.0f, 2.0f, 0.25f, 0.75f, 1.5f, 3.0f};
    sq_named_scales named[2] = {{"a.weight.scales", &t[0]}, {"b.weight.scales", &t[1]}};
    for (int i = 0; i < 2; i++) {
        SQ_CHECK(sq_tensor_alloc(&t[i], SQ_F32, SQ_CPU, 2, SQ_SHAPE(2, 2)) == SQ_OK, "%s", sq_error_message());
        SQ_CHECK(sq_tensor_from_host_f32(&t[i], v + 4 * i) == SQ_OK, "%s", sq_error_message());
    }
    sq_checkpoint_info info;
    memset(&info, 0, sizeof info);
    memset(info.base_sha256, '0', 64);
    info.group_size = 64;
    sq_qzo_config_defaults(&info.config);
    sq_qzo_state_init(&info.state);
    info.state.step = 3;
    double losses[3] = {0.5, 0.4, 0.3};
    info.loss_history = losses;
    info.loss_count = 3;
    SQ_CHECK(sq_checkpoint_save(path, named, 2, &info) == SQ_OK, "%s", sq_error_message());
    for (int i = 0; i < 2; i++) sq_tensor_free(&t[i]);
}

// Copies src to dst with metadata `key` changed: its value replaced by `value`, or,
// when `find` is non-NULL, the first `find` in it replaced by `value`. When
// bad_scale_tensor >= 0, that tensor's element 1 becomes bad_scale.
static void rewrite(const char *src, const char *dst, const char *key, const char *find, const char *value,
                    int bad_scale_tensor, float bad_scale) {
    sq_safetensors *st = NULL;
    SQ_CHECK(sq_st_open(&st, src) == SQ_OK, "%s", sq_error_message());
    int nm = sq_st_metadata_count(st), nt = sq_st_count(st);
    sq_st_kv *kv = calloc((size_t)nm + 1, sizeof *kv);
    char **owned = calloc((size_t)nm + 1, sizeof *owned);
    for (int i = 0; i < nm; i++) {
        kv[i].key = sq_st_metadata_key(st, i);
        kv[i].value = sq_st_metadata(st, kv[i].key);
        if (!key || strcmp(kv[i].key, key)) continue;
        if (!find) { kv[i].value = value; continue; }
        const char *at = strstr(kv[i].value, find);
        SQ_CHECK(at, "'%s' not in %s", find, kv[i].value);
        size_t n = strlen(kv[i].value) + strlen(value) + 1;
        owned[i] = malloc(n);
        snprintf(owned[i], n, "%.*s%s%s", (int)(at - kv[i].value), kv[i].value, value, at + strlen(find));
        kv[i].value = owned[i];
    }
    sq_st_tensor_desc *desc = calloc((size_t)nt, sizeof *desc);
    float **data = calloc((size_t)nt, sizeof *data);
    for (int i = 0; i < nt; i++) {
        const sq_st_entry *e = sq_st_at(st, i);
        data[i] = malloc(e->nbytes);
        memcpy(data[i], e->data, e->nbytes);
        if (i == bad_scale_tensor) data[i][1] = bad_scale;
        desc[i] = (sq_st_tensor_desc){.name = e->name, .dtype = e->dtype, .ndim = e->ndim, .data = data[i]};
        for (int d = 0; d < e->ndim; d++) desc[i].shape[d] = e->shape[d];
    }
    SQ_CHECK(sq_st_write(dst, desc, nt, kv, nm) == SQ_OK, "%s", sq_error_message());
    for (int i = 0; i < nt; i++) free(data[i]);
    for (int i = 0; i < nm; i++) free(owned[i]);
    free(data);
    free(desc);
    free(owned);
    free(kv);
    sq_st_close(st);
}

static void expect_refused(const char *what, const char *path, const char *want) {
    sq_safetensors *st = NULL;
    SQ_CHECK(sq_st_open(&st, path) == SQ_OK, "%s", sq_error_message());
    sq_checkpoint_info info;
    sq_error_clear();
    int rc = sq_checkpoint_read_info(st, path, NULL, &info);
    sq_st_close(st);
    const char *msg = sq_error_message();
    TU_CHECK(rc == SQ_FAIL, "%s: accepted", what);
    if (rc == SQ_OK) { free(info.loss_history); return; }
    TU_CHECK(strstr(msg, path) != NULL, "%s: message does not name the file: %s", what, msg);
    TU_CHECK(strstr(msg, want) != NULL, "%s: message lacks '%s': %s", what, want, msg);
    TU_CHECK(strchr(msg, '\n') == NULL, "%s: message is not one line", what);
    printf("%-40s -> %s\n", what, msg);
}

static void metadata_cases(const char *good) {
    char p[256];
    static const struct { const char *what, *key, *find, *value, *want; } cases[] = {
        {"group size -1", "sd_qzo.group_size", NULL, "-1", "sd_qzo.group_size"},
        {"group size 64x", "sd_qzo.group_size", NULL, "64x", "sd_qzo.group_size"},
        {"group size 48", "sd_qzo.group_size", NULL, "48", "sd_qzo.group_size"},
        {"group size empty", "sd_qzo.group_size", NULL, "", "sd_qzo.group_size"},
        {"step not a number", "sd_qzo.step", NULL, "three", "sd_qzo.step"},
        {"step negative", "sd_qzo.step", NULL, "-3", "sd_qzo.step"},
        {"optimizer step not a number", "sd_qzo.optimizer", "\"step\":\"3\"", "\"step\":\"3abc\"", "'step'"},
        {"optimizer step negative", "sd_qzo.optimizer", "\"step\":\"3\"", "\"step\":\"-1\"", "'step'"},
        {"optimizer eps 0", "sd_qzo.optimizer", "\"eps\":\"", "\"eps\":\"0\",\"x\":\"", "'eps'"},
        {"optimizer eps nan", "sd_qzo.optimizer", "\"eps\":\"", "\"eps\":\"nan\",\"x\":\"", "'eps'"},
        {"optimizer lr inf", "sd_qzo.optimizer", "\"lr\":\"", "\"lr\":\"inf\",\"x\":\"", "'lr'"},
        {"optimizer lr negative", "sd_qzo.optimizer", "\"lr\":\"", "\"lr\":\"-1\",\"x\":\"", "'lr'"},
        {"optimizer queries 0", "sd_qzo.optimizer", "\"queries\":\"", "\"queries\":\"0\",\"x\":\"", "'queries'"},
        {"optimizer queries 65", "sd_qzo.optimizer", "\"queries\":\"", "\"queries\":\"65\",\"x\":\"", "'queries'"},
        {"optimizer seed -1", "sd_qzo.optimizer", "\"seed\":\"", "\"seed\":\"-1\",\"x\":\"", "'seed'"},
        {"optimizer schedule 7", "sd_qzo.optimizer", "\"schedule\":\"", "\"schedule\":\"7\",\"x\":\"", "'schedule'"},
        {"optimizer momentum 1e999", "sd_qzo.optimizer", "\"momentum\":\"", "\"momentum\":\"1e999\",\"x\":\"", "'momentum'"},
        {"optimizer lr_scale 0", "sd_qzo.optimizer", "\"lr_scale\":\"", "\"lr_scale\":\"0\",\"x\":\"", "'lr_scale'"},
        {"optimizer bad_total -5", "sd_qzo.optimizer", "\"bad_total\":\"", "\"bad_total\":\"-5\",\"x\":\"", "'bad_total'"},
        {"optimizer max_bad_steps 2.5", "sd_qzo.optimizer", "\"max_bad_steps\":\"", "\"max_bad_steps\":\"2.5\",\"x\":\"",
         "'max_bad_steps'"},
        {"loss history null", "sd_qzo.loss_history", "0.5", "null", "loss_history"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(p, sizeof p, "%s/meta%zu.safetensors", dir, i);
        rewrite(good, p, cases[i].key, cases[i].find, cases[i].value, -1, 0);
        expect_refused(cases[i].what, p, cases[i].want);
    }
    // (a negative scale is valid: a Q4_0 GGUF base brings them, mmdit/gguf_base.h)
    const float bad[] = {NAN, INFINITY, -INFINITY};
    const char *names[] = {"NaN scale", "infinite scale", "-infinite scale"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/scale%d.safetensors", dir, i);
        rewrite(good, p, NULL, NULL, NULL, 1, bad[i]);
        expect_refused(names[i], p, "'b.weight.scales'");
    }
    // the valid one still loads, with its numbers
    sq_safetensors *st = NULL;
    sq_checkpoint_info info;
    SQ_CHECK(sq_st_open(&st, good) == SQ_OK, "%s", sq_error_message());
    TU_CHECK(sq_checkpoint_read_info(st, good, NULL, &info) == SQ_OK, "valid checkpoint: %s", sq_error_message());
    TU_CHECK(info.group_size == 64 && info.state.step == 3 && info.loss_count == 3, "valid checkpoint's numbers");
    free(info.loss_history);
    sq_st_close(st);
}

// The int4 file header: a group size that is not exactly 32/64/128 is refused.
static void q4_header_cases(void) {
    static const char *groups[] = {"-1", "64x", "0", "48", " 64", NULL};
    char p[256];
    float one = 1.0f;
    for (int i = 0; i < 6; i++) {
        snprintf(p, sizeof p, "%s/q4_%d.safetensors", dir, i);
        sq_st_kv kv[] = {{"sd_qzo.format", SD_Q4_FORMAT}, {"sd_qzo.group_size", groups[i]}};
        sq_st_tensor_desc d = {.name = "x", .dtype = SQ_F32, .ndim = 1, .shape = {1}, .data = &one};
        SQ_CHECK(sq_st_write(p, &d, 1, kv, groups[i] ? 2 : 1) == SQ_OK, "%s", sq_error_message());
        sq_safetensors *st = NULL;
        SQ_CHECK(sq_st_open(&st, p) == SQ_OK, "%s", sq_error_message());
        sd_q4_header h;
        sq_error_clear();
        int rc = sd_q4_header_read(st, p, &h);
        const char *msg = sq_error_message();
        TU_CHECK(rc == SQ_FAIL && strstr(msg, p) && strstr(msg, "sd_qzo.group_size") && !strchr(msg, '\n'),
                 "int4 header group '%s': refused naming the file and field (rc %d): %s", groups[i] ? groups[i] : "(none)",
                 rc, msg);
        printf("%-40s -> %s\n", "int4 header group size", msg);
        sq_st_close(st);
    }
}

// `sd-qzo CMD ...` exits 1 with one error line holding want and want2.
static void cli_refused(const char *what, const char *cmd, const char *want, const char *want2) {
    char *out = NULL;
    int rc = tu_run(cmd, &out);
    const char *e = out ? strstr(out, ": error: ") : NULL;
    const char *nl = e ? strchr(e, '\n') : NULL;
    TU_CHECK(rc == 1, "%s: exit 1 (got %d):\n%s", what, rc, out);
    TU_CHECK(e && nl && nl[1] == 0 && strstr(e, want) && strstr(e, want2),
             "%s: one last error line with '%s' and '%s':\n%s", what, want, want2, out);
    if (e) printf("%-40s -> %s", what, e + 2);
    free(out);
}

static void cli_cases(const char *bin) {
    char cmd[4096], tiny[1024], nan_ckpt[256], neg_group[256];
    snprintf(tiny, sizeof tiny, "%s/pipeline/tiny", tu_fixtures_dir());
    snprintf(nan_ckpt, sizeof nan_ckpt, "%s/scale0.safetensors", dir);
    snprintf(neg_group, sizeof neg_group, "%s/meta0.safetensors", dir);
    snprintf(cmd, sizeof cmd, "'%s' export --model '%s' --scales %s --out %s/export", bin, tiny, nan_ckpt, dir);
    cli_refused("export, NaN scale", cmd, nan_ckpt, "'b.weight.scales'");
    snprintf(cmd, sizeof cmd, "'%s' export --model '%s' --scales %s --out %s/export2", bin, tiny, neg_group, dir);
    cli_refused("export, group size -1", cmd, neg_group, "sd_qzo.group_size");
    snprintf(cmd, sizeof cmd, "'%s' sample --model '%s' --scales %s --prompt x --out %s/samples --width 64 --height 64 "
             "--steps 1 --device cpu", bin, tiny, nan_ckpt, dir);
    cli_refused("sample, NaN scale", cmd, nan_ckpt, "'b.weight.scales'");
    snprintf(cmd, sizeof cmd, "'%s' sample --model '%s' --scales %s --prompt x --out %s/samples --width 64 --height 64 "
             "--steps 1 --device cpu", bin, tiny, neg_group, dir);
    cli_refused("sample, group size -1", cmd, neg_group, "sd_qzo.group_size");
}

// A real 1-step run on the tiny fixture, its checkpoint then damaged (a NaN scale):
// --resume refuses naming the file and tensor, and leaves run.json as it was.
static void resume_cases(const char *bin) {
    char cmd[4096], base[2048], ckpt[256], bad[256], run_json[256], *out = NULL;
    e2e_make_dataset(dir);
    e2e_train_cmd(base, sizeof base, bin, dir, "run", 1, "--sample-every 0");
    int rc = tu_run(base, &out);
    TU_CHECK(rc == 0, "1-step train run exits 0 (got %d):\n%s", rc, out);
    free(out);
    snprintf(ckpt, sizeof ckpt, "%s/run/checkpoint.safetensors", dir);
    snprintf(bad, sizeof bad, "%s/run/bad.safetensors", dir);
    snprintf(run_json, sizeof run_json, "%s/run/run.json", dir);
    struct stat before, after;
    TU_CHECK(stat(run_json, &before) == 0, "run.json written");
    sq_safetensors *st = NULL;
    SQ_CHECK(sq_st_open(&st, ckpt) == SQ_OK, "%s", sq_error_message());
    char tensor[300];
    snprintf(tensor, sizeof tensor, "'%s'", sq_st_at(st, 0)->name);
    sq_st_close(st);
    rewrite(ckpt, bad, NULL, NULL, NULL, 0, NAN);
    snprintf(cmd, sizeof cmd, "%s --steps 2 --resume %s", base, bad);
    usleep(20000);   // a rewrite would show in the inode and the mtime
    cli_refused("train --resume, NaN scale", cmd, bad, tensor);
    TU_CHECK(stat(run_json, &after) == 0 && after.st_ino == before.st_ino &&
                 after.st_mtim.tv_sec == before.st_mtim.tv_sec && after.st_mtim.tv_nsec == before.st_mtim.tv_nsec,
             "a refused --resume leaves run.json as it was");
    snprintf(bad, sizeof bad, "%s/run/bad_step.safetensors", dir);
    rewrite(ckpt, bad, "sd_qzo.step", NULL, "1x", -1, 0);
    snprintf(cmd, sizeof cmd, "%s --steps 2 --resume %s", base, bad);
    cli_refused("train --resume, step '1x'", cmd, bad, "sd_qzo.step");
    TU_CHECK(stat(run_json, &after) == 0 && after.st_ino == before.st_ino, "run.json still as it was");
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: test_bad_checkpoint SD_QZO_BINARY\n"); return 1; }
    SQ_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char good[256];
    snprintf(good, sizeof good, "%s/good.safetensors", dir);
    make_valid(good);
    metadata_cases(good);
    q4_header_cases();
    cli_cases(argv[1]);
    resume_cases(argv[1]);
    char rm[128];
    snprintf(rm, sizeof rm, "rm -rf '%s'", dir);
    if (tu_failures == 0 && system(rm) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return tu_finish("bad_checkpoint");
}
