// tests/e2e/test_train_tensorboard.c: `sd-qzo train --tensorboard` and the run's
// timing, on the CPU with the tiny SD3 pipeline and the small generated data set of
// tests/e2e/train_fixture.h:
//   1. a 2-step run (with --ema) writes one event file named as TensorBoard's writer names them;
//      its records parse (CRCs checked, tests/tensorboard_reader.h) with the
//      file_version event first, every scalar tag at the steps it belongs to with
//      the values of log.jsonl, and a preview image per preview step that is the
//      PNG in OUT/previews; the progress line and the closing summary ("Time: ...",
//      images seen, each phase) are printed, and the summary is in report.html;
//   2. resumed to step 4, the run adds a second event file that sorts after the
//      first and starts with a SessionLog START at step 3;
//   3. resumed again from a copy of the step-2 checkpoint to step 5 (as after a
//      crash past a checkpoint), the steps 3, 4 logged twice are dropped by the
//      START event: read the way TensorBoard reads a folder (files in name order,
//      purging at START), every step from 1 to 5 appears once, with log.jsonl's value.
#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tests/e2e/train_fixture.h"
#include "tests/tensorboard_reader.h"
#include "tests/test_util.h"

static const char *bin;
static char tmp[64] = "/tmp/sq-e2e-tb-XXXXXX";

static void train_cmd(char *cmd, size_t size, int steps, const char *extra) {
    char flags[3000];
    snprintf(flags, sizeof flags,
             "--val-images %s/val --sample-prompts %s/prompts.txt --cache-dir %s/cache --save-every 2 --sample-every 2 "
             "--val-every 2 --sample-steps 1 --lr 2e-3 --eps 2e-3 --ema 0.9 --tensorboard %s",
             tmp, tmp, tmp, extra);
    e2e_train_cmd(cmd, size, bin, tmp, "out", steps, flags);
}

// The event files of OUT in name order (the order TensorBoard reads them in).
static int event_files(char names[][512], int max) {
    char dir[128];
    snprintf(dir, sizeof dir, "%s/out", tmp);
    struct dirent **list;
    int n = scandir(dir, &list, NULL, alphasort), k = 0;
    for (int i = 0; i < n; i++) {
        if (!strncmp(list[i]->d_name, "events.out.tfevents.", 20) && k < max)
            snprintf(names[k++], 512, "%s/%s", dir, list[i]->d_name);
        free(list[i]);
    }
    if (n >= 0) free(list);
    return k;
}

// events.out.tfevents.<10 digits>.<host>.<pid>.0
static bool tensorboard_name(const char *path) {
    const char *b = strrchr(path, '/') + 1, *p = b + 20;
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    for (int i = 0; i < 10; i++)
        if (p[i] < '0' || p[i] > '9') return false;
    if (p[10] != '.' || strncmp(p + 11, host, strlen(host)) || p[11 + strlen(host)] != '.') return false;
    const char *pid = p + 12 + strlen(host), *dot = strchr(pid, '.');
    return dot && dot > pid && !strcmp(dot, ".0");
}

// The value of `key` at each step of log.jsonl (NAN when null or absent); steps 0..max.
static void log_values(const char *key, double *v, int max) {
    char path[256];
    snprintf(path, sizeof path, "%s/out/log.jsonl", tmp);
    char *s = e2e_read_all(path);
    for (int i = 0; i <= max; i++) v[i] = NAN;
    for (char *line = s; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        cJSON *o = cJSON_Parse(line);
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "step"), *x = cJSON_GetObjectItemCaseSensitive(o, key);
        if (cJSON_IsNumber(st) && st->valueint >= 0 && st->valueint <= max && cJSON_IsNumber(x)) v[st->valueint] = x->valuedouble;
        cJSON_Delete(o);
        line = nl ? nl + 1 : NULL;
    }
    free(s);
}

// The scalars of `tag` as TensorBoard shows them: files in name order, a SessionLog
// START at step k dropping what was read at steps >= k. seen[step] counts values.
static void merged(char names[][512], int n_files, const char *tag, float *val, int *seen, int max) {
    for (int i = 0; i <= max; i++) { seen[i] = 0; val[i] = NAN; }
    for (int f = 0; f < n_files; f++) {
        tbr_file r;
        TU_CHECK(tbr_read(names[f], &r) && !r.bad, "%s parses: %s", names[f], r.why);
        for (int i = 0; i < r.count; i++) {
            const tbr_event *e = &r.ev[i];
            if (e->session_status == 1)
                for (int64_t s = e->step; s <= max; s++) seen[s] = 0;
            if (e->has_simple && !strcmp(e->tag, tag) && e->step >= 0 && e->step <= max) {
                seen[e->step]++;
                val[e->step] = e->simple_value;
            }
        }
        tbr_free(&r);
    }
}

