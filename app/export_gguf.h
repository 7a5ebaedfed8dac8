// app/export_gguf.h: the GGUF writer of `sd-qzo export` (internal to app/export*.c;
// the layout and the Q4_0 rule are in app/export_gguf.c's head comment).
#ifndef SD_EXPORT_GGUF_H
#define SD_EXPORT_GGUF_H

#include <stdbool.h>
#include <stdint.h>

#include "app/export_plan.h"
#include "core/gguf.h"

typedef struct {
    int tensors, q4_tensors;
    int64_t codes, scales, bytes;
    int64_t subnormal;          // non-zero scales that became fp16 subnormals (fewer bits)
    double max_abs_err, max_rel_err, sum_rel_err;   // fp32 scale vs its fp16 d
} sd_gguf_export_stats;

// Writes the plan to path (atomically). dtype: SQ_F16 (-1 too), SQ_BF16 or SQ_F32
// for the tensors that are not Q4_0. extra: key/values added after general.*.
int sd_export_gguf(const sd_export_plan *p, const char *path, int dtype, const sq_gguf_kv *extra, int n_extra, bool quiet,
                   sd_gguf_export_stats *stats);

#endif
