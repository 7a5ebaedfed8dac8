// tests/bad_input/test_bad_dataset.c: a broken training folder must be refused
// with one error line naming the folder, file or FILE:LINE and the problem, never
// a crash (this suite also runs under ASan + UBSan): missing / empty / non-folder
// paths, undecodable and truncated PNG/JPEG/BMP images (fail and skip modes), a truncated WebP, caption
// count mismatch, unknown, duplicate and missing names in TAB captions, missing
// .txt captions, captions that are not UTF-8, bad dataset options.
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "datasets/dataset.h"
#include "tests/dataset_test_util.h"
#include "tests/test_util.h"

static void expect_fail(const char *what, int rc, const char *n1, const char *n2) {
    const char *msg = sq_error_message();
    TU_CHECK(rc == SQ_FAIL, "%s: accepted", what);
    TU_CHECK(!n1 || strstr(msg, n1), "%s: message lacks '%s': %s", what, n1, msg);
    TU_CHECK(!n2 || strstr(msg, n2), "%s: message lacks '%s': %s", what, n2, msg);
    TU_CHECK(strchr(msg, '\n') == NULL, "%s: message is not one line", what);
    printf("%-34s -> %s\n", what, msg);
}

static int scan(const char *dir, const char *captions, sd_bad_image_mode bad, bool full, sd_image_folder *f) {
    sd_image_folder_opts o;
    memset(&o, 0, sizeof(o));
    o.images_dir = dir;
    o.captions_file = captions;
    o.bad_images = bad;
    o.full_decode_check = full;
    sq_error_clear();
    int rc = sd_image_folder_scan(f, &o);
    TU_CHECK(rc == SQ_OK || (f->count == 0 && f->entries == NULL), "failed scan left entries behind");
    return rc;
}

