// datasets/transform.h: image file -> float CHW tensor in [-1, 1], the input the
// VAE encoder expects. Steps: decode (stb_image for PNG/JPEG/BMP, libwebp for WebP
// through datasets/webp.h; forced to 3 channels: grey is replicated, alpha is
// dropped; an animated WebP gives its first frame), resize so the image covers the target with its
// aspect ratio kept, crop to the target (centre or a given offset), optional
// horizontal flip, then v * 2 - 1 for v = pixel / 255 (float throughout).
//
// Resize (stb_image_resize v1, libstb-dev's version; float pixels in gamma space as
// PIL/torchvision do, not linear light): an axis that shrinks uses the box filter,
// which stb implements as exact area coverage (cv2.INTER_AREA; for an integer
// factor k each output pixel is the mean of a k x k block); an axis that grows uses
// Catmull-Rom (bicubic). Edges clamp. The result is clamped to [0, 1] because
// Catmull-Rom overshoots at edges.
//
// Resized size for a W x H source and a w x h target: s = max(w / W, h / H); the
// side that binds is exactly its target, the other is round(side * s) (never less
// than its target). The crop then takes a w x h window at (crop_x, crop_y) of the
// resized image: centre = floor((resized - target) / 2); random = a uniform integer
// offset in [0, resized - target]. The flip mirrors the cropped window.
#ifndef SD_TRANSFORM_H
#define SD_TRANSFORM_H

#include <stdbool.h>
#include <stdint.h>

#include "core/tensor.h"
#include "datasets/image_size.h"   // the size limit, checked before decoding

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { SD_CROP_CENTER = 0, SD_CROP_RANDOM } sd_crop_mode;

// Everything needed to produce one training image, computable from the header
// dimensions alone (before decoding, so a cache lookup can be done first).
typedef struct {
    int src_w, src_h;          // source pixels
    int resized_w, resized_h;  // after the aspect-preserving resize
    int crop_x, crop_y;        // top-left of the window in the resized image
    int out_w, out_h;          // target (bucket) size
    bool flip;                 // mirror horizontally after cropping
} sd_crop_plan;

// Fills plan. u_x, u_y in [0, 1) choose the random crop offsets (ignored for
// SD_CROP_CENTER): offset = floor(u * (resized - target + 1)).
void sd_crop_plan_make(sd_crop_plan *plan, int src_w, int src_h, int out_w, int out_h, sd_crop_mode mode,
                       float u_x, float u_y, bool flip);

// stb_image decodes a truncated PNG or JPEG partially (the missing part comes out
// grey) and reports success, so the file's end is checked by hand: a PNG must hold
// its IEND chunk, a JPEG end with the EOI marker FF D9 (trailing 00/FF/CR/LF padding
// allowed), a BMP be as long as its header says. SQ_FAIL: "PATH: truncated PNG ...;
// cannot be decoded". A PNG's chunks must also all lie inside the file, as stb_image
// allocates a chunk's declared length before reading it. Other formats pass
// (datasets/webp.c checks a WebP's length).
int sd_image_check_complete(const char *path);


// Decodes an image to 8-bit RGB, HWC, rows top to bottom. *rgb is malloc'ed (free
// it). The format is told by the file's first bytes (a WebP header goes to libwebp,
// anything else to stb_image), not by its extension. SQ_FAIL with a message naming
// the file and the decoder's reason (or the truncation, or a size over the limits
// above, read from the header before decoding).
int sd_image_decode_rgb(const char *path, uint8_t **rgb, int *w, int *h);

// Resizes/crops/flips an 8-bit RGB HWC image of plan->src_w x plan->src_h into
// out_chw, 3 * out_h * out_w floats in [-1, 1] (channel planes R, G, B).
int sd_transform_rgb(const uint8_t *rgb, const sd_crop_plan *plan, float *out_chw);

// The same geometry (resize with the same filters, crop, flip, clamp) for one 8-bit
// channel, e.g. a loss mask: grey[i * stride] is pixel i of plan->src_w x plan->src_h
// (stride 1 for a grey image, 4 for the alpha byte of RGBA). out_hw: out_h * out_w
// floats in [0, 1] (v = pixel / 255, not mapped to [-1, 1]).
int sd_transform_grey(const uint8_t *grey, int stride, const sd_crop_plan *plan, float *out_hw);

// decode + check the size matches the plan + transform, into a new host f32 tensor
// {3, out_h, out_w} (owned: sq_tensor_free it).
int sd_transform_load(const char *path, const sd_crop_plan *plan, sq_tensor *out);

#ifdef __cplusplus
}
#endif

#endif
