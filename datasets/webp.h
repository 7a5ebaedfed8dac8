// datasets/webp.h: WebP images through libwebp (Debian libwebp-dev: libwebp and
// libwebpdemux), behind a narrow C API so no other file sees libwebp's types.
// Lossy (VP8), lossless (VP8L), with or without alpha, and animated files. Alpha is
// dropped, as stb_image does for an RGBA PNG asked for 3 channels: the colour
// values stored under transparent pixels are kept as they are, not blended onto a
// background. An animated WebP gives its first frame, composited onto the canvas as
// libwebp's WebPAnimDecoder (and so Pillow) renders it: the frame rectangle on a
// transparent-black canvas of the file's canvas size.
#ifndef SD_WEBP_H
#define SD_WEBP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// True when data[0..n) starts with a WebP file header ("RIFF" size "WEBP").
bool sd_webp_sniff(const uint8_t *data, size_t n);

typedef struct {
    int width, height;   // pixels (for an animation: the canvas)
    bool has_alpha;
    bool animated;
    bool lossless;       // the (first) image is VP8L; false for lossy or mixed
} sd_webp_info;

// Reads only the file's head (the RIFF header and the first chunks, a few KiB) and
// checks that the file is as long as its RIFF header says. SQ_FAIL with one line
// naming the file: not a WebP file, truncated, or a header libwebp rejects.
int sd_webp_read_info(const char *path, sd_webp_info *info);

// Decodes the whole file (an animation: its first frame) to 8-bit RGB, HWC, rows
// top to bottom; *rgb is malloc'ed (free it). SQ_FAIL with one line naming the file.
// No warning is logged here; the folder scan warns once about an animation.
int sd_webp_decode_rgb(const char *path, uint8_t **rgb, int *w, int *h);
// The same as 8-bit RGBA (alpha 255 where the file has none): the alpha channel a
// loss mask reads (`train --alpha-mask`, datasets/masks.h).
int sd_webp_decode_rgba(const char *path, uint8_t **rgba, int *w, int *h);

#ifdef __cplusplus
}
#endif

#endif
