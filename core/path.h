// core/path.h: the questions every loader asks of a path (a folder to look inside,
// or a file to open) and mkdir -p for the folders sd-qzo writes, so each module
// does not keep its own copy.
#ifndef SQ_PATH_H
#define SQ_PATH_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

bool sq_is_dir(const char *path);    // an existing directory (symlinks followed)
bool sq_is_file(const char *path);   // an existing regular file (symlinks followed)
// mkdir -p: creates path and its missing parents (0755). SQ_FAIL with a message
// naming the folder that could not be made, or path when it exists as a non-folder.
int sq_mkdirs(const char *path);

#ifdef __cplusplus
}
#endif

#endif