// Every tag the run writes at step k and log.jsonl's key for it (NULL: no log column).
static const struct { const char *tag, *key; bool at_val; } tags[] = {
    {"train/loss", "loss", false}, {"train/loss_plus", "loss_plus", false}, {"train/loss_minus", "loss_minus", false},
    {"train/d", "d_raw", false}, {"train/d_clipped", "d_clipped", false}, {"train/lr", "lr", false},
    {"train/clipped_share", "clipped_share", false}, {"train/discarded", "discarded", false},
    {"time/step_seconds", "seconds", false}, {"val/loss", "val_loss", true}, {"val/loss_ema", "val_loss_ema", true}, {"train/zero_share", "zero_share", true},
    {"train/perturbation_rel/attn_qkv", "rel_perturb_attn_qkv", true},
    {"train/perturbation_rel/mlp_in", "rel_perturb_mlp_in", true},
};
#define N_TAGS ((int)(sizeof tags / sizeof tags[0]))

static void check_first_run(void) {
    char cmd[4096], *out = NULL, names[4][512];
    train_cmd(cmd, sizeof cmd, 2, "");
    int rc = tu_run(cmd, &out);
    TU_CHECK(rc == 0, "train exits 0 (got %d):\n%s", rc, out);
    TU_CHECK(out && strstr(out, "TensorBoard: ") && strstr(out, "tensorboard --logdir"), "the event file is announced");
    // the closing summary: steps, images seen (batch 2), and each phase that ran
    const char *sum = out ? strstr(out, "Time: 2 steps (0 to 2) in ") : NULL;
    TU_CHECK(sum && strstr(sum, "4 images seen") && strstr(sum, "steps/s") && strstr(sum, "encode ") &&
                 strstr(sum, "steps ") && strstr(sum, "validation ") && strstr(sum, "previews ") &&
                 strstr(sum, "checkpoints ") && strstr(sum, "other"),
             "the closing summary is printed:\n%s", out);
    // the progress line: the step's time and where it went, and an ETA
    TU_CHECK(out && strstr(out, "training: 2/2") && strstr(out, "eta ") && strstr(out, "(step "), "progress line with timing");
    printf("%s", out ? out : "");
    free(out);

    int n = event_files(names, 4);
    TU_CHECK(n == 1, "one event file, got %d", n);
    if (n != 1) return;
    TU_CHECK(tensorboard_name(names[0]), "TensorBoard's file name pattern: %s", names[0]);
    tbr_file r;
    TU_CHECK(tbr_read(names[0], &r) && !r.bad && r.count > 1, "event file parses: %s", r.why);
    if (r.count > 1)
        TU_CHECK(!strcmp(r.ev[0].file_version, "brain.Event:2") && !strcmp(r.ev[0].writer, "sd-qzo") &&
                     r.ev[0].wall_time > 1.7e9,
                 "file_version event first");
    for (int k = 0; k < N_TAGS; k++) {
        double want[3];
        log_values(tags[k].key, want, 2);
        int steps_seen[3] = {0, 0, 0};
        for (int i = 0; i < r.count; i++) {
            const tbr_event *e = &r.ev[i];
            if (!e->has_simple || strcmp(e->tag, tags[k].tag)) continue;
            if (e->step < 0 || e->step > 2) { TU_CHECK(0, "%s at step %lld", tags[k].tag, (long long)e->step); continue; }
            steps_seen[e->step]++;
            TU_CHECK(e->simple_value == (float)want[e->step], "%s at step %lld: %.9g, log.jsonl %.9g", tags[k].tag,
                     (long long)e->step, (double)e->simple_value, want[e->step]);
        }
        // training tags at steps 1, 2; validation-time tags at 0 and 2
        bool ok = tags[k].at_val ? steps_seen[0] == 1 && steps_seen[1] == 0 && steps_seen[2] == 1
                                 : steps_seen[0] == 0 && steps_seen[1] == 1 && steps_seen[2] == 1;
        TU_CHECK(ok, "%s at steps 0/1/2: %d %d %d times", tags[k].tag, steps_seen[0], steps_seen[1], steps_seen[2]);
    }
    int images = 0, gpu = 0;
    for (int i = 0; i < r.count; i++) {
        const tbr_event *e = &r.ev[i];
        gpu += e->has_simple && !strcmp(e->tag, "gpu/memory_gib");
        if (!e->has_image) continue;
        images++;
        char path[256];
        snprintf(path, sizeof path, "%s/out/previews/step_%06lld.png", tmp, (long long)e->step);
        FILE *f = fopen(path, "rb");
        uint8_t *png = malloc(e->png_len + 1);
        bool same = f && png && fread(png, 1, e->png_len + 1, f) == e->png_len && !memcmp(png, e->png, e->png_len);
        if (f) fclose(f);
        free(png);
        TU_CHECK(same && !strcmp(e->tag, "previews") && e->colorspace == 3 && e->width > 0 && e->height > 0 &&
                     e->png[16] == 0 && e->png[19] == (uint8_t)e->width,
                 "image at step %lld is %s", (long long)e->step, path);
    }
    TU_CHECK(images == 2, "previews at steps 0 and 2: %d images", images);
    TU_CHECK(gpu == 0, "no GPU memory on the CPU");
    tbr_free(&r);
    char path[256];
    snprintf(path, sizeof path, "%s/out/report.html", tmp);
    char *html = e2e_read_all(path);
    TU_CHECK(html && strstr(html, "Time: 2 steps (0 to 2)") && strstr(html, "images seen"), "report.html has the timing");
    free(html);
}

