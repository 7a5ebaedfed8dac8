// core/atomic_file.h: a file written whole or not at all. The bytes go to
// "<path>.tmp.<pid>" beside the destination; commit fsyncs it and renames it over
// <path>, so a reader sees the old file or the new one, never a mix, and a crash or a
// failure (disk full, a killed process) leaves an existing <path> as it was. A
// leftover temp file of a killed process is removed by the next run (app/cmd_train.c).
// Used by the safetensors and GGUF writers.
#ifndef SQ_ATOMIC_FILE_H
#define SQ_ATOMIC_FILE_H

#include <stddef.h>
#include <sys/types.h>

typedef struct {
    char *path, *tmp;   // malloc'ed; tmp NULL once renamed
    int fd;             // -1 when closed
} sq_atomic_file;

// Creates the temp file. SQ_FAIL (one line naming it) leaves *f empty.
int sq_atomic_file_open(sq_atomic_file *f, const char *path);
// All n bytes (retrying short writes and EINTR); SQ_FAIL names the temp file.
int sq_atomic_file_write(sq_atomic_file *f, const void *data, size_t n);
// n bytes at offset pos of the temp file (an in-place patch of what was written).
int sq_atomic_file_pwrite(sq_atomic_file *f, const void *data, size_t n, off_t pos);
// fsync, close and rename over path; frees f either way (SQ_FAIL: temp removed).
int sq_atomic_file_commit(sq_atomic_file *f);
// Closes and removes the temp file and frees f; safe on an empty or committed f.
void sq_atomic_file_abort(sq_atomic_file *f);

#endif
