// tests/unit/test_report.c: app/train_report.c and app/train_lr_auto.c's file, on a
// small synthetic run (no model, no GPU):
//   - --lr auto's result survives sd_lr_auto_write + sd_lr_auto_read (a stopped
//     candidate's +inf as null and back, the chosen rate's index), and a missing or
//     malformed lr_auto.json is an error;
//   - report.html has the diagnostics charts (relative perturbation per layer type
//     with one line and one legend entry per type, scales held at 0, clipped
//     queries), counts and marks the discarded step, and with a calibration shows
//     one curve per candidate rate plus a table of the rates as options print them;
//   - unmeasured (NaN) diagnostics never reach the page as numbers, and without a
//     calibration there is no calibration section.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/options.h"
#include "app/train_lr_auto.h"
#include "app/train_report.h"
#include "core/config.h"
#include "core/error.h"
#include "tests/test_util.h"

static int count(const char *s, const char *end, const char *needle) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)) && (!end || p < end); p += strlen(needle)) n++;
    return n;
}

// The <figure> whose title is `title` (NULL when absent); *end: its </figure>.
static const char *figure(const char *html, const char *title, const char **end) {
    const char *p = strstr(html, title);
    *end = p ? strstr(p, "</figure>") : NULL;
    return *end ? p : NULL;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) { fputs(text, f); fclose(f); }
}

