// core/path.c: see core/path.h.
#include "core/path.h"

#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>

#include "core/error.h"

bool sq_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool sq_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int sq_mkdirs(const char *path) {
    char buf[4096];
    if ((size_t)snprintf(buf, sizeof buf, "%s", path) >= sizeof buf) return sq_errorf("%s: path too long", path);
    for (char *c = buf + 1;; c++) {
        if (*c != '/' && *c) continue;
        char keep = *c;
        *c = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return sq_error_errno("%s: cannot create the folder", buf);
        *c = keep;
        if (!keep) break;
    }
    if (!sq_is_dir(path)) return sq_errorf("%s: exists and is not a folder", path);
    return SQ_OK;
}
