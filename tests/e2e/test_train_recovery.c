// tests/e2e/test_train_recovery.c: `sd-qzo train`'s learning-rate calibration, spike
// recovery and scale diagnostics, on the CPU with the tiny SD3 pipeline of
// tests/fixtures/pipeline (the dataset of test_train.c):
//   1. --lr auto --lr-auto-steps 2 writes OUT/lr_auto.json (five candidates around the
//      default rate, half a decade apart, the chosen one the best final validation
//      loss), run.json keeps "lr": "auto", the log names the rate and every step uses
//      it; --resume with more --steps keeps it without calibrating again;
//   2. --lr auto without --val-images is refused with one line;
//   3. a rate so large that the losses break: the run completes, warns, logs
//      discarded=1 rows and halves the rate after each; with --max-bad-steps 1 it
//      stops with an error naming --eps and --lr, and the checkpoint and logs it
//      leaves are whole;
//   4. the diagnostics columns (zero_share, rel_perturb_*) at the validation steps,
//      checked against the checkpoint's scales, and the warning of a large absolute
//      --eps.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "qzo/qzo.h"
#include "samples/png.h"
#include "tests/e2e/train_fixture.h"
#include "tests/test_util.h"

static const char *bin;
static char tmp[64] = "/tmp/sq-e2e-recovery-XXXXXX";

// Like test_train.c's train_cmd, without previews and with no --lr, --eps or --val-images
// of its own: `extra` gives them.
static void train_cmd(char *cmd, size_t size, const char *out, int steps, const char *extra) {
    char flags[3000];
    snprintf(flags, sizeof flags, "--cache-dir %s/cache --save-every 3 --sample-every 0 --val-every 2 --caption-dropout 0.2 %s",
             tmp, extra);
    e2e_train_cmd(cmd, size, bin, tmp, out, steps, flags);
}

// log.jsonl as parsed rows (cJSON objects), n of them.
static cJSON **read_log(const char *run_dir, int *n) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s/log.jsonl", tmp, run_dir);
    char *s = e2e_read_all(path), *save = NULL;
    cJSON **rows = calloc(1024, sizeof *rows);
    *n = 0;
    for (char *line = s ? strtok_r(s, "\n", &save) : NULL; line && *n < 1024; line = strtok_r(NULL, "\n", &save)) {
        cJSON *o = cJSON_Parse(line);
        TU_CHECK(o != NULL, "%s: every line is JSON: %s", path, line);
        if (o) rows[(*n)++] = o;
    }
    free(s);
    return rows;
}

static void free_log(cJSON **rows, int n) {
    for (int i = 0; i < n; i++) cJSON_Delete(rows[i]);
    free(rows);
}

