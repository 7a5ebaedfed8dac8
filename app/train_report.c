// app/train_report.c: see app/train_report.h.
#include "app/train_report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/options.h"
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

// ---- charts ----

// One line of a chart: n finite points, x ascending.
typedef struct {
    const char *name;     // legend entry (NULL: no legend entry)
    const char *colour;
    double *x, *y;
    int n;
    int smooth;           // > 1: also a bold moving average over this many points, the raw line faint
    double width;         // stroke width of the line (0: 1.2)
} chart_series;

typedef double (*field_fn)(const sd_step_record *r, int k);
static double f_loss(const sd_step_record *r, int k) { (void)k; return r->discarded == 1 ? NAN : r->loss; }
static double f_val(const sd_step_record *r, int k) { (void)k; return r->val_loss; }
static double f_val_ema(const sd_step_record *r, int k) { (void)k; return r->val_loss_ema; }
static double f_absd(const sd_step_record *r, int k) { (void)k; return r->discarded == 1 ? NAN : fabs(r->d_raw); }
static double f_lr(const sd_step_record *r, int k) { (void)k; return r->lr; }
static double f_zero(const sd_step_record *r, int k) { (void)k; return r->zero_share; }
static double f_clipped(const sd_step_record *r, int k) { (void)k; return r->clipped_share; }
static double f_rel(const sd_step_record *r, int k) { return r->rel_perturb[k]; }

// The finite values of one field against the step (s->x, s->y malloc'ed; n = 0 and
// NULL arrays when none).
static void series_from_log(chart_series *s, const sd_train_log *log, field_fn get, int k) {
    s->n = 0;
    s->x = malloc((size_t)(log->count + 1) * sizeof *s->x);
    s->y = malloc((size_t)(log->count + 1) * sizeof *s->y);
    for (int i = 0; s->x && s->y && i < log->count; i++) {
        double y = get(&log->rec[i], k);
        if (!isfinite(y)) continue;
        s->x[s->n] = (double)log->rec[i].step;
        s->y[s->n++] = y;
    }
}

static void series_free(chart_series *s, int n) {
    for (int i = 0; i < n; i++) {
        free(s[i].x);
        free(s[i].y);
        s[i].x = s[i].y = NULL;
    }
}

static int legend_width(const char *name) { return 26 + (int)(6.5 * (double)strlen(name)); }

