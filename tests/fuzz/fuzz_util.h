// tests/fuzz/fuzz_util.h: shared by the libFuzzer targets of tests/fuzz/. sd-qzo's
// parsers read files by path, so each input is written to a file in a private
// temporary folder (in /dev/shm when it exists) and parsed from there. Only
// LLVMFuzzerTestOneInput is defined by a target; tests/fuzz/replay_main.c gives the
// same targets a main() that replays files (the regression and seed inputs) in the
// ordinary and sanitizer builds, where libFuzzer is not needed.
#ifndef SQ_FUZZ_UTIL_H
#define SQ_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"

static char fz_dir[256];

static void fz_cleanup(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fz_dir);  // the folder is ours, made by mkdtemp
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", fz_dir);
}

// The private folder, made on first use (and quietens the log: errors are the
// expected outcome of most inputs).
static inline const char *fz_root(void) {
    if (!fz_dir[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(fz_dir, sizeof fz_dir, "%s/sdqzo_fuzz_XXXXXX", base);
        if (!mkdtemp(fz_dir)) { perror("mkdtemp"); abort(); }
        atexit(fz_cleanup);
        sq_log_set_level(SQ_LOG_ERROR);
    }
    return fz_dir;
}

// root/rel, in a static buffer of 4 (enough for one call's arguments).
static inline const char *fz_path(const char *rel) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", fz_root(), rel);
    return buf[k];
}

static inline void fz_mkdir(const char *rel) { mkdir(fz_path(rel), 0777); }

// Writes n bytes to root/rel; returns its path.
static inline const char *fz_write(const char *rel, const void *data, size_t n) {
    const char *p = fz_path(rel);
    FILE *f = fopen(p, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) { perror(p); abort(); }
    return p;
}

// Splits data at the first n_parts-1 NUL bytes: parts[i], lens[i] (the last part
// takes the rest; missing parts are empty).
static inline void fz_split(const uint8_t *data, size_t n, int n_parts, const uint8_t **parts, size_t *lens) {
    size_t at = 0;
    for (int i = 0; i < n_parts; i++) {
        parts[i] = data + at;
        const uint8_t *z = i + 1 < n_parts && at < n ? memchr(data + at, 0, n - at) : NULL;
        size_t end = z ? (size_t)(z - data) : n;
        lens[i] = end - at;
        at = z ? end + 1 : n;
    }
}

// A NUL-terminated copy (malloc'ed) of n bytes.
static inline char *fz_strndup(const uint8_t *d, size_t n) {
    char *s = malloc(n + 1);
    if (!s) abort();
    memcpy(s, d, n);
    s[n] = 0;
    return s;
}

#endif