int main(void) {
    char dir[] = "/tmp/sq_test_report_XXXXXX";
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    char path[1400];

    // a calibration: 5 rates, the middle one chosen, the largest stopped after the first quarter
    sd_lr_auto_result a;
    memset(&a, 0, sizeof a);
    for (int p = 0; p <= SD_LR_AUTO_POINTS; p++) a.at_step[p] = 8 * p;
    for (int c = 0; c < SD_LR_AUTO_CANDIDATES; c++) {
        a.lr[c] = 1e-2f * powf(10.0f, 0.5f * (float)(c - SD_LR_AUTO_CANDIDATES / 2));
        for (int p = 0; p <= SD_LR_AUTO_POINTS; p++) a.val[c][p] = 0.5 - 0.01 * p * (c == 2 ? 2 : 1) + 0.001 * c;
    }
    for (int p = 2; p <= SD_LR_AUTO_POINTS; p++) a.val[4][p] = INFINITY;
    a.best = 2;
    a.seconds = 12.5;
    TU_CHECK(sd_lr_auto_write(dir, &a) == SQ_OK, "sd_lr_auto_write: %s", sq_error_message());
    sd_lr_auto_result b;
    TU_CHECK(sd_lr_auto_read(dir, &b) == SQ_OK, "sd_lr_auto_read: %s", sq_error_message());
    TU_CHECK(b.best == a.best, "chosen index read back %d, written %d", b.best, a.best);
    for (int c = 0; c < SD_LR_AUTO_CANDIDATES; c++) {
        TU_CHECK(b.lr[c] == a.lr[c], "candidate %d: lr %.9g read back as %.9g", c, (double)a.lr[c], (double)b.lr[c]);
        for (int p = 0; p <= SD_LR_AUTO_POINTS; p++)
            TU_CHECK(b.val[c][p] == a.val[c][p] || (isinf(a.val[c][p]) && isinf(b.val[c][p])),
                     "candidate %d point %d: %.9g read back as %.9g", c, p, a.val[c][p], b.val[c][p]);
    }
    for (int p = 0; p <= SD_LR_AUTO_POINTS; p++) TU_CHECK(b.at_step[p] == a.at_step[p], "at_step[%d]", p);
    TU_CHECK(fabs(b.seconds - a.seconds) < 1e-3, "seconds %g", b.seconds);

    // a missing or malformed file is an error, not a half-read result
    char other[64];
    snprintf(other, sizeof other, "%s/none", dir);
    TU_CHECK(sd_lr_auto_read(other, &b) == SQ_FAIL && b.best == -1, "missing lr_auto.json is an error");
    sq_error_clear();
    if (mkdir(other, 0700) == 0) {
        snprintf(path, sizeof path, "%s/lr_auto.json", other);
        write_text(path, "{\"chosen_lr\": 0.5, \"at_step\": [0, 1, 2, 3, 4], \"candidates\": []}\n");
        TU_CHECK(sd_lr_auto_read(other, &b) == SQ_FAIL && strstr(sq_error_message(), "lr_auto.json"),
                 "malformed lr_auto.json is an error naming the file");
        sq_error_clear();
        unlink(path);
        rmdir(other);
    }

    // a log of 40 steps: validation and diagnostics every 10 (NaN between), step 15 discarded,
    // adaLN unmeasured at step 0
    sd_step_record rec[41];
    sd_train_log log = {.rec = rec, .count = 0, .cap = 41};
    for (int s = 0; s <= 40; s++) {
        sd_step_record r = sd_step_record_empty(s);
        if (s > 0) {
            r.loss = r.loss_plus = r.loss_minus = 0.5 - 0.002 * s;
            r.d_raw = r.d_clipped = 0.1;
            r.lr = 1e-2;
            r.seconds = 0.5;
            r.gpu_mem_gib = 0;
            r.discarded = s == 15;
            if (s == 15) r.loss = 1e6;   // the spike: marked, not drawn
            r.clipped_share = 0.01 * s / 40.0;
        }
        if (s % 10 == 0) {
            r.val_loss = 0.5 - 0.001 * s;
            r.zero_share = 0.001 * s;
            for (int k = 0; k < 5; k++) r.rel_perturb[k] = 0.01 * (k + 1) + 1e-4 * s;
            if (s == 0) r.rel_perturb[4] = NAN;
        }
        rec[log.count++] = r;
    }

    snprintf(path, sizeof path, "%s/report.html", dir);
    sd_lr_auto_result read_back;
    TU_CHECK(sd_lr_auto_read(dir, &read_back) == SQ_OK, "read back for the report");
    sd_report rep = {.title = "synthetic <run>", .settings_json = "{\"lr\": \"auto\"}", .summary = "a test", .log = &log,
                     .lr_auto = &read_back};
    TU_CHECK(sd_train_report_write(path, &rep) == SQ_OK, "report: %s", sq_error_message());
    char *html = NULL;
    TU_CHECK(sq_read_file(path, &html, NULL) == SQ_OK, "report.html readable");
    if (html) {
        const char *titles[] = {"relative perturbation per layer type", "scales held at 0 (share)",
                                "clipped queries (share)", "training loss", "validation loss",
                                "Learning-rate calibration", "lr auto: validation loss per candidate rate"};
        for (size_t i = 0; i < sizeof titles / sizeof titles[0]; i++)
            TU_CHECK(strstr(html, titles[i]) != NULL, "report has \"%s\"", titles[i]);
        TU_CHECK(strstr(html, "synthetic &lt;run&gt;") && !strstr(html, "<run>"), "title escaped");

        // relative perturbation: one line and one legend entry per layer type
        const char *end, *fig = figure(html, "relative perturbation per layer type", &end);
        TU_CHECK(fig != NULL, "relative perturbation figure");
        if (fig) {
            TU_CHECK(count(fig, end, "<polyline") == 5, "5 perturbation series, got %d", count(fig, end, "<polyline"));
            const char *kinds[] = {"attention q/k/v", "attention out", "MLP in", "MLP out", "adaLN"};
            for (int k = 0; k < 5; k++) TU_CHECK(strstr(fig, kinds[k]) && strstr(fig, kinds[k]) < end, "legend %s", kinds[k]);
        }
        fig = figure(html, "scales held at 0 (share)", &end);
        TU_CHECK(fig && count(fig, end, "<polyline") == 1 && count(fig, end, "<circle") == 5,
                 "scales-at-0 chart: one line through the 5 measured points");
        fig = figure(html, "clipped queries (share)", &end);
        TU_CHECK(fig && count(fig, end, "<polyline") == 1, "clipped-queries chart has a line");

        // the discarded step: counted, one red tick on the training loss, its spike not drawn
        TU_CHECK(strstr(html, "Discarded steps") && strstr(html, "threw them away): 1"), "one discarded step counted");
        fig = figure(html, "training loss", &end);
        TU_CHECK(fig && count(fig, end, "class=\"discarded\"") == 1, "one discarded tick on the training loss");
        TU_CHECK(fig && !strstr(fig, "1e+06"), "the discarded spike does not set the loss axis");

        // calibration: a curve per candidate (the chosen one bold), the rates as options print them
        fig = figure(html, "lr auto: validation loss per candidate rate", &end);
        TU_CHECK(fig && count(fig, end, "<polyline") == SD_LR_AUTO_CANDIDATES, "one polyline per candidate, got %d",
                 fig ? count(fig, end, "<polyline") : -1);
        TU_CHECK(fig && count(fig, end, "stroke-width=\"3.0\" points=") == 1, "exactly the chosen curve bold");
        for (int c = 0; c < SD_LR_AUTO_CANDIDATES; c++) {
            char lr[32], cell[48];
            sq_format_float(a.lr[c], lr, sizeof lr);
            snprintf(cell, sizeof cell, "<td>%s</td>", lr);
            TU_CHECK(strstr(html, cell) != NULL, "table row for lr %s", lr);
            snprintf(cell, sizeof cell, "lr %s", lr);
            TU_CHECK(fig && strstr(fig, cell) && strstr(fig, cell) < end, "legend entry %s", cell);
        }
        char chosen[64], lr[32];
        sq_format_float(a.lr[2], lr, sizeof lr);
        snprintf(chosen, sizeof chosen, "<tr class=\"chosen\"><td>%s</td>", lr);
        TU_CHECK(strstr(html, chosen) != NULL, "the chosen rate's row is marked");
        TU_CHECK(strstr(html, "stopped (repeated spikes)") != NULL, "the stopped candidate says so");
        TU_CHECK(!strstr(html, "nan") && !strstr(html, "inf<") && !strstr(html, ">inf"), "no NaN/inf printed");
        TU_CHECK(!strstr(html, "data:image") && strstr(html, "</html>"), "complete page, no previews");
        free(html);
    }

    // without a calibration: no section; the temporary file of the atomic write is gone
    rep.lr_auto = NULL;
    TU_CHECK(sd_train_report_write(path, &rep) == SQ_OK, "report without lr auto");
    html = NULL;
    if (sq_read_file(path, &html, NULL) == SQ_OK) {
        TU_CHECK(!strstr(html, "Learning-rate calibration"), "no calibration section without a calibration");
        TU_CHECK(strstr(html, "relative perturbation per layer type") != NULL, "diagnostics still shown");
        free(html);
    }
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "ls %s | grep -c tmp", dir);
    FILE *pp = popen(cmd, "r");
    int tmps = -1;
    if (pp) { if (fscanf(pp, "%d", &tmps) != 1) tmps = -1; pclose(pp); }
    TU_CHECK(tmps == 0, "no temporary files left (%d)", tmps);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return tu_finish("report");
}
