// tests/e2e/test_train.c: `sd-qzo train` as a user runs it, on the CPU, with the
// tiny SD3 pipeline of tests/fixtures/pipeline and a small generated dataset:
//   1. a run writes run.json, the cache, log.jsonl/csv with the validation loss
//      (before training and every N steps), previews, checkpoint and report.html
//      (with the diagnostics charts);
//   2. a run stopped by SIGINT saves a checkpoint; --resume finishes it, and the
//      final scales and every logged loss equal an uninterrupted run's bit for bit;
//   3. a second run into the same OUT without --resume is refused, and so is a
//      --resume with different settings; the cache is reused (nothing re-encoded);
//   4. --lr auto's calibration is in report.html, also after a --resume;
//   5. the built-in demo (demo/train.toml: demo/model and its data) starts, trains a
//      few steps and logs its validation loss (README command 1 in miniature).
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "samples/png.h"
#include "tests/e2e/train_fixture.h"
#include "tests/test_util.h"

static const char *bin;
static char tmp[64] = "/tmp/sq-e2e-train-XXXXXX";

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static void train_cmd(char *cmd, size_t size, const char *out, int steps, const char *extra) {
    char flags[3000];
    snprintf(flags, sizeof flags,
             "--val-images %s/val --sample-prompts %s/prompts.txt --cache-dir %s/cache --save-every 3 --sample-every 4 "
             "--val-every 2 --sample-steps 2 --lr 2e-3 --eps 2e-3 --caption-dropout 0.2 %s",
             tmp, tmp, tmp, extra);
    e2e_train_cmd(cmd, size, bin, tmp, out, steps, flags);
}

static void check_full_run(void) {
    char cmd[4096], path[256], *out = NULL;
    train_cmd(cmd, sizeof cmd, "run1", 8, "");
    int rc = tu_run(cmd, &out);
    TU_CHECK(rc == 0, "train exits 0 (got %d):\n%s", rc, out);
    printf("%s", out);
    free(out);
    const char *files[] = {"run.json", "checkpoint.safetensors", "log.jsonl", "log.csv", "report.html",
                           "previews/step_000000.png", "previews/step_000004.png", "previews/step_000008.png"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/run1/%s", tmp, files[i]);
        TU_CHECK(exists(path), "run writes %s", files[i]);
    }
    snprintf(path, sizeof path, "%s/run1/log.jsonl", tmp);
    TU_CHECK(e2e_count_lines(path) == 9, "log.jsonl: step 0 (validation only) + 8 steps, got %d lines", e2e_count_lines(path));
    char *log = e2e_read_all(path);
    TU_CHECK(log && strstr(log, "{\"step\": 0,") && strstr(log, "\"val_loss\": null"), "step 0 and unmeasured values as null");
    int vals = 0;
    for (char *p = log; p && (p = strstr(p, "\"val_loss\": ")); p += 12) vals += p[12] != 'n';
    TU_CHECK(vals == 5, "validation loss at steps 0, 2, 4, 6, 8: %d values", vals);
    free(log);
    snprintf(path, sizeof path, "%s/run1/report.html", tmp);
    char *html = e2e_read_all(path);
    TU_CHECK(html && strstr(html, "data:image/png;base64,") && strstr(html, "<svg") && strstr(html, "Validation loss"),
             "report.html embeds previews and charts");
    TU_CHECK(html && strstr(html, "relative perturbation per layer type") && strstr(html, "scales held at 0 (share)") &&
                 strstr(html, "clipped queries (share)") && strstr(html, "Discarded steps"),
             "report.html shows the diagnostics");
    TU_CHECK(html && !strstr(html, "Learning-rate calibration"), "no calibration section without --lr auto");
    free(html);
}

