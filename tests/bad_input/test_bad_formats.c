// tests/bad_input/test_bad_formats.c: broken WebP images and broken metadata.jsonl /
// metadata.csv caption files are refused with one line naming the file (and the line)
// and the problem, never a crash or a huge allocation (this suite also runs under
// ASan + UBSan), and nothing in the folder is changed:
//   WebP: not a WebP file, truncated (still and animated), a bitstream libwebp
//   rejects, a huge declared canvas, corrupt image data behind a valid header (at the
//   full-decode check and at load), skip mode;
//   jsonl: invalid JSON, not an object, no file_name, file_name not a string, no
//   caption key, the caption key missing on a later line, a caption that is not a
//   string, an unknown file (with the --recursive hint for a subfolder), a
//   duplicate, invalid UTF-8, an image without an entry, no entries, both metadata
//   files at once;
//   csv: wrong field count (also after a quoted multi-line field), an unterminated
//   quote, text after a closing quote, no file_name / caption column, empty, header
//   only, invalid UTF-8;
//   --caption-ext that is not an extension (the sd-qzo binary, nothing created);
//   every single-byte corruption of two WebP fixtures, every prefix of a jsonl and
//   a csv text: a clean result or a clean one-line error, never a memory error.
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "datasets/image_folder.h"
#include "datasets/metadata.h"
#include "datasets/transform.h"
#include "datasets/webp.h"
#include "tests/dataset_test_util.h"
#include "tests/test_util.h"

static void expect_fail(const char *what, int rc, const char *n1, const char *n2) {
    const char *msg = sq_error_message();
    TU_CHECK(rc == SQ_FAIL, "%s: accepted", what);
    TU_CHECK(!n1 || strstr(msg, n1), "%s: message lacks '%s': %s", what, n1, msg);
    TU_CHECK(!n2 || strstr(msg, n2), "%s: message lacks '%s': %s", what, n2, msg);
    TU_CHECK(strchr(msg, '\n') == NULL, "%s: message is not one line", what);
    printf("%-40s -> %s\n", what, msg);
}

static int scan_dir(const char *rel, bool full, sd_bad_image_mode bad, sd_image_folder *f) {
    sd_image_folder_opts o;
    memset(&o, 0, sizeof o);
    o.images_dir = dt_path(rel);
    o.full_decode_check = full;
    o.bad_images = bad;
    int rc = sd_image_folder_scan(f, &o);
    if (rc == SQ_OK) sd_image_folder_free(f);
    return rc;
}