// A line chart as inline SVG: every series' points against the step on shared
// axes, a legend below when more than one series is named, and optional red ticks
// at the bottom of the plot at the steps in `ticks` (e.g. discarded steps).
static void chart(FILE *f, const char *title, const chart_series *s, int ns, const double *ticks, int n_ticks) {
    const int W = 640, L = 60, R = 10, T = 24;
    // the legend: entries of 26 px + ~6.5 px a character, wrapped into rows of 16 px
    int legend = 0, rows = 1, lx = L;
    for (int j = 0; j < ns; j++) {
        if (!s[j].name) continue;
        int w = legend_width(s[j].name);
        if (legend++ && lx + w > W - R) { rows++; lx = L; }
        lx += w;
    }
    const int B = legend > 1 ? 32 + 16 * rows : 30, H = 190 + B;
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    int n = 0;
    for (int j = 0; j < ns; j++)
        for (int i = 0; i < s[j].n; i++) {
            xmin = fmin(xmin, s[j].x[i]); xmax = fmax(xmax, s[j].x[i]);
            ymin = fmin(ymin, s[j].y[i]); ymax = fmax(ymax, s[j].y[i]);
            n++;
        }
    for (int i = 0; n > 0 && i < n_ticks; i++) { xmin = fmin(xmin, ticks[i]); xmax = fmax(xmax, ticks[i]); }
    fprintf(f, "<figure><svg width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\">\n", W, H, W, H);
    fprintf(f, "<text x=\"%d\" y=\"16\" font-size=\"13\" font-weight=\"bold\">", L);
    html_escape(f, title);
    fputs("</text>\n", f);
    if (n == 0) {
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\">no values yet</text></svg></figure>\n", L, H / 2);
        return;
    }
    if (xmax == xmin) xmax = xmin + 1;
    if (ymax == ymin) { ymax += fabs(ymax) * 0.05 + 1e-12; ymin -= fabs(ymin) * 0.05 + 1e-12; }
    const int PB = H - B;   // bottom of the plot area
    double sx = (W - L - R) / (xmax - xmin), sy = (PB - T) / (ymax - ymin);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#bbb\"/>\n", L, T, W - L - R, PB - T);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\">%.4g</text>\n", L - 4, T + 10, ymax);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\">%.4g</text>\n", L - 4, PB, ymin);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\">step %.0f</text>\n", L, PB + 20, xmin);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\">step %.0f</text>\n", W - R, PB + 20, xmax);
    for (int i = 0; i < n_ticks; i++)
        fprintf(f, "<line class=\"discarded\" x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#d62728\" stroke-width=\"1.5\"/>\n",
                L + (ticks[i] - xmin) * sx, PB, L + (ticks[i] - xmin) * sx, PB - 10);
    for (int j = 0; j < ns; j++) {
        const chart_series *c = &s[j];
        if (c->n == 0) continue;
        double width = c->width > 0 ? c->width : 1.2;
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-opacity=\"%s\" stroke-width=\"%.1f\" points=\"", c->colour,
                c->smooth > 1 ? "0.35" : "1", width);
        for (int i = 0; i < c->n; i++) fprintf(f, "%.1f,%.1f ", L + (c->x[i] - xmin) * sx, T + (ymax - c->y[i]) * sy);
        fputs("\"/>\n", f);
        if (c->n <= 60)   // few values (validation): markers make single points visible
            for (int i = 0; i < c->n; i++)
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"%s\"/>\n", L + (c->x[i] - xmin) * sx,
                        T + (ymax - c->y[i]) * sy, width > 2 ? 3.5 : 2.5, c->colour);
        if (c->smooth > 1 && c->n > c->smooth) {
            fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", c->colour);
            double sum = 0;
            for (int i = 0; i < c->n; i++) {
                sum += c->y[i];
                if (i >= c->smooth) sum -= c->y[i - c->smooth];
                if (i >= c->smooth - 1)
                    fprintf(f, "%.1f,%.1f ", L + (c->x[i] - xmin) * sx, T + (ymax - sum / c->smooth) * sy);
            }
            fputs("\"/>\n", f);
        }
    }
    if (legend > 1) {
        int y = PB + 36, first = 1;
        lx = L;
        for (int j = 0; j < ns; j++) {
            if (!s[j].name) continue;
            int w = legend_width(s[j].name);
            if (!first && lx + w > W - R) { y += 16; lx = L; }
            first = 0;
            fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"%.1f\"/>", lx, y - 4,
                    lx + 16, y - 4, s[j].colour, s[j].width > 0 ? s[j].width : 1.2);
            fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\"%s>", lx + 20, y, s[j].width > 2 ? " font-weight=\"bold\"" : "");
            html_escape(f, s[j].name);
            fputs("</text>\n", f);
            lx += w;
        }
    }
    fputs("</svg></figure>\n", f);
}

// A chart of one field of the log.
static void log_chart(FILE *f, const char *title, const sd_train_log *log, field_fn get, int smooth, const char *colour,
                      const double *ticks, int n_ticks) {
    chart_series s = {.colour = colour, .smooth = smooth};
    series_from_log(&s, log, get, 0);
    chart(f, title, &s, 1, ticks, n_ticks);
    series_free(&s, 1);
}

static const char *const palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"};