// --lr auto: the report shows the calibration, and still does after a --resume (read
// back from OUT/lr_auto.json: the calibration ran in the earlier process).
static void check_lr_auto_report(void) {
    char cmd[4096], path[256], *out = NULL;
    train_cmd(cmd, sizeof cmd, "run_lr", 2, "--sample-every 0 --lr auto --lr-auto-steps 4");
    int rc = tu_run(cmd, &out);
    TU_CHECK(rc == 0, "--lr auto run exits 0 (got %d):\n%s", rc, out);
    free(out);
    snprintf(path, sizeof path, "%s/run_lr/report.html", tmp);
    for (int pass = 0; pass < 2; pass++) {
        char *html = e2e_read_all(path);
        const char *fig = html ? strstr(html, "lr auto: validation loss per candidate rate") : NULL;
        const char *end = fig ? strstr(fig, "</figure>") : NULL;
        int lines = 0;
        for (const char *p = fig; end && (p = strstr(p, "<polyline")) && p < end; p++) lines++;
        TU_CHECK(end && lines == 5 && strstr(html, "<tr class=\"chosen\">"),
                 "%s: report.html shows the 5 candidate curves (%d) and the chosen rate", pass ? "resumed" : "first run", lines);
        free(html);
        if (pass) break;
        unlink(path);   // the resumed run (already at its last step) writes it again
        train_cmd(cmd, sizeof cmd, "run_lr", 2, "--sample-every 0 --lr auto --lr-auto-steps 4 --resume");
        snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), " %s/run_lr/checkpoint.safetensors", tmp);
        rc = tu_run(cmd, &out);
        TU_CHECK(rc == 0, "resumed --lr auto run exits 0 (got %d):\n%s", rc, out);
        free(out);
    }
}

static void check_interrupt_resume(void) {
    char cmd[4096], path[256], *out = NULL;
    // reference: 8 uninterrupted steps in run1 (above). Now stop a run with SIGINT.
    train_cmd(cmd, sizeof cmd, "run2", 8, "--sample-every 0");
    pid_t pid = fork();
    if (pid == 0) {
        char full[4200];
        snprintf(full, sizeof full, "exec %s > %s/run2.out 2>&1", cmd, tmp);
        execl("/bin/sh", "sh", "-c", full, (char *)NULL);
        _exit(127);
    }
    snprintf(path, sizeof path, "%s/run2/log.jsonl", tmp);
    int st = 0;
    bool exited = false;
    for (int i = 0; i < 6000 && e2e_count_lines(path) < 3; i++) {   // steps 0..2 logged
        if (waitpid(pid, &st, WNOHANG) == pid) { exited = true; break; }
        usleep(10000);
    }
    if (!exited) {
        kill(pid, SIGINT);
        waitpid(pid, &st, 0);
    }
    char op[256];
    snprintf(op, sizeof op, "%s/run2.out", tmp);
    out = e2e_read_all(op);
    int lines = e2e_count_lines(path);
    bool finished = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (!finished)
        TU_CHECK(out && strstr(out, "interrupted: checkpoint saved at step"), "SIGINT saves and says how to resume:\n%s", out);
    printf("interrupted after %d log lines (%s)\n", lines, finished ? "the run had already finished" : "stopped");
    free(out);
    train_cmd(cmd, sizeof cmd, "run2", 8, "--sample-every 0 --resume");
    char full[4400];
    snprintf(full, sizeof full, "%s %s/run2/checkpoint.safetensors", cmd, tmp);
    int rc = tu_run(full, &out);
    TU_CHECK(rc == 0, "resume exits 0:\n%s", out);
    TU_CHECK(out && strstr(out, "0 latents and 0 caption embeddings to compute"),
             "the resumed run reuses the cache:\n%s", out);
    free(out);

    // final scales equal bit for bit
    char a[256], b[256];
    snprintf(a, sizeof a, "%s/run1/checkpoint.safetensors", tmp);
    snprintf(b, sizeof b, "%s/run2/checkpoint.safetensors", tmp);
    sq_safetensors *sa, *sb;
    if (sq_st_open(&sa, a) == SQ_OK && sq_st_open(&sb, b) == SQ_OK) {
        int n = sq_st_count(sa), same = 0;
        TU_CHECK(n > 0 && n == sq_st_count(sb), "same tensors");
        for (int i = 0; i < n && n == sq_st_count(sb); i++) {
            const sq_st_entry *x = sq_st_at(sa, i), *y = sq_st_at(sb, i);
            same += x->nbytes == y->nbytes && !memcmp(x->data, y->data, x->nbytes);
        }
        TU_CHECK(same == n, "resumed scales equal the uninterrupted run's: %d of %d tensors", same, n);
        TU_CHECK(!strcmp(sq_st_metadata(sa, "sd_qzo.loss_history"), sq_st_metadata(sb, "sd_qzo.loss_history")),
                 "same loss history");
        sq_st_close(sa);
        sq_st_close(sb);
    } else {
        TU_CHECK(false, "open checkpoints: %s", sq_error_message());
    }
    // the logs agree on every loss (timing columns differ)
    snprintf(a, sizeof a, "%s/run1/log.csv", tmp);
    snprintf(b, sizeof b, "%s/run2/log.csv", tmp);
    char *ca = e2e_read_all(a), *cb = e2e_read_all(b);
    int rows = 0, equal = 0;
    if (!ca || !cb) { TU_CHECK(false, "read %s and %s", a, b); free(ca); free(cb); return; }
    char *sa_line, *sb_line, *pa = NULL, *pb = NULL;
    for (sa_line = strtok_r(ca, "\n", &pa), sb_line = strtok_r(cb, "\n", &pb); sa_line && sb_line;
         sa_line = strtok_r(NULL, "\n", &pa), sb_line = strtok_r(NULL, "\n", &pb)) {
        rows++;
        // step,loss,loss_plus,loss_minus,d_raw,d_clipped,lr: the first 7 columns
        char *ea = sa_line, *eb = sb_line;
        for (int c = 0; c < 7 && ea && eb; c++) { ea = strchr(ea + 1, ','); eb = strchr(eb + 1, ','); }
        equal += ea && eb && ea - sa_line == eb - sb_line && !strncmp(sa_line, sb_line, (size_t)(ea - sa_line));
    }
    TU_CHECK(rows == 10 && equal == rows, "log.csv losses identical after resume: %d of %d rows", equal, rows);
    free(ca);
    free(cb);
}

