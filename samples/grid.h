// samples/grid.h: a contact sheet of same-sized RGB8 images (previews of several
// prompts or seeds in one PNG): rows x cols cells, `gap` background pixels between
// neighbouring cells, none around the edge, filled row by row; empty cells stay
// background.
#ifndef SD_GRID_H
#define SD_GRID_H

#include <stdint.h>

// images: n pointers to (h,w,3) bytes. cols <= 0 picks ceil(sqrt(n)); rows =
// ceil(n / cols). *out (malloc'ed, (out_h,out_w,3)) with
// out_w = cols·w + (cols-1)·gap, out_h = rows·h + (rows-1)·gap.
int sd_grid(const uint8_t *const *images, int n, int w, int h, int cols, int gap, uint8_t background, uint8_t **out,
            int *out_w, int *out_h);
// The column count sd_grid picks for cols <= 0.
int sd_grid_default_cols(int n);

#endif