// --lr auto: the validation loss of every candidate rate along the calibration
// (the chosen one bold) and a table of the candidates.
static void lr_auto_section(FILE *f, const sd_lr_auto_result *a) {
    chart_series s[SD_LR_AUTO_CANDIDATES];
    char names[SD_LR_AUTO_CANDIDATES][48], lr[32];
    double xs[SD_LR_AUTO_CANDIDATES][SD_LR_AUTO_POINTS + 1], ys[SD_LR_AUTO_CANDIDATES][SD_LR_AUTO_POINTS + 1];
    for (int c = 0; c < SD_LR_AUTO_CANDIDATES; c++) {
        sq_format_float(a->lr[c], lr, sizeof lr);
        snprintf(names[c], sizeof names[c], "lr %s%s", lr, c == a->best ? " (chosen)" : "");
        s[c] = (chart_series){.name = names[c], .colour = palette[c % 7], .x = xs[c], .y = ys[c],
                              .width = c == a->best ? 3.0 : 1.2};
        for (int p = 0; p <= SD_LR_AUTO_POINTS; p++)
            if (isfinite(a->val[c][p])) {
                xs[c][s[c].n] = (double)a->at_step[p];
                ys[c][s[c].n++] = a->val[c][p];
            }
    }
    fputs("<h2>Learning-rate calibration (--lr auto)</h2>\n", f);
    fprintf(f, "<p>%d candidate rates, each run for the same %lld steps from the same start and scored by the "
               "validation loss at the end (%.0f s in all).</p>\n",
            SD_LR_AUTO_CANDIDATES, (long long)a->at_step[SD_LR_AUTO_POINTS], a->seconds);
    chart(f, "lr auto: validation loss per candidate rate (bold: chosen)", s, SD_LR_AUTO_CANDIDATES, NULL, 0);
    fputs("<table class=\"lr-auto\"><tr><th>lr</th><th>validation loss before</th><th>final validation loss</th>"
          "<th>chosen</th></tr>\n", f);
    for (int c = 0; c < SD_LR_AUTO_CANDIDATES; c++) {
        sq_format_float(a->lr[c], lr, sizeof lr);
        double v = a->val[c][SD_LR_AUTO_POINTS];
        fprintf(f, "<tr%s><td>%s</td><td>%.6f</td>", c == a->best ? " class=\"chosen\"" : "", lr, a->val[c][0]);
        if (isfinite(v)) fprintf(f, "<td>%.6f</td>", v);
        else fputs("<td>stopped (repeated spikes)</td>", f);
        fprintf(f, "<td>%s</td></tr>\n", c == a->best ? "&#10003; chosen" : "");
    }
    fputs("</table>\n", f);
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
          "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
          "tr.chosen{font-weight:bold;background:#eef6ee}"
          "</style></head><body>\n<h1>sd-qzo run: ", f);
    html_escape(f, r->title);
    fputs("</h1>\n", f);
    if (r->summary) {
        fputs("<p>", f);
        html_escape(f, r->summary);
        fputs("</p>\n", f);
    }
    if (r->training) {
        fputs("<p class=\"training\">", f);
        html_escape(f, r->training);
        fputs("</p>\n", f);
    }
    if (r->timing) {
        fputs("<p>", f);
        html_escape(f, r->timing);
        fputs("</p>\n", f);
    }
    const sd_train_log *log = r->log;
    int smooth = log->count >= 50 ? log->count / 25 : 1;
    // the steps the optimiser threw away: red ticks on the step charts, and a count
    double *discarded = malloc((size_t)(log->count + 1) * sizeof *discarded);
    int n_discarded = 0;
    for (int i = 0; discarded && i < log->count; i++)
        if (log->rec[i].discarded == 1) discarded[n_discarded++] = (double)log->rec[i].step;
    fprintf(f, "<p class=\"discarded\">Discarded steps (non-finite loss or a spike; the optimiser threw them away): %d",
            n_discarded);
    if (n_discarded) fputs(" (red ticks on the step charts; their losses are not drawn)", f);
    fputs(".</p>\n", f);
    fputs("<h2>Losses</h2>\n", f);
    log_chart(f, "training loss (mean of L+ and L-; bold: moving average)", log, f_loss, smooth, "#1f77b4", discarded,
              n_discarded);
    {   // with --ema, the EMA of the scales beside the scales themselves
        chart_series s[2] = {{.name = "trained scales", .colour = "#d62728"}, {.name = "EMA of the scales", .colour = "#1f77b4"}};
        series_from_log(&s[0], log, f_val, 0);
        series_from_log(&s[1], log, f_val_ema, 0);
        if (s[1].n == 0) s[0].name = NULL;
        chart(f, "validation loss (fixed noise and timesteps)", s, s[1].n ? 2 : 1, NULL, 0);
        series_free(s, 2);
    }
    log_chart(f, "|projected gradient| (L+ - L-) / 2 eps", log, f_absd, smooth, "#2ca02c", discarded, n_discarded);
    log_chart(f, "learning rate", log, f_lr, 1, "#9467bd", NULL, 0);
    fputs("<h2>Diagnostics</h2>\n", f);
    {
        static const char *const kinds[5] = {"attention q/k/v", "attention out", "MLP in", "MLP out", "adaLN"};
        chart_series s[5];
        for (int k = 0; k < 5; k++) {
            s[k] = (chart_series){.name = kinds[k], .colour = palette[k]};
            series_from_log(&s[k], log, f_rel, k);
        }
        chart(f, "relative perturbation per layer type (rms perturbation / rms scale)", s, 5, NULL, 0);
        series_free(s, 5);
    }
    log_chart(f, "scales held at 0 (share)", log, f_zero, 1, "#8c564b", NULL, 0);
    log_chart(f, "clipped queries (share)", log, f_clipped, 1, "#e377c2", NULL, 0);
    free(discarded);
    if (r->lr_auto) lr_auto_section(f, r->lr_auto);
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