static void check_refusals(void) {
    char cmd[4096], *out = NULL;
    train_cmd(cmd, sizeof cmd, "run1", 8, "");
    int rc = tu_run(cmd, &out);
    TU_CHECK(rc != 0 && out && strstr(out, "already holds a training run"), "a second run into OUT is refused:\n%s", out);
    free(out);
    char full[4400];
    train_cmd(cmd, sizeof cmd, "run1", 8, "--lr 0.5 --resume");
    snprintf(full, sizeof full, "%s %s/run1/checkpoint.safetensors", cmd, tmp);
    rc = tu_run(full, &out);
    TU_CHECK(rc != 0 && out && strstr(out, "settings differ"), "--resume with other settings is refused:\n%s", out);
    free(out);
    train_cmd(cmd, sizeof cmd, "run3", 8, "--resolution 96");
    rc = tu_run(cmd, &out);
    TU_CHECK(rc != 0 && out && strstr(out, "--resolution must be a positive multiple of 64"),
             "a resolution that is not a multiple of 64 is refused:\n%s", out);
    free(out);
    snprintf(full, sizeof full, "'%s' train --model /nonexistent --images %s/images --output %s/run4", bin, tmp, tmp);
    rc = tu_run(full, &out);
    TU_CHECK(rc != 0 && out && strstr(out, "/nonexistent"), "a missing model is named:\n%s", out);
    free(out);
}

static void check_demo(const char *source_root) {
    char cmd[4096], path[256], *out = NULL;
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' train --config demo/train.toml --output %s/demo --cache-dir %s/demo-cache "
             "--steps 4 --val-every 2 --sample-every 0 --threads 1", source_root, bin, tmp, tmp);
    int rc = tu_run(cmd, &out);
    TU_CHECK(rc == 0 && out && strstr(out, "Validation loss"), "the demo config trains:\n%s", out);
    free(out);
    snprintf(path, sizeof path, "%s/demo/log.jsonl", tmp);
    TU_CHECK(e2e_count_lines(path) == 5, "demo log: step 0 + 4 steps, got %d lines", e2e_count_lines(path));
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: test_train SD_QZO_BINARY SOURCE_ROOT\n"); return 1; }
    static char bin_abs[PATH_MAX];
    bin = realpath(argv[1], bin_abs) ? bin_abs : argv[1];   // the demo check runs from the source root
    if (!mkdtemp(tmp)) return 1;
    e2e_make_dataset(tmp);
    check_full_run();
    check_lr_auto_report();
    check_interrupt_resume();
    check_refusals();
    check_demo(argv[2]);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (!tu_failures && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    return tu_finish("e2e train");
}
