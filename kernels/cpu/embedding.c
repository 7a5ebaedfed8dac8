// kernels/cpu/embedding.c: the fp32 reference of sq_embedding, a row gather
// (T5's / CLIP's token embedding lookup). ids were range-checked by kernels/ops.c.
#include <string.h>

#include "kernels/cpu/cpu_ops.h"

void cpu_embedding(float *out, const float *table, const int32_t *ids, int64_t N, int64_t C) {
    for (int64_t i = 0; i < N; i++) memcpy(out + i * C, table + (int64_t)ids[i] * C, (size_t)C * sizeof(float));
}
