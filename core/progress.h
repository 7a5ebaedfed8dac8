// core/progress.h: a progress bar for long work (training steps, encoding a dataset,
// quantising a checkpoint). On a TTY it redraws one line with rate and ETA; when
// stderr is not a TTY (logs, CI) it prints a plain line every ~10% or 30 s instead,
// so log files stay readable. The rate counts the work done since begin (a resumed
// run's earlier steps are not this process's), and a caller that knows better (a
// training run with periodic validation and previews) may give the ETA itself.
#ifndef SQ_PROGRESS_H
#define SQ_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char label[64];
    int64_t total;      // units of work expected; 0 when unknown
    int64_t done;
    int64_t done_start; // work already done at begin (not counted in the rate)
    double eta;         // seconds left as the caller estimates them; < 0: from the rate
    double t_start;     // seconds, monotonic clock
    double t_last_draw;
    int64_t last_plain_done;
    bool tty;
    FILE *out;
    char extra[192];    // caller's status text, e.g. "loss 0.1234"
} sq_progress;

void sq_progress_begin(sq_progress *p, const char *label, int64_t total);
// The same, with `done` units already done before this process started.
void sq_progress_begin_at(sq_progress *p, const char *label, int64_t total, int64_t done);
// The caller's estimate of the seconds left, shown from the next line on (< 0: back
// to done/elapsed).
void sq_progress_set_eta(sq_progress *p, double seconds);
// Quiet: progress bars draw nothing (the ranks other than 0 of a multi-process run).
void sq_progress_set_quiet(bool quiet);
// Sets work done so far (absolute) and an optional status text (NULL keeps it).
void sq_progress_update(sq_progress *p, int64_t done, const char *extra);
void sq_progress_end(sq_progress *p);

// Formats seconds as "1h02m03s" / "2m03s" / "3.2s" into buf.
void sq_format_duration(double seconds, char *buf, size_t size);
double sq_time_now(void);   // monotonic seconds

#ifdef __cplusplus
}
#endif

#endif