static size_t read_fixture(const char *name, uint8_t *buf, size_t cap) {
    char p[512];
    snprintf(p, sizeof p, "%s/webp/%s", tu_fixtures_dir(), name);
    FILE *f = fopen(p, "rb");
    SQ_CHECK(f, "missing fixture %s", p);
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

static void write_bytes(const char *rel, const uint8_t *d, size_t n) {
    FILE *f = fopen(dt_path(rel), "wb");
    SQ_CHECK(f, "cannot write %s", rel);
    fwrite(d, 1, n, f);
    fclose(f);
}

static void put_le(uint8_t *p, uint32_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (uint8_t)(v >> (8 * i));
}

// A folder holding one image `name` (bytes d[0..n)) with a caption beside it.
static void one_image_dir(const char *dir, const char *name, const uint8_t *d, size_t n) {
    char p[256];
    dt_mkdir(dir);
    snprintf(p, sizeof p, "%s/%s", dir, name);
    write_bytes(p, d, n);
    snprintf(p, sizeof p, "%s/%.*s.txt", dir, (int)(strrchr(name, '.') - name), name);
    dt_write_text(p, "a caption");
}

static void test_webp(void) {
    static uint8_t lossy[8192], lossless[8192], anim[8192], buf[8192];
    size_t n_lossy = read_fixture("lossy.webp", lossy, sizeof lossy);
    size_t n_ll = read_fixture("lossless.webp", lossless, sizeof lossless);
    size_t n_anim = read_fixture("animated.webp", anim, sizeof anim);
    sd_image_folder f;
    sd_webp_info info;
    uint8_t *rgb = (uint8_t *)"poison";
    int w, h;

    one_image_dir("notwebp", "a.webp", (const uint8_t *)"\x89PNG\r\n\x1a\nnot really", 18);
    expect_fail("webp: not a WebP file", scan_dir("notwebp", false, SD_BAD_IMAGE_FAIL, &f), "a.webp", "not a WebP file");

    one_image_dir("trunc", "t.webp", lossy, n_lossy / 2);
    expect_fail("webp: truncated", scan_dir("trunc", false, SD_BAD_IMAGE_FAIL, &f), "t.webp", "truncated WebP");
    expect_fail("webp: truncated, at load", sd_image_decode_rgb(dt_path("trunc/t.webp"), &rgb, &w, &h), "t.webp",
                "truncated WebP");
    TU_CHECK(rgb == NULL, "a failed decode leaves *rgb NULL");

    one_image_dir("trunc_anim", "t.webp", anim, n_anim - 100);
    expect_fail("webp: truncated animation", scan_dir("trunc_anim", false, SD_BAD_IMAGE_FAIL, &f), "t.webp",
                "truncated WebP");

    // "VP8 " chunk of garbage with consistent RIFF sizes: libwebp rejects the header.
    memcpy(buf, "RIFF\0\0\0\0WEBPVP8 ", 16);
    put_le(buf + 16, 20, 4);
    memset(buf + 20, 0xA5, 20);
    put_le(buf + 4, 40 - 8, 4);
    one_image_dir("badhdr", "b.webp", buf, 40);
    expect_fail("webp: bad bitstream header", scan_dir("badhdr", false, SD_BAD_IMAGE_FAIL, &f), "b.webp",
                "cannot read the WebP header");

    // VP8X declaring an animated canvas: 40000 x 40000 (a 4.8 GB decode, within
    // libwebp's 2^32-pixel area limit) is refused by our side limit from the header,
    // before any allocation (the decoder checks it too); 16777216 x 16777216 is
    // already refused by libwebp's header parser.
    const uint32_t sides[2] = {40000, 1u << 24};
    for (int k = 0; k < 2; k++) {
        memcpy(buf, "RIFF\0\0\0\0WEBPVP8X", 16);
        put_le(buf + 16, 10, 4);
        put_le(buf + 20, 0x02, 4);         // animation flag
        put_le(buf + 24, sides[k] - 1, 3); // canvas width - 1
        put_le(buf + 27, sides[k] - 1, 3); // canvas height - 1
        memcpy(buf + 30, "ANIM", 4);
        put_le(buf + 34, 6, 4);
        memset(buf + 38, 0, 6);
        put_le(buf + 4, 44 - 8, 4);
        one_image_dir(k ? "huge2" : "huge", "h.webp", buf, 44);
    }
    expect_fail("webp: huge declared canvas", scan_dir("huge", false, SD_BAD_IMAGE_FAIL, &f), "h.webp",
                "40000x40000 outside 1..16384");
    expect_fail("webp: huge canvas, at load", sd_webp_decode_rgb(dt_path("huge/h.webp"), &rgb, &w, &h), "h.webp",
                "outside 1..16384");
    expect_fail("webp: huge canvas, header", sd_webp_read_info(dt_path("huge/h.webp"), &info), "h.webp", "40000x40000");
    expect_fail("webp: canvas over 2^32 pixels", scan_dir("huge2", false, SD_BAD_IMAGE_FAIL, &f), "h.webp",
                "cannot read the WebP header");

    // Corrupt image data behind a valid header: the quick scan accepts it (it reads
    // headers only), the full check and the loader refuse it.
    memcpy(buf, lossless, n_ll);
    for (size_t i = 40; i + 8 < n_ll; i++) buf[i] = (uint8_t)(0xFF ^ (i * 7));
    one_image_dir("corrupt", "c.webp", buf, n_ll);
    TU_CHECK(scan_dir("corrupt", false, SD_BAD_IMAGE_FAIL, &f) == SQ_OK, "header-only scan of a corrupt body: %s",
             sq_error_message());
    expect_fail("webp: corrupt body, full check", scan_dir("corrupt", true, SD_BAD_IMAGE_FAIL, &f), "c.webp",
                "cannot decode the WebP image");
    sd_crop_plan plan;
    sd_crop_plan_make(&plan, 20, 12, 20, 12, SD_CROP_CENTER, 0, 0, false);
    sq_tensor t;
    expect_fail("webp: corrupt body, at load", sd_transform_load(dt_path("corrupt/c.webp"), &plan, &t), "c.webp",
                "cannot decode");

    // Skip mode: the broken WebP is left out, the good one kept.
    dt_mkdir("skip");
    write_bytes("skip/good.webp", lossless, n_ll);
    dt_write_text("skip/good.txt", "good");
    write_bytes("skip/bad.webp", lossy, n_lossy / 2);
    dt_write_text("skip/bad.txt", "bad");
    sd_image_folder_opts o;
    memset(&o, 0, sizeof o);
    o.images_dir = dt_path("skip");
    o.bad_images = SD_BAD_IMAGE_SKIP;
    sq_log_set_level(SQ_LOG_ERROR);
    int rc = sd_image_folder_scan(&f, &o);
    sq_log_set_level(SQ_LOG_INFO);
    TU_CHECK(rc == SQ_OK && f.count == 1 && f.skipped == 1 && !strcmp(f.entries[0].rel_path, "good.webp"),
             "skip mode leaves the truncated WebP out: rc %d", rc);
    if (rc == SQ_OK) sd_image_folder_free(&f);
}

// Every single-byte corruption of two fixtures (a lossy image with alpha, an
// animation), the RIFF length kept: libwebp either decodes it, to the header's size,
// or it is refused with one line naming the file. Under ASan this is the check that
// the header, decode and first-frame paths never read or write out of bounds.
static void test_webp_mutations(void) {
    const char *names[] = {"alpha_lossy.webp", "animated.webp"};
    static uint8_t orig[8192], buf[8192];
    int refused = 0, decoded = 0;
    dt_mkdir("mut");
    for (int k = 0; k < 2; k++) {
        size_t n = read_fixture(names[k], orig, sizeof orig);
        for (size_t i = 0; i < n; i++) {
            memcpy(buf, orig, n);
            buf[i] ^= 0xFF;
            write_bytes("mut/m.webp", buf, n);
            sd_webp_info info;
            uint8_t *rgb = NULL;
            int w = 0, h = 0;
            int rc_info = sd_webp_read_info(dt_path("mut/m.webp"), &info);
            int rc = sd_webp_decode_rgb(dt_path("mut/m.webp"), &rgb, &w, &h);
            if (rc == SQ_OK) {
                decoded++;
                TU_CHECK(rc_info == SQ_OK && w == info.width && h == info.height && rgb,
                         "%s byte %zu: decoded %dx%d, header %dx%d", names[k], i, w, h, info.width, info.height);
                free(rgb);
            } else {
                refused++;
                const char *msg = sq_error_message();
                TU_CHECK(rgb == NULL && strstr(msg, "m.webp") && !strchr(msg, '\n'), "%s byte %zu: %s", names[k], i, msg);
            }
        }
    }
    TU_CHECK(refused > 0 && decoded > 0, "mutations: %d refused, %d decoded (both kinds expected)", refused, decoded);
    printf("%-40s -> %d refused, %d decoded\n", "webp: single-byte corruptions", refused, decoded);
}

// Every prefix of a valid metadata.jsonl and metadata.csv parses or fails with one
// line naming the file (a cut inside a quoted field, a JSON object, a UTF-8 sequence).
static void test_metadata_prefixes(void) {
    const char *jsonl = "{\"file_name\": \"a.png\", \"text\": \"caf\xC3\xA9 \\u00e9\"}\n"
                        "{\"file_name\": \"b.png\", \"text\": \"b\"}\n";
    const char *csv = "file_name,text\r\na.png,\"x, \"\"y\"\"\r\nz\"\r\nb.png,caf\xC3\xA9\n";
    int bad = 0;
    for (int k = 0; k < 2; k++) {
        const char *t = k ? csv : jsonl;
        size_t n = strlen(t);
        for (size_t len = 0; len <= n; len++) {
            sd_metadata m;
            int rc = k ? sd_metadata_parse_csv(&m, "m.csv", t, len) : sd_metadata_parse_jsonl(&m, "m.jsonl", t, len);
            if (rc == SQ_OK) {
                TU_CHECK(m.count >= 1 && m.caption_key, "%s prefix %zu: %d rows", k ? "csv" : "jsonl", len, m.count);
                sd_metadata_free(&m);
            } else {
                bad++;
                const char *msg = sq_error_message();
                TU_CHECK(strstr(msg, k ? "m.csv" : "m.jsonl") && !strchr(msg, '\n') && m.count == 0 && !m.rows,
                         "%s prefix %zu: %s", k ? "csv" : "jsonl", len, msg);
            }
        }
    }
    TU_CHECK(bad > 10, "most prefixes are refused (%d)", bad);
}

// dir with a.png and b.png (and sub/c.png), plus `file` holding `text`.
static int meta_scan(const char *dir, const char *file, const char *text, bool recursive) {
    char p[256];
    dt_mkdir(dir);
    snprintf(p, sizeof p, "%s/a.png", dir);
    dt_write_image(p, 4, 4, 3, 1);
    snprintf(p, sizeof p, "%s/b.png", dir);
    dt_write_image(p, 4, 4, 3, 2);
    snprintf(p, sizeof p, "%s/sub", dir);
    dt_mkdir(p);
    snprintf(p, sizeof p, "%s/sub/c.png", dir);
    dt_write_image(p, 4, 4, 3, 3);
    if (file) {
        snprintf(p, sizeof p, "%s/%s", dir, file);
        dt_write_text(p, text);
    }
    sd_image_folder f;
    sd_image_folder_opts o;
    memset(&o, 0, sizeof o);
    o.images_dir = dt_path(dir);
    o.recursive = recursive;
    int rc = sd_image_folder_scan(&f, &o);
    if (rc == SQ_OK) sd_image_folder_free(&f);
    return rc;
}

#define A "{\"file_name\": \"a.png\", \"text\": \"a\"}\n"
#define B "{\"file_name\": \"b.png\", \"text\": \"b\"}\n"

static void test_jsonl(void) {
    const char *J = "metadata.jsonl";
    expect_fail("jsonl: invalid JSON", meta_scan("j1", J, A "{\"file_name\": \"b.png\", \"text\": \"b\"\n", false),
                "metadata.jsonl:2:", "invalid JSON");
    expect_fail("jsonl: trailing text", meta_scan("j1b", J, A B "{\"file_name\": \"a.png\"} x\n", false),
                "metadata.jsonl:3:", "invalid JSON");
    expect_fail("jsonl: not an object", meta_scan("j2", J, A "[\"b.png\", \"b\"]\n", false), "metadata.jsonl:2:",
                "not a JSON object");
    expect_fail("jsonl: no file_name", meta_scan("j3", J, A "{\"file\": \"b.png\", \"text\": \"b\"}\n", false),
                "metadata.jsonl:2:", "no \"file_name\" key");
    expect_fail("jsonl: file_name not a string", meta_scan("j4", J, A "{\"file_name\": 2, \"text\": \"b\"}\n", false),
                "metadata.jsonl:2:", "\"file_name\" is not a string");
    expect_fail("jsonl: no caption key", meta_scan("j5", J, "{\"file_name\": \"a.png\", \"txt\": \"a\"}\n" B, false),
                "metadata.jsonl:1:", "no caption key");
    expect_fail("jsonl: caption key missing later",
                meta_scan("j6", J, A "\n{\"file_name\": \"b.png\", \"caption\": \"b\"}\n", false), "metadata.jsonl:3:",
                "no \"text\" key (the caption key of this file, from its first entry on line 1)");
    expect_fail("jsonl: caption not a string", meta_scan("j7", J, A "{\"file_name\": \"b.png\", \"text\": null}\n", false),
                "metadata.jsonl:2:", "\"text\" is not a string");
    expect_fail("jsonl: unknown file", meta_scan("j8", J, A B "{\"file_name\": \"zz.png\", \"text\": \"z\"}\n", false),
                "metadata.jsonl:3:", "unknown image 'zz.png'");
    expect_fail("jsonl: subfolder without --recursive",
                meta_scan("j9", J, A B "{\"file_name\": \"sub/c.png\", \"text\": \"c\"}\n", false), "metadata.jsonl:3:",
                "need --recursive");
    expect_fail("jsonl: duplicate", meta_scan("j10", J, A B "{\"file_name\": \"./a.png\", \"text\": \"again\"}\n", false),
                "metadata.jsonl:3:", "second caption for 'a.png' (first on line 1)");
    expect_fail("jsonl: invalid UTF-8", meta_scan("j11", J, A "{\"file_name\": \"b.png\", \"text\": \"\xC3\x28\"}\n", false),
                "metadata.jsonl:2:", "not valid UTF-8");
    expect_fail("jsonl: image without entry", meta_scan("j12", J, A, false), "metadata.jsonl", "no caption for image 'b.png'");
    expect_fail("jsonl: recursive, image without entry", meta_scan("j12r", J, A B, true), "metadata.jsonl",
                "no caption for image 'sub/c.png'");
    expect_fail("jsonl: no entries", meta_scan("j13", J, "\n  \n", false), "metadata.jsonl", "no entries");
    dt_mkdir("j14");
    dt_write_text("j14/metadata.csv", "file_name,text\na.png,a\nb.png,b\n");
    expect_fail("both metadata.jsonl and .csv", meta_scan("j14", J, A B, false), "j14", "both metadata.jsonl and metadata.csv");
    // the good file is accepted (so the failures above are the broken lines')
    TU_CHECK(meta_scan("jok", J, A B, false) == SQ_OK, "good metadata.jsonl: %s", sq_error_message());
    TU_CHECK(meta_scan("jokr", J, A B "{\"file_name\": \"sub/c.png\", \"text\": \"c\"}\n", true) == SQ_OK,
             "good recursive metadata.jsonl: %s", sq_error_message());
}

static void test_csv(void) {
    const char *C = "metadata.csv";
    expect_fail("csv: too many fields", meta_scan("c1", C, "file_name,text\na.png,a\nb.png,b,extra\n", false),
                "metadata.csv:3:", "3 fields, but the header row (line 1) has 2 columns");
    expect_fail("csv: too few fields", meta_scan("c2", C, "file_name,text\na.png,a\nb.png\n", false), "metadata.csv:3:",
                "1 field, but");
    expect_fail("csv: wrong count after a multi-line field",
                meta_scan("c3", C, "file_name,text\na.png,\"two\nlines\"\nb.png,b,x\n", false), "metadata.csv:4:",
                "3 fields");
    expect_fail("csv: unterminated quote", meta_scan("c4", C, "file_name,text\na.png,a\nb.png,\"open\nand on\n", false),
                "metadata.csv:3:", "unterminated quoted field");
    expect_fail("csv: text after closing quote", meta_scan("c5", C, "file_name,text\na.png,\"a\"b\nb.png,b\n", false),
                "metadata.csv:2:", "text after a closing quote");
    expect_fail("csv: no file_name column", meta_scan("c6", C, "file,text\na.png,a\n", false), "metadata.csv:1:",
                "no \"file_name\" column");
    expect_fail("csv: no caption column", meta_scan("c7", C, "file_name,tags\na.png,a\n", false), "metadata.csv:1:",
                "no caption column");
    expect_fail("csv: empty", meta_scan("c8", C, "", false), "metadata.csv", "empty");
    expect_fail("csv: header only", meta_scan("c9", C, "file_name,text\n", false), "metadata.csv", "no records");
    expect_fail("csv: invalid UTF-8", meta_scan("c10", C, "file_name,text\na.png,a\nb.png,\xFF\n", false),
                "metadata.csv:3:", "not valid UTF-8");
    expect_fail("csv: unknown file", meta_scan("c11", C, "file_name,text\na.png,a\nb.png,b\nq.png,q\n", false),
                "metadata.csv:4:", "unknown image 'q.png'");
    expect_fail("csv: duplicate", meta_scan("c12", C, "file_name,text\na.png,a\nb.png,b\n\"a.png\",again\n", false),
                "metadata.csv:4:", "second caption for 'a.png' (first on line 2)");
    TU_CHECK(meta_scan("cok", C, "file_name,text\na.png,a\nb.png,\"b, \"\"quoted\"\"\"\n", false) == SQ_OK,
             "good metadata.csv: %s", sq_error_message());
}

// The sd-qzo binary refuses a --caption-ext that is no extension, before creating
// anything.
static void test_caption_ext_cli(const char *bin) {
    const char *bad[] = {"a/b", ".", ""};
    for (int i = 0; i < 3; i++) {
        char cmd[2048], *out = NULL;
        snprintf(cmd, sizeof cmd, "'%s' train --model m --images %s --output %s --caption-ext '%s'", bin, dt_path("jok"),
                 dt_path("never"), bad[i]);
        int rc = tu_run(cmd, &out);
        struct stat st;
        TU_CHECK(rc != 0 && out && strstr(out, "--caption-ext"), "--caption-ext '%s' refused (rc %d): %s", bad[i], rc,
                 out ? out : "");
        TU_CHECK(stat(dt_path("never"), &st) != 0, "--caption-ext '%s': the output folder was not created", bad[i]);
        if (out) printf("%-40s -> %s", "--caption-ext bad", out);
        free(out);
    }
}

int main(int argc, char **argv) {
    dt_make_root("bad_formats");
    test_webp();
    test_webp_mutations();
    test_metadata_prefixes();
    test_jsonl();
    test_csv();
    if (argc > 1) test_caption_ext_cli(argv[1]);
    else TU_CHECK(false, "usage: test_bad_formats SD_QZO_BINARY");
    if (tu_failures == 0) dt_cleanup();
    return tu_finish("test_bad_formats");
}
