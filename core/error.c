// core/error.c: the per-thread error message behind core/error.h.
#include "core/error.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>

#define SQ_ERROR_MAX 1024

static _Thread_local char g_message[SQ_ERROR_MAX];

int sq_errorf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_message, sizeof g_message, fmt, ap);
    va_end(ap);
    return SQ_FAIL;
}

int sq_error_errno(const char *fmt, ...) {
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(g_message, sizeof g_message, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof g_message)
        snprintf(g_message + n, sizeof g_message - (size_t)n, ": %s", strerror(saved));
    return SQ_FAIL;
}

int sq_error_context(const char *fmt, ...) {
    char prefix[SQ_ERROR_MAX];
    char old[SQ_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, g_message, sizeof old);
    // Built piecewise so an over-long chain is cut at the end, not rejected.
    size_t n = strlen(prefix);
    if (n > sizeof g_message - 1) n = sizeof g_message - 1;
    memcpy(g_message, prefix, n);
    if (old[0] && n + 2 < sizeof g_message) {
        memcpy(g_message + n, ": ", 2);
        n += 2;
        size_t m = strlen(old);
        if (m > sizeof g_message - 1 - n) m = sizeof g_message - 1 - n;
        memcpy(g_message + n, old, m);
        n += m;
    }
    g_message[n] = 0;
    return SQ_FAIL;
}

const char *sq_error_message(void) { return g_message[0] ? g_message : "unknown error"; }

void sq_error_clear(void) { g_message[0] = 0; }

void sq_panic(const char *file, int line, const char *fmt, ...) {
    fprintf(stderr, "sd-qzo: internal error at %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

void *sq_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) sq_errorf("out of host memory allocating %zu bytes", n);
    return p;
}

void *sq_calloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) sq_errorf("out of host memory allocating %zu x %zu bytes", n, size);
    return p;
}
