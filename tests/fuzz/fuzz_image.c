// tests/fuzz/fuzz_image.c: libFuzzer target for the image loader
// (datasets/transform.c + stb_image, PNG/JPEG/BMP): header check, size limit
// (SD_IMAGE_MAX_PIXELS, from the header, before decoding), truncation check,
// decode, then resize/crop/flip into a 16x16 tensor. The first byte picks the file
// extension (the loader itself goes by content).
#include "core/error.h"
#include "datasets/transform.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static const char *const names[3] = {"i.png", "i.jpg", "i.bmp"};
    const char *path = fz_write(names[data[0] % 3], data + 1, size - 1);
    uint8_t *rgb = NULL;
    int w = 0, h = 0;
    if (sd_image_decode_rgb(path, &rgb, &w, &h) != SQ_OK) return 0;
    if (!rgb || w < 1 || h < 1 || (long long)w * h > SD_IMAGE_MAX_PIXELS) abort();
    sd_crop_plan plan;
    sd_crop_plan_make(&plan, w, h, 16, 16, SD_CROP_RANDOM, 0.5f, 0.25f, true);
    float out[3 * 16 * 16];
    (void)sd_transform_rgb(rgb, &plan, out);
    free(rgb);
    return 0;
}