static double field(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static bool rel_close(double a, double b, double tol) { return fabs(a - b) <= tol * fmax(fabs(a), fabs(b)); }

static void check_lr_auto(void) {
    char cmd[4096], path[256], extra[512], *out = NULL;
    snprintf(extra, sizeof extra, "--val-images %s/val --lr auto --lr-auto-steps 2 --eps 2e-3", tmp);
    train_cmd(cmd, sizeof cmd, "auto", 4, extra);
    int rc = tu_run(cmd, &out);
    TU_CHECK(rc == 0, "--lr auto run exits 0 (got %d):\n%s", rc, out);
    printf("%s", out ? out : "");
    snprintf(path, sizeof path, "%s/auto/lr_auto.json", tmp);
    char *js = e2e_read_all(path);
    cJSON *j = js ? cJSON_Parse(js) : NULL;
    TU_CHECK(j != NULL, "OUT/lr_auto.json is written and parses:\n%s", js ? js : "(missing)");
    double chosen = NAN;
    if (j) {
        chosen = field(j, "chosen_lr");
        const cJSON *cands = cJSON_GetObjectItemCaseSensitive(j, "candidates");
        TU_CHECK(cJSON_GetArraySize(cands) == 5, "5 candidates, got %d", cJSON_GetArraySize(cands));
        int is_candidate = 0, best = -1;
        double best_val = INFINITY;
        for (int c = 0; c < cJSON_GetArraySize(cands); c++) {
            const cJSON *e = cJSON_GetArrayItem(cands, c);
            double lr = field(e, "lr");
            // the default rate (qzo/qzo.c), times 10^(-1, -0.5, 0, 0.5, 1)
            sq_qzo_config d;
            sq_qzo_config_defaults(&d);
            double want = (double)d.lr * pow(10.0, 0.5 * (c - 2));
            TU_CHECK(rel_close(lr, want, 1e-5), "candidate %d: lr %g, want %g", c, lr, want);
            is_candidate += lr == chosen;
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, "val_loss");
            int nv = cJSON_GetArraySize(v);
            TU_CHECK(nv >= 2, "candidate %d: validation losses before and after", c);
            const cJSON *last = cJSON_GetArrayItem(v, nv - 1);
            double fin = cJSON_IsNumber(last) ? last->valuedouble : INFINITY;
            if (fin < best_val) { best_val = fin; best = c; }
            // every candidate starts from the same scales: the same first validation loss
            const cJSON *first = cJSON_GetArrayItem(v, 0);
            double v0 = cJSON_IsNumber(first) ? first->valuedouble : NAN;
            const cJSON *v00 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cands, 0), "val_loss"), 0);
            TU_CHECK(cJSON_IsNumber(v00) && v0 == v00->valuedouble, "candidate %d starts from the same validation loss", c);
        }
        TU_CHECK(is_candidate == 1, "chosen_lr %g is one of the candidates", chosen);
        TU_CHECK(best >= 0 && field(cJSON_GetArrayItem(cands, best), "lr") == chosen,
                 "chosen_lr %g is the candidate with the lowest final validation loss (%d)", chosen, best);
        const cJSON *at = cJSON_GetObjectItemCaseSensitive(j, "at_step");
        const cJSON *at_last = cJSON_GetArrayItem(at, cJSON_GetArraySize(at) - 1);
        TU_CHECK(cJSON_IsNumber(at_last) && at_last->valuedouble == 2, "the candidates ran --lr-auto-steps 2 steps");
    }
    char want_line[128];
    snprintf(want_line, sizeof want_line, "lr auto: chose lr %.3g", chosen);
    TU_CHECK(out && strstr(out, want_line), "the log says '%s'", want_line);
    TU_CHECK(out && !strstr(out, "the perturbation moves some scales"), "no perturbation warning at a relative eps 2e-3");
    free(out);
    snprintf(path, sizeof path, "%s/auto/run.json", tmp);
    char *rj = e2e_read_all(path);
    cJSON *rjo = rj ? cJSON_Parse(rj) : NULL;
    const cJSON *lr_opt = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(rjo, "options"), "lr");
    TU_CHECK(cJSON_IsString(lr_opt) && !strcmp(lr_opt->valuestring, "auto"), "run.json keeps \"lr\": \"auto\":\n%s",
             rj ? rj : "(missing)");
    cJSON_Delete(rjo);
    free(rj);
    int n;
    cJSON **rows = read_log("auto", &n);
    TU_CHECK(n == 5, "log: step 0 + 4 steps, got %d rows", n);
    int same = 0;
    for (int i = 1; i < n; i++) same += field(rows[i], "lr") == (double)(float)chosen;
    TU_CHECK(same == n - 1, "every step trains at the chosen rate (%d of %d)", same, n - 1);
    free_log(rows, n);

    // --resume with more steps: the checkpoint's rate, no second calibration
    struct stat before, after;
    stat(path, &before);
    snprintf(path, sizeof path, "%s/auto/lr_auto.json", tmp);
    stat(path, &before);
    char full[4600];
    train_cmd(cmd, sizeof cmd, "auto", 7, extra);
    snprintf(full, sizeof full, "%s --resume %s/auto/checkpoint.safetensors", cmd, tmp);
    rc = tu_run(full, &out);
    TU_CHECK(rc == 0, "resuming the --lr auto run exits 0:\n%s", out);
    TU_CHECK(out && !strstr(out, "candidate") && !strstr(out, "chose lr"), "the resumed run does not calibrate again:\n%s",
             out);
    free(out);
    TU_CHECK(stat(path, &after) == 0 && after.st_mtime == before.st_mtime && after.st_size == before.st_size,
             "lr_auto.json is left as it was");
    char *js2 = e2e_read_all(path);
    TU_CHECK(js && js2 && !strcmp(js, js2), "lr_auto.json unchanged");
    free(js2);
    rows = read_log("auto", &n);
    TU_CHECK(n == 8, "log after the resume: step 0 + 7 steps, got %d rows", n);
    same = 0;
    for (int i = 1; i < n; i++) same += field(rows[i], "lr") == (double)(float)chosen;
    TU_CHECK(same == n - 1, "the resumed steps train at the chosen rate too (%d of %d)", same, n - 1);
    free_log(rows, n);
    cJSON_Delete(j);
    free(js);
}

static void check_lr_auto_needs_val(void) {
    char cmd[4096], path[256], *out = NULL;
    train_cmd(cmd, sizeof cmd, "auto-noval", 4, "--lr auto");
    int rc = tu_run(cmd, &out);
    const char *e = out ? strstr(out, "sd-qzo train: error: ") : NULL;
    const char *nl = e ? strchr(e, '\n') : NULL;
    TU_CHECK(rc == 1 && e && nl && nl[1] == 0 && strstr(e, "--lr auto") && strstr(e, "--val-images"),
             "--lr auto without --val-images: one error line naming both (exit %d):\n%s", rc, out);
    free(out);
    struct stat st;
    snprintf(path, sizeof path, "%s/auto-noval", tmp);
    TU_CHECK(stat(path, &st) != 0, "the refused run wrote nothing");
}

