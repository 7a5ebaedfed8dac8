// kernels/cpu/layout.c: one strided 4-D copy that concat, slice, permute and
// transpose are all expressed with (kernels/ops.c computes the strides).
#include "kernels/cpu/cpu_ops.h"

void cpu_strided_copy(float *dst, const float *src, const int64_t shape[4], const int64_t st[4]) {
    int64_t outer = shape[0] * shape[1];
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < outer; o++) {
        int64_t i0 = o / shape[1], i1 = o % shape[1];
        float *d = dst + o * shape[2] * shape[3];
        const float *s = src + i0 * st[0] + i1 * st[1];
        for (int64_t i2 = 0; i2 < shape[2]; i2++) {
            const float *s2 = s + i2 * st[2];
            if (st[3] == 1)
                for (int64_t i3 = 0; i3 < shape[3]; i3++) d[i3] = s2[i3];
            else
                for (int64_t i3 = 0; i3 < shape[3]; i3++) d[i3] = s2[i3 * st[3]];
            d += shape[3];
        }
    }
}
