// tests/unit/test_train_timing.c: app/train_timing (the ETA and the closing summary
// of a training run) and core/progress's caller-given ETA and resumed start:
//   1. sd_train_events_left counts the periodic passes (every N steps and at the
//      last step) against a brute-force count over many (done, steps, every);
//   2. the ETA is each phase's remaining count times its mean so far, checked
//      against the sum written out by hand;
//   3. the summary names the steps, images, rate and each phase that ran, and not
//      the ones that did not;
//   4. a progress bar begun at a resumed step rates only this process's work, and
//      shows the ETA it is given.
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "app/train_timing.h"
#include "core/progress.h"
#include "tests/test_util.h"

static int64_t brute_left(int64_t done, int64_t steps, int64_t every) {
    int64_t n = 0;
    for (int64_t s = done + 1; s <= steps; s++) n += every > 0 && (s % every == 0 || s == steps);
    return n;
}

static void check_events_left(void) {
    int bad = 0;
    for (int64_t steps = 1; steps <= 40; steps++)
        for (int64_t every = 0; every <= 12; every++)
            for (int64_t done = 0; done <= steps; done++)
                if (sd_train_events_left(done, steps, every) != brute_left(done, steps, every)) {
                    if (!bad++)
                        fprintf(stderr, "done %lld steps %lld every %lld: %lld, want %lld\n", (long long)done,
                                (long long)steps, (long long)every, (long long)sd_train_events_left(done, steps, every),
                                (long long)brute_left(done, steps, every));
                }
    TU_CHECK(bad == 0, "events left: %d mismatches", bad);
    TU_CHECK(sd_train_events_left(250, 1000, 250) == 3 && sd_train_events_left(0, 1000, 0) == 0 &&
                 sd_train_events_left(999, 1001, 500) == 2,
             "events left, by hand");
}

static void check_eta(void) {
    sd_train_timing tm;
    sd_train_timing_start(&tm, 10);
    sd_train_schedule s = {.steps = 100, .val_every = 20, .sample_every = 50, .save_every = 25};
    TU_CHECK(isnan(sd_train_timing_eta(&tm, &s, 10)), "no ETA before the first step");
    sd_train_timing_add(&tm, SD_PHASE_STEPS, 1.0);
    sd_train_timing_add(&tm, SD_PHASE_STEPS, 3.0);   // mean 2 s
    sd_train_timing_add(&tm, SD_PHASE_VAL, 5.0);
    sd_train_timing_add(&tm, SD_PHASE_PREVIEWS, 30.0);
    sd_train_timing_add(&tm, SD_PHASE_PREVIEWS, 10.0);   // mean 20 s
    // after step 12: 88 steps, validations at 20..100 (5), previews at 50, 100 (2),
    // checkpoints at 25..100 (4, not measured yet: 0 s)
    double want = 88 * 2.0 + 5 * 5.0 + 2 * 20.0 + 4 * 0.0;
    TU_CHECK(fabs(sd_train_timing_eta(&tm, &s, 12) - want) < 1e-9, "ETA %.6g, want %.6g", sd_train_timing_eta(&tm, &s, 12),
             want);
    sd_train_timing_add(&tm, SD_PHASE_CHECKPOINTS, 0.5);
    want += 4 * 0.5;
    TU_CHECK(fabs(sd_train_timing_eta(&tm, &s, 12) - want) < 1e-9, "ETA with checkpoints");
    TU_CHECK(sd_train_timing_eta(&tm, &s, 100) == 0, "nothing left at the end");

    tm.images = 24;
    tm.t_start -= 100;   // started 100 s ago
    char buf[768];
    sd_train_timing_summary(&tm, 12, buf, sizeof buf);
    TU_CHECK(strstr(buf, "Time: 2 steps (10 to 12) in ") && strstr(buf, "24 images seen") && strstr(buf, "steps/s") &&
                 strstr(buf, "(0.5 in the steps alone)") && strstr(buf, "steps 4.0s (4%, 2 x 2.0s)") &&
                 strstr(buf, "validation 5.0s") && strstr(buf, "previews 40.0s (40%, 2 x 20.0s)") && strstr(buf, "validation 5.0s (5%)") &&
                 strstr(buf, "checkpoints 0.5s") && strstr(buf, "other (loading, logs) 50.5s (5") && !strstr(buf, "encode") &&
                 !strstr(buf, "--lr auto"),
             "summary: %s", buf);
    char tiny[16];
    sd_train_timing_summary(&tm, 12, tiny, sizeof tiny);
    TU_CHECK(strlen(tiny) == 15, "a short buffer is filled, not overrun");
}

static void check_progress(void) {
    sq_progress p;
    sq_progress_begin_at(&p, "training", 100, 40);
    FILE *f = tmpfile();
    p.out = f;
    p.tty = false;
    p.t_start -= 10;   // 10 s ago
    sq_progress_update(&p, 50, "x");   // 10 steps in 10 s: 1/s (not 5/s), 50 left: 50 s
    sq_progress_set_eta(&p, 4000);
    sq_progress_update(&p, 60, "y");
    char text[512] = "";
    rewind(f);
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
    TU_CHECK(strstr(text, "training: 50/100 1.00/s") || strstr(text, "training: 50/100 1.00s/it"),
             "the rate counts this process's steps only: %s", text);
    TU_CHECK(strstr(text, "eta 50.0s x\n"), "ETA from the rate: %s", text);
    TU_CHECK(strstr(text, "training: 60/100") && strstr(text, "eta 1h06m40s y\n"), "the ETA given: %s", text);
}

int main(void) {
    check_events_left();
    check_eta();
    check_progress();
    return tu_finish("train_timing");
}
