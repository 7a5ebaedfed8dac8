// app/train_report.c: see app/train_report.h.
#include "app/train_report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"

static void html_escape(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

static int embed_png(FILE *out, const char *path) {
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    FILE *f = fopen(path, "rb");
    if (!f) return SQ_FAIL;
    fputs("data:image/png;base64,", out);
    unsigned char in[3];
    size_t n;
    while ((n = fread(in, 1, 3, f)) > 0) {
        unsigned v = (unsigned)in[0] << 16 | (n > 1 ? (unsigned)in[1] << 8 : 0) | (n > 2 ? in[2] : 0);
        fputc(b64[v >> 18 & 63], out);
        fputc(b64[v >> 12 & 63], out);
        fputc(n > 1 ? b64[v >> 6 & 63] : '=', out);
        fputc(n > 2 ? b64[v & 63] : '=', out);
    }
    fclose(f);
    return SQ_OK;
}

typedef double (*field_fn)(const sd_step_record *r);
static double f_loss(const sd_step_record *r) { return r->loss; }
static double f_val(const sd_step_record *r) { return r->val_loss; }
static double f_absd(const sd_step_record *r) { return fabs(r->d_raw); }
static double f_lr(const sd_step_record *r) { return r->lr; }

// One line chart as inline SVG: the series' finite values against the step, with
// an optional moving average (window `smooth`) drawn over the raw points.
static void chart(FILE *f, const char *title, const sd_train_log *log, field_fn get, int smooth, const char *colour) {
    const int W = 640, H = 220, L = 60, R = 10, T = 24, B = 30;
    double *xs = malloc((size_t)(log->count + 1) * sizeof *xs), *ys = malloc((size_t)(log->count + 1) * sizeof *ys);
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    int n = 0;
    for (int i = 0; xs && ys && i < log->count; i++) {
        double y = get(&log->rec[i]);
        if (!isfinite(y)) continue;
        xs[n] = (double)log->rec[i].step;
        ys[n] = y;
        xmin = fmin(xmin, xs[n]); xmax = fmax(xmax, xs[n]); ymin = fmin(ymin, y); ymax = fmax(ymax, y);
        n++;
    }
    fprintf(f, "<figure><svg width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\">\n", W, H, W, H);
    fprintf(f, "<text x=\"%d\" y=\"16\" font-size=\"13\" font-weight=\"bold\">", L);
    html_escape(f, title);
    fputs("</text>\n", f);
    if (n == 0) {
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\">no values yet</text></svg></figure>\n", L, H / 2);
        free(xs);
        free(ys);
        return;
    }
    if (xmax == xmin) xmax = xmin + 1;
    if (ymax == ymin) { ymax += fabs(ymax) * 0.05 + 1e-12; ymin -= fabs(ymin) * 0.05 + 1e-12; }
    double sx = (W - L - R) / (xmax - xmin), sy = (H - T - B) / (ymax - ymin);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#bbb\"/>\n", L, T, W - L - R, H - T - B);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\">%.4g</text>\n", L - 4, T + 10, ymax);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\">%.4g</text>\n", L - 4, H - B, ymin);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\">step %.0f</text>\n", L, H - 10, xmin);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\">step %.0f</text>\n", W - R, H - 10, xmax);
    fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-opacity=\"%s\" stroke-width=\"1.2\" points=\"", colour,
            smooth > 1 ? "0.35" : "1");
    for (int i = 0; i < n; i++) fprintf(f, "%.1f,%.1f ", L + (xs[i] - xmin) * sx, T + (ymax - ys[i]) * sy);
    fputs("\"/>\n", f);
    if (n <= 60)   // few values (validation): markers make single points visible
        for (int i = 0; i < n; i++)
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n", L + (xs[i] - xmin) * sx,
                    T + (ymax - ys[i]) * sy, colour);
    if (smooth > 1 && n > smooth) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", colour);
        double sum = 0;
        for (int i = 0; i < n; i++) {
            sum += ys[i];
            if (i >= smooth) sum -= ys[i - smooth];
            if (i >= smooth - 1) fprintf(f, "%.1f,%.1f ", L + (xs[i] - xmin) * sx, T + (ymax - sum / smooth) * sy);
        }
        fputs("\"/>\n", f);
    }
    fputs("</svg></figure>\n", f);
    free(xs);
    free(ys);
}

int sd_train_report_write(const char *path, const sd_report *r) {
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return sq_error_errno("cannot write %s", tmp);
    fputs("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>sd-qzo run: ", f);
    html_escape(f, r->title);
    fputs("</title>\n<style>body{font-family:system-ui,sans-serif;margin:24px;max-width:1400px}"
          "figure{display:inline-block;margin:6px}pre{background:#f4f4f4;padding:8px;font-size:12px;overflow:auto}"
          ".previews img{max-width:100%;image-rendering:pixelated;border:1px solid #ccc}"
          "</style></head><body>\n<h1>sd-qzo run: ", f);
    html_escape(f, r->title);
    fputs("</h1>\n", f);
    if (r->summary) {
        fputs("<p>", f);
        html_escape(f, r->summary);
        fputs("</p>\n", f);
    }
    const sd_train_log *log = r->log;
    int smooth = log->count >= 50 ? log->count / 25 : 1;
    fputs("<h2>Losses</h2>\n", f);
    chart(f, "training loss (mean of L+ and L-; bold: moving average)", log, f_loss, smooth, "#1f77b4");
    chart(f, "validation loss (fixed noise and timesteps)", log, f_val, 1, "#d62728");
    chart(f, "|projected gradient| (L+ - L-) / 2 eps", log, f_absd, smooth, "#2ca02c");
    chart(f, "learning rate", log, f_lr, 1, "#9467bd");
    fputs("<h2>Previews</h2>\n<div class=\"previews\">\n", f);
    if (r->n_previews == 0) fputs("<p>No previews were made (--sample-every 0, or none reached yet).</p>\n", f);
    for (int i = 0; i < r->n_previews; i++) {
        fprintf(f, "<h3>%s %lld</h3>\n<img alt=\"previews at step %lld\" src=\"",
                r->previews[i].step == 0 ? "before training, step" : "step", (long long)r->previews[i].step,
                (long long)r->previews[i].step);
        if (embed_png(f, r->previews[i].png_path) != SQ_OK) fputs("\" data-missing=\"", f);
        fputs("\">\n", f);
    }
    fputs("</div>\n<h2>Settings</h2>\n<pre>", f);
    html_escape(f, r->settings_json);
    fputs("</pre>\n</body></html>\n", f);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return sq_error_errno("cannot write %s", path);
    }
    return SQ_OK;
}