int main(void) {
    sd_image_folder f;
    dt_make_root("bad");

    // Missing folder, a file given as the folder, an empty folder, a folder with
    // only non-images, images only in a subfolder without recursion.
    expect_fail("missing folder", scan(dt_path("nope"), NULL, SD_BAD_IMAGE_FAIL, false, &f), "nope", NULL);
    dt_write_text("file.txt", "x");
    expect_fail("file, not a folder", scan(dt_path("file.txt"), NULL, SD_BAD_IMAGE_FAIL, false, &f), "file.txt",
                "not a folder");
    dt_mkdir("empty");
    expect_fail("empty folder", scan(dt_path("empty"), NULL, SD_BAD_IMAGE_FAIL, false, &f), "empty", "no images");
    dt_mkdir("onlytext");
    dt_write_text("onlytext/a.txt", "caption without image");
    expect_fail("folder without images", scan(dt_path("onlytext"), NULL, SD_BAD_IMAGE_FAIL, false, &f), "onlytext",
                "no images");
    dt_mkdir("nested");
    dt_mkdir("nested/sub");
    dt_write_image("nested/sub/a.png", 4, 4, 3, 1);
    expect_fail("images only in a subfolder", scan(dt_path("nested"), NULL, SD_BAD_IMAGE_FAIL, false, &f), "nested",
                "recursion");
    if (geteuid() != 0) {   // root reads anything
        dt_mkdir("locked");
        chmod(dt_path("locked"), 0);
        expect_fail("unreadable folder", scan(dt_path("locked"), NULL, SD_BAD_IMAGE_FAIL, false, &f), "locked",
                    "cannot open");
        chmod(dt_path("locked"), 0755);
    }

    // Undecodable image: fail mode names it; skip mode leaves it out.
    dt_mkdir("broken");
    dt_write_image("broken/good.png", 8, 8, 3, 1);
    dt_write_text("broken/good.txt", "good");
    dt_write_text("broken/bad.png", "this is not a png file at all");
    dt_write_text("broken/bad.txt", "bad");
    expect_fail("undecodable image (fail mode)", scan(dt_path("broken"), NULL, SD_BAD_IMAGE_FAIL, false, &f), "bad.png",
                "not a decodable");
    sq_log_set_level(SQ_LOG_ERROR);
    int rc = scan(dt_path("broken"), NULL, SD_BAD_IMAGE_SKIP, false, &f);
    TU_CHECK(rc == SQ_OK && f.count == 1 && f.skipped == 1 && !strcmp(f.entries[0].rel_path, "good.png"),
             "skip mode: rc %d, %d images, %d skipped", rc, f.count, f.skipped);
    if (rc == SQ_OK) sd_image_folder_free(&f);
    sq_log_set_level(SQ_LOG_INFO);

    // Truncated images: the header is fine (stbi_info passes) and stb_image would
    // decode what is there and call it success. The scan checks each file's end (PNG:
    // the IEND chunk, JPEG: the EOI marker FF D9, BMP: the size its header gives), so
    // a truncated image stops the scan, or is skipped with skip mode; loading one
    // directly fails naming it too.
    dt_mkdir("trunc");
    dt_write_image("trunc/t.png", 64, 64, 3, 2);
    dt_write_text("trunc/t.txt", "t");
    struct stat sb;
    stat(dt_path("trunc/t.png"), &sb);
    TU_CHECK(truncate(dt_path("trunc/t.png"), sb.st_size - 20) == 0, "truncate");
    expect_fail("truncated PNG", scan(dt_path("trunc"), NULL, SD_BAD_IMAGE_FAIL, false, &f), "t.png", "truncated PNG");
    expect_fail("truncated PNG, full check", scan(dt_path("trunc"), NULL, SD_BAD_IMAGE_FAIL, true, &f), "t.png",
                "truncated PNG");
    sd_crop_plan p;
    sd_crop_plan_make(&p, 64, 64, 64, 64, SD_CROP_CENTER, 0, 0, false);
    sq_tensor t;
    expect_fail("truncated PNG at load", sd_transform_load(dt_path("trunc/t.png"), &p, &t), "t.png", "cannot be decoded");
    TU_CHECK(truncate(dt_path("trunc/t.png"), 80) == 0, "truncate");
    expect_fail("PNG cut after its header", scan(dt_path("trunc"), NULL, SD_BAD_IMAGE_FAIL, false, &f), "t.png",
                "truncated PNG");
    unlink(dt_path("trunc/t.png"));
    dt_write_image("trunc/t.jpg", 64, 64, 3, 2);
    stat(dt_path("trunc/t.jpg"), &sb);
    TU_CHECK(truncate(dt_path("trunc/t.jpg"), sb.st_size / 2) == 0, "truncate");
    expect_fail("truncated JPEG", scan(dt_path("trunc"), NULL, SD_BAD_IMAGE_FAIL, false, &f), "t.jpg", "truncated JPEG");
    dt_write_image("trunc/u.bmp", 8, 8, 3, 2);
    dt_write_text("trunc/u.txt", "u");
    stat(dt_path("trunc/u.bmp"), &sb);
    TU_CHECK(truncate(dt_path("trunc/u.bmp"), sb.st_size - 10) == 0, "truncate");
    dt_write_image("trunc/v.jpg", 16, 16, 3, 3);
    dt_write_text("trunc/v.txt", "v");
    sq_log_set_level(SQ_LOG_ERROR);
    rc = scan(dt_path("trunc"), NULL, SD_BAD_IMAGE_SKIP, false, &f);
    TU_CHECK(rc == SQ_OK && f.count == 1 && f.skipped == 2 && !strcmp(f.entries[0].rel_path, "v.jpg"),
             "skip mode leaves truncated JPEG and BMP out: rc %d, %d images, %d skipped", rc, f.count, f.skipped);
    if (rc == SQ_OK) sd_image_folder_free(&f);
    sq_log_set_level(SQ_LOG_INFO);

    // Forged headers: a PNG whose IHDR claims 20000 x 20000 (over the side limit) or
    // 9000 x 9000 (81 MP, over the pixel limit) is refused from its header, before
    // any decoding allocates (the file holds no pixel data at all).
    dt_mkdir("huge");
    static const int dims[2][2] = {{20000, 20000}, {9000, 9000}};
    for (int k = 0; k < 2; k++) {
        unsigned char png[8 + 25 + 12] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
        for (int b = 0; b < 4; b++) {
            png[16 + b] = (unsigned char)(dims[k][0] >> (24 - 8 * b));
            png[20 + b] = (unsigned char)(dims[k][1] >> (24 - 8 * b));
        }
        png[24] = 8, png[25] = 2;  // 8-bit RGB; the CRC is left 0 (stb does not check it)
        memcpy(png + 33, "\0\0\0\0IEND\xae\x42\x60\x82", 12);
        FILE *hf = fopen(dt_path("huge/h.png"), "wb");
        TU_CHECK(hf && fwrite(png, 1, sizeof png, hf) == sizeof png && fclose(hf) == 0, "write huge/h.png");
        dt_write_text("huge/h.txt", "h");
        const char *why = k == 0 ? "image" : "megapixel limit";  // 20000: stb itself finds it too large
        expect_fail(k == 0 ? "20000x20000 PNG header" : "9000x9000 PNG header",
                    scan(dt_path("huge"), NULL, SD_BAD_IMAGE_FAIL, false, &f), "h.png", why);
        uint8_t *rgb = (uint8_t *)1;
        int w, h;
        expect_fail("huge PNG header at decode", sd_image_decode_rgb(dt_path("huge/h.png"), &rgb, &w, &h), "h.png", why);
        TU_CHECK(rgb == NULL, "no pixels handed out for a refused image");
    }

    // A WebP whose RIFF header claims more bytes than the file has (more broken WebP
    // files: tests/bad_input/test_bad_formats.c).
    dt_mkdir("webp");
    dt_write_image("webp/a.png", 4, 4, 3, 1);
    dt_write_text("webp/a.txt", "a");
    dt_write_text("webp/b.webp", "RIFF....WEBPVP8 ");
    expect_fail("webp image", scan(dt_path("webp"), NULL, SD_BAD_IMAGE_FAIL, false, &f), "b.webp", "truncated WebP");

    // Captions.
    dt_mkdir("caps");
    dt_write_image("caps/a.png", 4, 4, 3, 1);
    dt_write_image("caps/b.png", 4, 4, 3, 2);
    dt_write_image("caps/c.png", 4, 4, 3, 3);
    dt_write_text("plain2.txt", "one\ntwo\n");
    expect_fail("plain caption count mismatch", scan(dt_path("caps"), dt_path("plain2.txt"), SD_BAD_IMAGE_FAIL, false, &f),
                "plain2.txt: 2 caption lines but 3 images", NULL);
    dt_write_text("plain4.txt", "one\ntwo\nthree\nfour\n");
    expect_fail("plain caption count too many", scan(dt_path("caps"), dt_path("plain4.txt"), SD_BAD_IMAGE_FAIL, false, &f),
                "plain4.txt: 4 caption lines but 3 images", NULL);
    dt_write_text("unknown.tsv", "a.png\tone\nb.png\ttwo\nzebra.png\tthree\nc.png\tfour\n");
    expect_fail("unknown file in TAB captions", scan(dt_path("caps"), dt_path("unknown.tsv"), SD_BAD_IMAGE_FAIL, false, &f),
                "unknown.tsv:3", "zebra.png");
    dt_write_text("dup.tsv", "a.png\tone\nb.png\ttwo\na.png\tagain\nc.png\tfour\n");
    expect_fail("duplicate in TAB captions", scan(dt_path("caps"), dt_path("dup.tsv"), SD_BAD_IMAGE_FAIL, false, &f),
                "dup.tsv:3", "first on line 1");
    dt_write_text("short.tsv", "a.png\tone\nc.png\tthree\n");
    expect_fail("image without TAB caption", scan(dt_path("caps"), dt_path("short.tsv"), SD_BAD_IMAGE_FAIL, false, &f),
                "short.tsv", "'b.png'");
    dt_write_text("notab.tsv", "a.png\tone\nb.png two\nc.png\tthree\n");
    expect_fail("TAB captions line without TAB", scan(dt_path("caps"), dt_path("notab.tsv"), SD_BAD_IMAGE_FAIL, false, &f),
                "notab.tsv:2", "TAB");
    expect_fail("missing captions file", scan(dt_path("caps"), dt_path("none.tsv"), SD_BAD_IMAGE_FAIL, false, &f),
                "none.tsv", NULL);
    dt_write_text("caps/a.txt", "a");
    dt_write_text("caps/c.txt", "c");
    expect_fail("missing .txt caption", scan(dt_path("caps"), NULL, SD_BAD_IMAGE_FAIL, false, &f), "caps/b.txt",
                "b.png");
    // Caption files must be UTF-8 (the rule --prompts files share: datasets/captions.h)
    dt_write_text("badutf.tsv", "a.png\tfine\nb.png\tcaf\xe9 latin-1\nc.png\tc\n");
    expect_fail("TAB captions not UTF-8", scan(dt_path("caps"), dt_path("badutf.tsv"), SD_BAD_IMAGE_FAIL, false, &f),
                "badutf.tsv:2", "not valid UTF-8");
    dt_write_text("caps/b.txt", "overlong \xc0\xaf slash");
    expect_fail(".txt caption not UTF-8", scan(dt_path("caps"), NULL, SD_BAD_IMAGE_FAIL, false, &f), "caps/b.txt:1",
                "not valid UTF-8");
    dt_write_text("caps/b.txt", "caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80");
    rc = scan(dt_path("caps"), NULL, SD_BAD_IMAGE_FAIL, false, &f);
    TU_CHECK(rc == SQ_OK, "valid multi-byte UTF-8 caption refused: %s", sq_error_message());
    if (rc == SQ_OK) sd_image_folder_free(&f);

    // Dataset options.
    sd_dataset_opts o;
    sd_dataset_opts_default(&o);
    o.folder.images_dir = dt_path("broken");
    o.resolution = 1000;
    sd_dataset *ds = NULL;
    expect_fail("resolution not a multiple of 64", sd_dataset_open(&ds, &o), "1000", "multiple of 64");
    o.resolution = 512;
    o.batch_size = 0;
    expect_fail("batch size 0", sd_dataset_open(&ds, &o), "batch size 0", NULL);
    o.batch_size = 1;
    o.captions.dropout = 1.5f;
    expect_fail("caption dropout 1.5", sd_dataset_open(&ds, &o), "dropout", NULL);
    o.captions.dropout = 0;
    expect_fail("dataset on a bad folder", sd_dataset_open(&ds, &o), "bad.png", NULL);
    TU_CHECK(ds == NULL, "failed open returned a dataset");

    // An image replaced after the scan by one of another size: load names it.
    o.folder.images_dir = dt_path("caps");
    o.folder.captions_file = dt_path("plain4.txt");
    dt_write_text("plain3.txt", "one\ntwo\nthree\n");
    o.folder.captions_file = dt_path("plain3.txt");
    sq_log_set_level(SQ_LOG_WARN);
    rc = sd_dataset_open(&ds, &o);
    TU_CHECK(rc == SQ_OK, "open caps: %s", sq_error_message());
    if (rc == SQ_OK) {
        dt_write_image("caps/b.png", 6, 4, 3, 2);
        sd_dataset_item it;
        expect_fail("image changed after scan", sd_dataset_load_item(ds, 1, 0, &it), "b.png", "6x4");
        sd_dataset_close(ds);
    }
    if (tu_failures == 0) dt_cleanup();
    return tu_finish("test_bad_dataset");
}
