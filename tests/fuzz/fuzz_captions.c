// tests/fuzz/fuzz_captions.c: libFuzzer target for caption files
// (datasets/image_folder.c): the input is read both as a --captions file (TAB or
// line format) over a folder of three small images (a.png, b.png, sub/c.png,
// scanned recursively) and as the <stem>.txt beside an image. The caption
// validity check (UTF-8, datasets/captions.c) runs on both.
#include "core/error.h"
#include "datasets/image_folder.h"
#include "tests/fuzz/fuzz_util.h"

static const unsigned char png_2x2[] = {0x89,0x50,0x4e,0x47,0x0d,0x0a,0x1a,0x0a,0x00,0x00,0x00,0x0d,0x49,0x48,0x44,0x52,0x00,0x00,0x00,0x02,0x00,0x00,0x00,0x02,0x08,0x02,0x00,0x00,0x00,0xfd,0xd4,0x9a,0x73,0x00,0x00,0x00,0x16,0x49,0x44,0x41,0x54,0x78,0x9c,0x63,0x60,0xd0,0x08,0xa8,0x58,0x70,0x82,0x81,0x5d,0x3f,0xbc,0x7e,0xf9,0x79,0x00,0x1b,0xf9,0x04,0xdb,0x11,0xcb,0x72,0xcc,0x00,0x00,0x00,0x00,0x49,0x45,0x4e,0x44,0xae,0x42,0x60,0x82};

static void setup(void) {
    static int done;
    if (done) return;
    done = 1;
    fz_mkdir("img");
    fz_mkdir("img/sub");
    fz_write("img/a.png", png_2x2, sizeof png_2x2);
    fz_write("img/b.png", png_2x2, sizeof png_2x2);
    fz_write("img/sub/c.png", png_2x2, sizeof png_2x2);
    fz_write("img/b.txt", "b", 1);
    fz_write("img/sub/c.txt", "c", 1);
    fz_mkdir("one");
    fz_write("one/x.png", png_2x2, sizeof png_2x2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    sd_image_folder f;
    sd_image_folder_opts o = {0};
    o.images_dir = fz_path("img");
    o.captions_file = fz_write("captions.txt", data, size);
    o.recursive = true;
    if (sd_image_folder_scan(&f, &o) == SQ_OK) sd_image_folder_free(&f);
    // the same bytes as the .txt beside an image
    fz_write("img/a.txt", data, size);
    o.captions_file = NULL;
    if (sd_image_folder_scan(&f, &o) == SQ_OK) sd_image_folder_free(&f);
    fz_write("one/x.txt", data, size);
    o.images_dir = fz_path("one");
    o.recursive = false;
    o.missing_caption = SD_CAPTION_MISSING_EMPTY;
    if (sd_image_folder_scan(&f, &o) == SQ_OK) sd_image_folder_free(&f);
    return 0;
}
