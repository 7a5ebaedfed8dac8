// datasets/image_size.h: the largest image sd-qzo decodes, checked from the header
// before any pixel is decoded, so a forged header (20000 x 20000) cannot make it
// allocate gigabytes: at most SD_IMAGE_MAX_SIDE pixels per side and
// SD_IMAGE_MAX_PIXELS (64 MP, 8192 x 8192; 192 MiB as 8-bit RGB) in all, far above
// any SD training picture. One home for the limit: the stb_image path
// (datasets/transform.c), the WebP path (datasets/webp.c) and the folder scan ask here.
#ifndef SD_IMAGE_SIZE_H
#define SD_IMAGE_SIZE_H

#define SD_IMAGE_MAX_SIDE 16384
#define SD_IMAGE_MAX_PIXELS (64ll * 1024 * 1024)

#ifdef __cplusplus
extern "C" {
#endif

// SQ_OK, or SQ_FAIL: "PATH: image size WxH outside 1..16384 pixels per side" or "... is
// over the 64-megapixel limit".
int sd_image_check_size(const char *path, int w, int h);

#ifdef __cplusplus
}
#endif

#endif
