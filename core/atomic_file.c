// core/atomic_file.c: see core/atomic_file.h.
#include "core/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"

int sq_atomic_file_open(sq_atomic_file *f, const char *path) {
    f->fd = -1;
    f->path = strdup(path);
    f->tmp = malloc(strlen(path) + 32);
    if (!f->path || !f->tmp) {
        sq_atomic_file_abort(f);
        return sq_errorf("out of host memory");
    }
    sprintf(f->tmp, "%s.tmp.%ld", path, (long)getpid());
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (f->fd < 0) {
        int rc = sq_error_errno("%s: cannot create", f->tmp);
        free(f->tmp);
        f->tmp = NULL;   // not created: nothing to remove
        sq_atomic_file_abort(f);
        return rc;
    }
    return SQ_OK;
}

int sq_atomic_file_write(sq_atomic_file *f, const void *data, size_t n) {
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(f->fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return sq_error_errno("%s: write failed", f->tmp);
        }
        p += w;
        n -= (size_t)w;
    }
    return SQ_OK;
}

int sq_atomic_file_pwrite(sq_atomic_file *f, const void *data, size_t n, off_t pos) {
    if (pwrite(f->fd, data, n, pos) != (ssize_t)n) return sq_error_errno("%s: cannot write", f->tmp);
    return SQ_OK;
}

int sq_atomic_file_commit(sq_atomic_file *f) {
    int rc = SQ_OK;
    if (fsync(f->fd) != 0) rc = sq_error_errno("%s: fsync failed", f->tmp);
    int fd = f->fd;
    f->fd = -1;
    if (close(fd) != 0 && rc == SQ_OK) rc = sq_error_errno("%s: close failed", f->tmp);
    if (rc == SQ_OK && rename(f->tmp, f->path) != 0) rc = sq_error_errno("%s: cannot rename into place", f->path);
    if (rc == SQ_OK) {
        free(f->tmp);
        f->tmp = NULL;   // renamed: nothing to remove
    }
    sq_atomic_file_abort(f);
    return rc;
}

void sq_atomic_file_abort(sq_atomic_file *f) {
    if (f->fd >= 0) close(f->fd);
    if (f->tmp) unlink(f->tmp);
    free(f->path);
    free(f->tmp);
    f->path = f->tmp = NULL;
    f->fd = -1;
}
