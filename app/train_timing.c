// app/train_timing.c: see app/train_timing.h.
#include "app/train_timing.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/progress.h"

void sd_train_timing_start(sd_train_timing *tm, int64_t first_step) {
    memset(tm, 0, sizeof *tm);
    tm->t_start = sq_time_now();
    tm->first_step = first_step;
}

void sd_train_timing_add(sd_train_timing *tm, sd_train_phase ph, double seconds) {
    tm->seconds[ph] += seconds;
    tm->count[ph]++;
}

int64_t sd_train_events_left(int64_t done, int64_t steps, int64_t every) {
    if (every <= 0 || done >= steps) return 0;
    int64_t n = steps / every - done / every;
    return n + (steps % every != 0);
}

static double mean(const sd_train_timing *tm, sd_train_phase ph) {
    return tm->count[ph] ? tm->seconds[ph] / (double)tm->count[ph] : 0;
}

double sd_train_timing_eta(const sd_train_timing *tm, const sd_train_schedule *s, int64_t done) {
    if (!tm->count[SD_PHASE_STEPS]) return NAN;
    int64_t left = s->steps > done ? s->steps - done : 0;
    return (double)left * mean(tm, SD_PHASE_STEPS) +
           (double)sd_train_events_left(done, s->steps, s->val_every) * mean(tm, SD_PHASE_VAL) +
           (double)sd_train_events_left(done, s->steps, s->sample_every) * mean(tm, SD_PHASE_PREVIEWS) +
           (double)sd_train_events_left(done, s->steps, s->save_every) * mean(tm, SD_PHASE_CHECKPOINTS);
}

void sd_train_timing_summary(const sd_train_timing *tm, int64_t done, char *buf, size_t size) {
    static const char *names[SD_PHASE_COUNT] = {"encode", "--lr auto", "steps", "validation", "previews", "checkpoints"};
    double total = sq_time_now() - tm->t_start, phases = 0;
    int64_t ran = tm->count[SD_PHASE_STEPS];
    char d[32], e[32];
    sq_format_duration(total, d, sizeof d);
    size_t n = (size_t)snprintf(buf, size, "Time: %lld step%s (%lld to %lld) in %s, %lld images seen, %.3g steps/s",
                                (long long)ran, ran == 1 ? "" : "s", (long long)tm->first_step, (long long)done, d, (long long)tm->images,
                                total > 0 ? (double)ran / total : 0.0);
    if (ran && tm->seconds[SD_PHASE_STEPS] > 0 && n < size)
        n += (size_t)snprintf(buf + n, size - n, " (%.3g in the steps alone)", (double)ran / tm->seconds[SD_PHASE_STEPS]);
    const char *sep = "; ";
    for (int p = 0; p < SD_PHASE_COUNT && n < size; p++) {
        if (!tm->count[p]) continue;
        phases += tm->seconds[p];
        sq_format_duration(tm->seconds[p], d, sizeof d);
        sq_format_duration(mean(tm, (sd_train_phase)p), e, sizeof e);
        double share = total > 0 ? 100.0 * tm->seconds[p] / total : 0.0;
        if (tm->count[p] == 1) n += (size_t)snprintf(buf + n, size - n, "%s%s %s (%.0f%%)", sep, names[p], d, share);
        else
            n += (size_t)snprintf(buf + n, size - n, "%s%s %s (%.0f%%, %lld x %s)", sep, names[p], d, share,
                                  (long long)tm->count[p], e);
        sep = ", ";
    }
    if (n < size) {
        double other = total - phases > 0 ? total - phases : 0;
        sq_format_duration(other, d, sizeof d);
        snprintf(buf + n, size - n, "%sother (loading, logs) %s (%.0f%%).", sep, d, total > 0 ? 100.0 * other / total : 0.0);
    }
}
