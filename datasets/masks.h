// datasets/masks.h: per-image loss masks (`train --masks DIR` or `--alpha-mask`).
// A mask weights the flow-matching loss of its image per latent pixel
// (qzo/flow_loss.h): white (255) trains fully, black (0) not at all, grey in
// between (value / 255).
//
// Sources:
//   - a mask folder: the mask of image <rel>/<stem>.<ext> (its path relative to the
//     images folder) is, first found of, DIR/<rel>/<stem>.<ext> (the same relative
//     name), then DIR/<rel>/<stem>.png, .jpg, .jpeg, .bmp, .webp (lower-case
//     extensions), so a.jpg may have the mask a.png. Any image the training images
//     may be (PNG, JPEG, BMP, WebP), read as grey: the luma of its RGB as stb_image
//     computes it, (77 R + 150 G + 29 B) >> 8 (ITU-R 601 weights, PIL's
//     convert("L") up to rounding; a grey image is its own value); a mask's own
//     alpha is ignored. Keep the mask folder outside the images folder (with
//     --recursive its files would be scanned as training images).
//     It must have its image's exact size. A missing mask is an error, or with
//     SD_MASK_MISSING_WARN the image trains unmasked (weight 1) with a warning.
//   - the image's alpha channel: images whose header says they have one (RGBA or
//     grey + alpha; stbi_info's channel count 2 or 4, which includes a PNG palette's
//     tRNS transparency but not a PNG colour-key tRNS; a WebP's alpha flag, an
//     animation's first frame composited on a transparent canvas). An image without
//     alpha trains unmasked (weight 1); one warning counts them and names the first.
//
// Geometry: the mask goes through exactly the image's transform (datasets/transform.h:
// the same resize filters, crop window and flip), then is area-averaged onto the
// latent grid (each latent pixel = the mean of its factor x factor block; the bucket
// sizes are multiples of 64, so blocks never straddle an edge). This matches kohya
// sd-scripts' interpolate(mode="area") on a mask at image resolution.
#ifndef SD_MASKS_H
#define SD_MASKS_H

#include <stdbool.h>

#include "datasets/image_folder.h"
#include "datasets/transform.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { SD_MASKS_NONE = 0, SD_MASKS_DIR, SD_MASKS_ALPHA } sd_mask_mode;
typedef enum {
    SD_MASK_MISSING_FAIL = 0,   // an image without a mask file is an error (default)
    SD_MASK_MISSING_WARN,       // ... trains unmasked, with a warning naming it
} sd_missing_mask_mode;

typedef struct {
    sd_mask_mode mode;
    const char *dir;                  // SD_MASKS_DIR: the mask folder
    sd_missing_mask_mode missing;
} sd_mask_opts;

// Where one image's weights come from.
typedef enum {
    SD_MASK_SRC_NONE = 0,   // weight 1 everywhere (no masks, a missing mask with warn, no alpha)
    SD_MASK_SRC_FILE,       // a grey mask file
    SD_MASK_SRC_ALPHA,      // the image's alpha channel
} sd_mask_source;

// The mask file of image rel_path in dir (rules above) into *out (malloc'ed), or
// *out = NULL when there is none. SQ_FAIL only when out of memory.
int sd_mask_find(const char *dir, const char *rel_path, char **out);

// For each of the n entries: its source and, for SD_MASK_SRC_FILE, the mask's path
// (paths[i] malloc'ed, else NULL). Checks every mask's header now, so a broken
// dataset fails before any model loads: SQ_FAIL with one line naming the mask and
// its image (missing in fail mode, undecodable, truncated, another size). On failure
// nothing is left allocated.
int sd_masks_resolve(const sd_mask_opts *o, const sd_image_entry *entries, int n, sd_mask_source *src, char **paths);

// The mask of one item at latent resolution: decodes `path` (the mask file, or the
// image itself for SD_MASK_SRC_ALPHA), checks its size against plan->src_w x src_h,
// applies the plan, and area-averages by `factor` into out ((out_h/factor) x
// (out_w/factor) floats in [0, 1], row-major). SQ_FAIL naming the file.
int sd_mask_load(sd_mask_source src, const char *path, const sd_crop_plan *plan, int factor, float *out);

// out (h/f x w/f) = mean of each f x f block of in (h x w); w and h multiples of f.
void sd_mask_area_downsample(const float *in, int w, int h, int f, float *out);

#ifdef __cplusplus
}
#endif

#endif