// The checkpoint's step, share of zero scales and rms of all scales (-1 step: unreadable).
static int64_t checkpoint_stats(const char *run_dir, double *zero_share, double *rms) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s/checkpoint.safetensors", tmp, run_dir);
    sq_safetensors *st = NULL;
    if (sq_st_open(&st, path) != SQ_OK) {
        TU_CHECK(false, "open %s: %s", path, sq_error_message());
        return -1;
    }
    int64_t zeros = 0, n = 0;
    double ss = 0;
    for (int i = 0; i < sq_st_count(st); i++) {
        const sq_st_entry *e = sq_st_at(st, i);
        const float *v = (const float *)e->data;
        for (size_t j = 0; j < e->nbytes / sizeof(float); j++) {
            zeros += v[j] == 0.0f;
            ss += (double)v[j] * v[j];
            n++;
        }
    }
    const char *step = sq_st_metadata(st, "sd_qzo.step");
    int64_t k = step ? strtoll(step, NULL, 10) : -1;
    sq_st_close(st);
    *zero_share = n ? (double)zeros / (double)n : NAN;
    *rms = n ? sqrt(ss / (double)n) : NAN;
    return k;
}

static const char *const rel_keys[] = {"rel_perturb_attn_qkv", "rel_perturb_attn_out", "rel_perturb_mlp_in",
                                       "rel_perturb_mlp_out", "rel_perturb_adaln"};

static void check_recovery(void) {
    char cmd[4096], extra[512], *out = NULL;
    // --lr 1e4 (relative): steps that multiply scales by 1 - 1e4 d z leave most of them at 0 and
    // some huge; the next losses are NaN
    const double lr = 1e4;
    snprintf(extra, sizeof extra, "--val-images %s/val --lr 1e4", tmp);
    train_cmd(cmd, sizeof cmd, "spiky", 14, extra);
    int rc = tu_run(cmd, &out);
    TU_CHECK(rc == 0, "a run with broken steps completes (exit %d):\n%s", rc, out);
    TU_CHECK(out && strstr(out, "warning: step") && strstr(out, "discarded: loss is not finite") &&
                 strstr(out, "steps were discarded"),
             "it warns of the discarded steps:\n%s", out);
    free(out);
    int n;
    cJSON **rows = read_log("spiky", &n);
    TU_CHECK(n == 15, "log: step 0 + 14 steps (discarded ones too), got %d rows", n);
    int discarded = 0, lr_ok = 0, val_rows = 0, diag_ok = 0, diag_null = 0;
    for (int i = 1; i < n; i++) {
        // every step's rate: --lr halved once per discarded step before it
        double want = lr * pow(0.5, discarded);
        double got = field(rows[i], "lr");
        lr_ok += rel_close(got, want, 1e-6);
        if (!rel_close(got, want, 1e-6)) fprintf(stderr, "step %d: lr %g, want %g\n", i, got, want);
        bool d = field(rows[i], "discarded") == 1;
        discarded += d;
        if (d) TU_CHECK(isnan(field(rows[i], "loss")), "a discarded row's loss is null");
        // the diagnostics at the validation steps (every 2nd and the last): relative, so eps itself
        bool val = i % 2 == 0 || i == n - 1;
        if (val) {
            val_rows++;
            bool ok = field(rows[i], "zero_share") >= 0 && field(rows[i], "zero_share") <= 1;
            for (int k = 0; k < 5; k++) ok = ok && field(rows[i], rel_keys[k]) == (double)1e-2f;
            diag_ok += ok;
        } else {
            bool none = isnan(field(rows[i], "zero_share"));
            for (int k = 0; k < 5; k++) none = none && isnan(field(rows[i], rel_keys[k]));
            diag_null += none;
        }
    }
    TU_CHECK(discarded >= 1, "log.jsonl has discarded=1 rows (%d)", discarded);
    TU_CHECK(lr_ok == n - 1, "the rate halves after each discarded step (%d of %d rows agree)", lr_ok, n - 1);
    TU_CHECK(diag_ok == val_rows && diag_null == n - 1 - val_rows,
             "zero_share and rel_perturb_* (= eps, relative) at the %d validation steps (%d), null elsewhere (%d of %d)",
             val_rows, diag_ok, diag_null, n - 1 - val_rows);
    // the last row is a validation step and the final checkpoint: its zero share is the checkpoint's
    double zs, rms;
    int64_t ck = checkpoint_stats("spiky", &zs, &rms);
    TU_CHECK(ck == 14, "final checkpoint at step 14 (%lld)", (long long)ck);
    TU_CHECK(n == 15 && field(rows[n - 1], "zero_share") == zs && zs > 0,
             "zero_share of the last step %g = the checkpoint's share of zero scales %g", field(rows[n - 1], "zero_share"),
             zs);
    printf("--lr 1e4: %d of 14 steps discarded, %.1f%% of the scales at 0\n", discarded, 100 * zs);
    free_log(rows, n);

    // --max-bad-steps 1: the first discarded step ends the run, naming the flags
    train_cmd(cmd, sizeof cmd, "giveup", 14, extra);
    char full[4600];
    // one query: the first step then succeeds and is saved before the first discard
    snprintf(full, sizeof full, "%s --max-bad-steps 1 --queries 1", cmd);
    rc = tu_run(full, &out);
    const char *e = out ? strstr(out, "sd-qzo train: error: ") : NULL;
    const char *nl = e ? strchr(e, '\n') : NULL;
    TU_CHECK(rc != 0 && e && nl && nl[1] == 0 && strstr(e, "--eps") && strstr(e, "--lr") &&
                 strstr(e, "in a row were discarded"),
             "--max-bad-steps 1: stops with one error naming --eps and --lr (exit %d):\n%s", rc, out);
    const char *q = e ? strstr(e, "qzo step ") : NULL;
    long failed = q ? strtol(q + 9, NULL, 10) : -1;
    free(out);
    // the log ends with the step before the failed one, every line whole; the checkpoint is the last save's
    rows = read_log("giveup", &n);
    TU_CHECK(failed > 0 && n == failed + 1, "log: steps 0..%ld, got %d rows", failed, n);
    int in_order = 0;
    for (int i = 0; i < n; i++) in_order += field(rows[i], "step") == i && field(rows[i], "discarded") == 0;
    TU_CHECK(in_order == n, "the log's rows are steps 0..%d, none discarded (%d)", n - 1, in_order);
    free_log(rows, n);
    ck = checkpoint_stats("giveup", &zs, &rms);
    TU_CHECK(failed > 0 && ck == failed / 3 * 3 && ck > 0, "the checkpoint of the last save (step %lld, failed at %ld) reads",
             (long long)ck, failed);
}

