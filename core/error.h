// core/error.h: errors as values. A failing function returns SQ_FAIL (-1) after
// recording a one-line message; each caller on the way up may prefix context
// ("loading mmdit: model.safetensors: tensor 'x' offsets outside the file").
// main() prints sq_error_message() and exits non-zero. Libraries never exit().
//
// Internal invariants (a shape mismatch between two ops is a programming bug, not
// bad input) use SQ_CHECK, which aborts with file:line; user input never does.
#ifndef SQ_ERROR_H
#define SQ_ERROR_H

#include <stdio.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SQ_OK 0
#define SQ_FAIL (-1)

// Records a new message (replacing any previous one). Always returns SQ_FAIL so
// callers can write `return sq_errorf("...")`.
int sq_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// Prepends "context: " to the current message. Returns SQ_FAIL.
int sq_error_context(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// Like sq_errorf but appends strerror(errno) as the cause.
int sq_error_errno(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *sq_error_message(void);
void sq_error_clear(void);

// Abort on a broken internal invariant; prints the condition and where it was.
void sq_panic(const char *file, int line, const char *fmt, ...) __attribute__((noreturn, format(printf, 3, 4)));
#define SQ_CHECK(cond, ...) \
    do { if (!(cond)) sq_panic(__FILE__, __LINE__, __VA_ARGS__); } while (0)

// Checked allocations: out of host memory is reported, not a crash.
void *sq_malloc(size_t n);   // NULL + message on failure
void *sq_calloc(size_t n, size_t size);

#ifdef __cplusplus
}
#endif

#endif
