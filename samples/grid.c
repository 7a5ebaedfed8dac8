// samples/grid.c: contact sheets (see grid.h).
#include "samples/grid.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

int sd_grid_default_cols(int n) {
    int c = 1;
    while (c * c < n) c++;
    return c;
}

int sd_grid(const uint8_t *const *images, int n, int w, int h, int cols, int gap, uint8_t background, uint8_t **out,
            int *out_w, int *out_h) {
    *out = NULL;
    if (n < 1 || w < 1 || h < 1 || gap < 0) return sq_errorf("grid: bad layout (%d images of %dx%d, gap %d)", n, w, h, gap);
    if (cols <= 0) cols = sd_grid_default_cols(n);
    if (cols > n) cols = n;
    int rows = (n + cols - 1) / cols;
    int64_t W = (int64_t)cols * w + (int64_t)(cols - 1) * gap, H = (int64_t)rows * h + (int64_t)(rows - 1) * gap;
    if (W > (1 << 20) || H > (1 << 20)) return sq_errorf("grid: %lldx%lld pixels is too large", (long long)W, (long long)H);
    uint8_t *g = malloc((size_t)(W * H * 3));
    if (!g) return sq_errorf("out of host memory");
    memset(g, background, (size_t)(W * H * 3));
    for (int i = 0; i < n; i++) {
        int64_t x0 = (int64_t)(i % cols) * (w + gap), y0 = (int64_t)(i / cols) * (h + gap);
        for (int y = 0; y < h; y++)
            memcpy(g + ((y0 + y) * W + x0) * 3, images[i] + (int64_t)y * w * 3, (size_t)w * 3);
    }
    *out = g;
    *out_w = (int)W;
    *out_h = (int)H;
    return SQ_OK;
}
