// kernels/profile.c: see kernels/profile.h.
#include "kernels/profile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/progress.h"
#include "kernels/backend.h"

#define MAX_OPS 64

typedef struct {
    const char *op;   // string literals from the dispatcher: compared by content
    long calls;
    double seconds;
} entry;

static entry table[MAX_OPS];
static int n_entries;
static int state = -1;   // -1 unknown, 0 off, 1 on

static void report(void) {
    double total = 0;
    for (int i = 0; i < n_entries; i++) total += table[i].seconds;
    // sort by time, largest first (a handful of entries: insertion sort)
    for (int i = 1; i < n_entries; i++)
        for (int j = i; j > 0 && table[j].seconds > table[j - 1].seconds; j--) {
            entry e = table[j];
            table[j] = table[j - 1];
            table[j - 1] = e;
        }
    fprintf(stderr, "SQ_PROFILE: GPU time by op (synchronised around each call)\n%-22s %10s %12s %7s\n", "op", "calls",
            "total ms", "share");
    for (int i = 0; i < n_entries; i++)
        fprintf(stderr, "%-22s %10ld %12.2f %6.1f%%\n", table[i].op, table[i].calls, table[i].seconds * 1e3,
                total > 0 ? 100.0 * table[i].seconds / total : 0.0);
}

bool sq_profile_enabled(void) {
    if (state < 0) {
        const char *e = getenv("SQ_PROFILE");
        state = e && *e && strcmp(e, "0") != 0;
        if (state) atexit(report);
    }
    return state == 1;
}

double sq_profile_begin(void) {
    if (!sq_profile_enabled()) return 0;
    sq_device_synchronize(SQ_CUDA);
    return sq_time_now();
}

void sq_profile_end(const char *op, double t0) {
    if (state != 1) return;
    sq_device_synchronize(SQ_CUDA);
    double dt = sq_time_now() - t0;
    for (int i = 0; i < n_entries; i++)
        if (!strcmp(table[i].op, op)) {
            table[i].calls++;
            table[i].seconds += dt;
            return;
        }
    if (n_entries < MAX_OPS) table[n_entries++] = (entry){op, 1, dt};
}
