// datasets/image_size.c: see datasets/image_size.h.
#include "datasets/image_size.h"

#include "core/error.h"

int sd_image_check_size(const char *path, int w, int h) {
    if (w < 1 || h < 1 || w > SD_IMAGE_MAX_SIDE || h > SD_IMAGE_MAX_SIDE)
        return sq_errorf("%s: image size %dx%d outside 1..%d pixels per side", path, w, h, SD_IMAGE_MAX_SIDE);
    if ((long long)w * h > SD_IMAGE_MAX_PIXELS)
        return sq_errorf("%s: image size %dx%d is over the %lld-megapixel limit", path, w, h,
                         SD_IMAGE_MAX_PIXELS / (1024 * 1024));
    return SQ_OK;
}