static void check_absolute_warning(void) {
    char cmd[4096], extra[512], *out = NULL;
    // --eps 1 absolute: far larger than the tiny model's scales
    snprintf(extra, sizeof extra, "--val-images %s/val --lr 1e-4 --perturbation absolute --eps 1", tmp);
    train_cmd(cmd, sizeof cmd, "absolute", 2, extra);
    int rc = tu_run(cmd, &out);
    TU_CHECK(rc == 0 && out && strstr(out, "warning: the perturbation moves some scales by") &&
                 strstr(out, "--perturbation relative"),
             "--perturbation absolute --eps 1 warns (exit %d):\n%s", rc, out);
    free(out);
    int n;
    cJSON **rows = read_log("absolute", &n);
    double zs, rms;
    int64_t ck = checkpoint_stats("absolute", &zs, &rms);
    TU_CHECK(n == 3 && ck == 2, "log: steps 0..2 (%d rows), checkpoint at step 2", n);
    if (n == 3) {
        // eps / rms of each layer type: the largest is at least eps / rms(all scales), the smallest at most
        double lo = INFINITY, hi = 0;
        for (int k = 0; k < 5; k++) {
            double v = field(rows[2], rel_keys[k]);
            if (isnan(v)) continue;
            lo = fmin(lo, v);
            hi = fmax(hi, v);
        }
        double all = 1.0 / rms;
        printf("absolute eps 1: relative perturbation %.3g .. %.3g per layer type, eps / rms(all scales) %.3g\n", lo, hi, all);
        TU_CHECK(hi >= all * (1 - 1e-9) && lo <= all * (1 + 1e-9) && lo > 0.05,
                 "rel_perturb_* (%g .. %g) bracket eps / rms(scales) %g and are above the 5%% warning", lo, hi, all);
        TU_CHECK(field(rows[0], "rel_perturb_attn_qkv") > 0.05, "step 0 has the diagnostics too");
    }
    free_log(rows, n);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: test_train_recovery SD_QZO_BINARY\n"); return 1; }
    bin = argv[1];
    if (!mkdtemp(tmp)) return 1;
    e2e_make_dataset(tmp);
    const char *only = getenv("SQ_TEST_ONLY");
    if (!only || strstr(only, "auto")) check_lr_auto();
    if (!only || strstr(only, "noval")) check_lr_auto_needs_val();
    if (!only || strstr(only, "recovery")) check_recovery();
    if (!only || strstr(only, "absolute")) check_absolute_warning();
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (!tu_failures && !getenv("SQ_KEEP_TMP") && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    return tu_finish("e2e train recovery");
}