static void check_resumes(void) {
    char cmd[4096], extra[512], *out = NULL, names[4][512];
    // keep the step-2 checkpoint: the third run resumes from it, as after a crash past a checkpoint
    snprintf(cmd, sizeof cmd, "cp %s/out/checkpoint.safetensors %s/ck2.safetensors", tmp, tmp);
    TU_CHECK(tu_run(cmd, NULL) == 0, "copy the checkpoint");
    snprintf(extra, sizeof extra, "--resume %s/out/checkpoint.safetensors", tmp);
    train_cmd(cmd, sizeof cmd, 4, extra);
    int rc = tu_run(cmd, &out);
    TU_CHECK(rc == 0, "resumed run exits 0 (got %d):\n%s", rc, out);
    TU_CHECK(out && strstr(out, "Time: 2 steps (2 to 4)"), "summary of the resumed run's own steps");
    free(out);
    int n = event_files(names, 4);
    TU_CHECK(n == 2, "a second event file, got %d", n);
    tbr_file r;
    if (n == 2 && tbr_read(names[1], &r)) {
        TU_CHECK(!r.bad && r.count > 2 && !strcmp(r.ev[0].file_version, "brain.Event:2") && r.ev[1].session_status == 1 &&
                     r.ev[1].step == 3,
                 "the resumed file: file_version, then SessionLog START at step 3");
        tbr_free(&r);
    }

    snprintf(extra, sizeof extra, "--resume %s/ck2.safetensors", tmp);
    train_cmd(cmd, sizeof cmd, 5, extra);
    rc = tu_run(cmd, &out);
    TU_CHECK(rc == 0, "run resumed from the step-2 copy exits 0 (got %d):\n%s", rc, out);
    free(out);
    n = event_files(names, 4);
    TU_CHECK(n == 3, "a third event file, got %d", n);
    for (int k = 0; k < N_TAGS; k++) {
        if (tags[k].at_val || !strcmp(tags[k].tag, "time/step_seconds")) continue;   // timing differs run to run
        double want[6];
        float got[6];
        int seen[6];
        log_values(tags[k].key, want, 5);
        merged(names, n, tags[k].tag, got, seen, 5);
        for (int s = 1; s <= 5; s++)
            TU_CHECK(seen[s] == 1 && got[s] == (float)want[s], "%s at step %d as TensorBoard merges: %d values, %.9g vs %.9g",
                     tags[k].tag, s, seen[s], (double)got[s], want[s]);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) return 1;
    static char bin_abs[PATH_MAX];
    bin = realpath(argv[1], bin_abs) ? bin_abs : argv[1];
    if (!mkdtemp(tmp)) return 1;
    e2e_make_dataset(tmp);
    check_first_run();
    check_resumes();
    if (!tu_failures) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
        tu_run(cmd, NULL);
    } else {
        fprintf(stderr, "left %s for inspection\n", tmp);
    }
    return tu_finish("train_tensorboard");
}
