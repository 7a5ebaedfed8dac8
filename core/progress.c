// core/progress.c: TTY progress bar with rate and ETA, plain lines otherwise.
#include "core/progress.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

double sq_time_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void sq_format_duration(double s, char *buf, size_t size) {
    if (s < 0) s = 0;
    if (s < 60) { snprintf(buf, size, "%.1fs", s); return; }
    long t = (long)(s + 0.5);
    if (t < 3600) snprintf(buf, size, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, size, "%ldh%02ldm%02lds", t / 3600, (t / 60) % 60, t % 60);
}

static bool g_quiet;

void sq_progress_set_quiet(bool quiet) { g_quiet = quiet; }

void sq_progress_begin(sq_progress *p, const char *label, int64_t total) { sq_progress_begin_at(p, label, total, 0); }

void sq_progress_begin_at(sq_progress *p, const char *label, int64_t total, int64_t done) {
    memset(p, 0, sizeof *p);
    snprintf(p->label, sizeof p->label, "%s", label);
    p->total = total;
    p->done = p->done_start = p->last_plain_done = done;
    p->eta = -1;
    p->out = stderr;
    p->tty = isatty(fileno(stderr));
    p->t_start = sq_time_now();
}

static void draw(sq_progress *p, bool final) {
    if (g_quiet) return;
    double now = sq_time_now();
    double elapsed = now - p->t_start;
    double rate = elapsed > 0 ? (double)(p->done - p->done_start) / elapsed : 0;
    char el[32], eta[32] = "?";
    sq_format_duration(elapsed, el, sizeof el);
    if (p->eta >= 0) sq_format_duration(p->eta, eta, sizeof eta);
    else if (p->total > 0 && rate > 0) sq_format_duration((double)(p->total - p->done) / rate, eta, sizeof eta);
    char rate_s[32];
    if (rate >= 1 || rate == 0) snprintf(rate_s, sizeof rate_s, "%.2f/s", rate);
    else snprintf(rate_s, sizeof rate_s, "%.2fs/it", 1.0 / rate);
    if (p->tty) {
        char bar[31];
        int width = 30, fill = p->total > 0 ? (int)(width * p->done / p->total) : 0;
        if (fill > width) fill = width;
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
        bar[width] = 0;
        fprintf(p->out, "\r%s [%s] %lld/%lld %s elapsed %s eta %s %s\033[K", p->label, bar,
                (long long)p->done, (long long)p->total, rate_s, el, final ? "0s" : eta, p->extra);
        if (final) fputc('\n', p->out);
    } else {
        fprintf(p->out, "%s: %lld/%lld %s elapsed %s eta %s %s\n", p->label, (long long)p->done,
                (long long)p->total, rate_s, el, final ? "0s" : eta, p->extra);
    }
    fflush(p->out);
    p->t_last_draw = now;
    p->last_plain_done = p->done;
}

void sq_progress_update(sq_progress *p, int64_t done, const char *extra) {
    p->done = done;
    if (extra) snprintf(p->extra, sizeof p->extra, "%s", extra);
    double now = sq_time_now();
    if (p->tty) {
        if (now - p->t_last_draw >= 0.1) draw(p, false);
    } else {
        int64_t step = p->total > 0 ? (p->total + 9) / 10 : 1;
        if (done - p->last_plain_done >= step || now - p->t_last_draw >= 30) draw(p, false);
    }
}

void sq_progress_set_eta(sq_progress *p, double seconds) { p->eta = seconds; }

void sq_progress_end(sq_progress *p) { draw(p, true); }
