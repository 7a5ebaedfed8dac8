// tests/unit/test_webp.c: WebP through libwebp against Pillow. The files and the RGB
// pixels Pillow decodes them to are fixtures of tools/make_webp_fixtures.py
// (tests/fixtures/webp/): lossy, lossless, lossless and lossy with alpha, and two
// animations (one whose first frame is a sub-rectangle of the canvas, so the
// compositing onto the transparent-black canvas is checked too). Checks: the header read (size, alpha, animation, lossless) and the full
// decode (lossless and the animation's first frame bit for bit, lossy within a small
// tolerance: Pillow bundles another libwebp version), the same pixels through
// sd_image_decode_rgb, a folder scan that lists *.webp with their sizes and warns
// once about the animation, and sd_transform_load on a WebP file.
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "datasets/image_folder.h"
#include "datasets/transform.h"
#include "datasets/webp.h"
#include "tests/dataset_test_util.h"
#include "tests/test_util.h"

typedef struct {
    char name[32];
    int w, h, lossless, animated, alpha;
} ref_image;

static int read_reference(ref_image *r, int max) {
    char path[512], line[256];
    snprintf(path, sizeof path, "%s/webp/reference.txt", tu_fixtures_dir());
    FILE *f = fopen(path, "r");
    TU_CHECK(f != NULL, "cannot open %s", path);
    if (!f) return 0;
    int n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        if (sscanf(line, "%31s %d %d %d %d %d", r[n].name, &r[n].w, &r[n].h, &r[n].lossless, &r[n].animated,
                   &r[n].alpha) == 6)
            n++;
    }
    fclose(f);
    return n;
}

static uint8_t *read_bytes(const char *path, size_t want) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint8_t *b = malloc(want + 1);
    size_t got = fread(b, 1, want + 1, f);
    fclose(f);
    if (got != want) {
        free(b);
        return NULL;
    }
    return b;
}

static void copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    SQ_CHECK(a && b, "copy %s -> %s", from, to);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0) fwrite(buf, 1, n, b);
    fclose(a);
    fclose(b);
}

static void test_decode_vs_pillow(const ref_image *refs, int n) {
    TU_CHECK(n == 6, "reference.txt lists %d images, want 6", n);
    for (int i = 0; i < n; i++) {
        const ref_image *r = &refs[i];
        char webp[512], rgbp[512];
        snprintf(webp, sizeof webp, "%s/webp/%s.webp", tu_fixtures_dir(), r->name);
        snprintf(rgbp, sizeof rgbp, "%s/webp/%s.rgb", tu_fixtures_dir(), r->name);
        size_t bytes = (size_t)r->w * r->h * 3;
        uint8_t *want = read_bytes(rgbp, bytes);
        TU_CHECK(want != NULL, "%s: missing or wrong size (want %zu bytes)", rgbp, bytes);
        if (!want) continue;

        sd_webp_info info;
        memset(&info, 0x5a, sizeof info);   // poison
        int rc = sd_webp_read_info(webp, &info);
        TU_CHECK(rc == SQ_OK, "%s: read_info: %s", r->name, sq_error_message());
        TU_CHECK(info.width == r->w && info.height == r->h, "%s: header %dx%d, want %dx%d", r->name, info.width,
                 info.height, r->w, r->h);
        TU_CHECK(info.animated == (r->animated != 0), "%s: animated %d", r->name, info.animated);
        if (!r->animated) {
            TU_CHECK(info.has_alpha == (r->alpha != 0), "%s: has_alpha %d, want %d", r->name, info.has_alpha, r->alpha);
            TU_CHECK(info.lossless == (r->lossless != 0), "%s: lossless %d, want %d", r->name, info.lossless,
                     r->lossless);
        }

        for (int path = 0; path < 2; path++) {   // webp.h directly, then the format-sniffing decoder
            uint8_t *rgb = NULL;
            int w = -1, h = -1;
            rc = path ? sd_image_decode_rgb(webp, &rgb, &w, &h) : sd_webp_decode_rgb(webp, &rgb, &w, &h);
            TU_CHECK(rc == SQ_OK, "%s: decode (%s): %s", r->name, path ? "sd_image_decode_rgb" : "sd_webp_decode_rgb",
                     sq_error_message());
            if (rc) continue;
            TU_CHECK(w == r->w && h == r->h, "%s: decoded %dx%d", r->name, w, h);
            int max_diff = 0;
            double sum = 0;
            long distinct = 0;
            for (size_t k = 0; k < bytes; k++) {
                int d = abs((int)rgb[k] - (int)want[k]);
                if (d > max_diff) max_diff = d;
                sum += d;
                distinct += k > 0 && want[k] != want[k - 1];
            }
            TU_CHECK(distinct > (long)bytes / 8, "%s: the reference is not a flat image (%ld changes)", r->name, distinct);
            if (r->lossless) {
                TU_CHECK(max_diff == 0, "%s: lossless decode differs from Pillow by up to %d", r->name, max_diff);
            } else {
                // Lossy: the same bitstream decoded by another libwebp version; a
                // difference of a few levels is rounding in the YUV->RGB upsampling.
                TU_CHECK(max_diff <= 3 && sum / (double)bytes <= 0.5, "%s: lossy decode differs from Pillow: max %d, "
                         "mean %.3f", r->name, max_diff, sum / (double)bytes);
            }
            if (path == 0 && i == 0) printf("%s: max |diff| vs Pillow %d, mean %.4f\n", r->name, max_diff, sum / bytes);
            free(rgb);
        }
        free(want);
    }
}

// A scan lists the WebP files with their header sizes and warns once about the
// animation; sd_transform_load makes a tensor from one.
static void test_scan_and_load(const ref_image *refs, int n) {
    dt_make_root("webp");
    for (int i = 0; i < n; i++) {
        char from[512], to[64], txt[64];
        snprintf(from, sizeof from, "%s/webp/%s.webp", tu_fixtures_dir(), refs[i].name);
        snprintf(to, sizeof to, "%s.%s", refs[i].name, i == 1 ? "WEBP" : "webp");   // extension case-insensitive
        copy_file(from, dt_path(to));
        snprintf(txt, sizeof txt, "%s.txt", refs[i].name);
        dt_write_text(txt, refs[i].name);
    }
    char log_path[512];
    snprintf(log_path, sizeof log_path, "%s/scan.log", dt_root);
    fflush(stderr);
    int saved = dup(2), fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 2);
    close(fd);
    sd_image_folder f;
    sd_image_folder_opts o;
    memset(&o, 0, sizeof o);
    o.images_dir = dt_root;
    o.full_decode_check = true;
    int rc = sd_image_folder_scan(&f, &o);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    TU_CHECK(rc == SQ_OK, "scan of WebP files: %s", sq_error_message());
    if (rc) return;
    TU_CHECK(f.count == n, "scan found %d images, want %d", f.count, n);
    for (int k = 0; k < f.count; k++) {
        const ref_image *r = NULL;
        for (int i = 0; i < n; i++)
            if (!strncmp(f.entries[k].rel_path, refs[i].name, strlen(refs[i].name)) &&
                f.entries[k].rel_path[strlen(refs[i].name)] == '.')
                r = &refs[i];
        TU_CHECK(r && f.entries[k].width == r->w && f.entries[k].height == r->h && !strcmp(f.entries[k].caption, r->name),
                 "%s: %dx%d caption '%s'", f.entries[k].rel_path, f.entries[k].width, f.entries[k].height,
                 f.entries[k].caption);
    }
    FILE *lf = fopen(log_path, "r");
    char log[4096] = {0};
    if (lf) {
        size_t got = fread(log, 1, sizeof log - 1, lf);
        log[got] = '\0';
        fclose(lf);
    }
    for (int i = 0; i < n; i++) {
        char msg[128];
        snprintf(msg, sizeof msg, "/%s.webp: animated WebP; only its first frame is used", refs[i].name);
        int times = 0;
        for (const char *p = log; (p = strstr(p, msg)) != NULL; p++) times++;
        TU_CHECK(times == (refs[i].animated ? 1 : 0), "%s: %d animation warnings; log:\n%s", refs[i].name, times, log);
    }

    // file -> tensor: the lossless image at its own size is (pixel / 255) * 2 - 1.
    const ref_image *ll = &refs[1];
    sd_crop_plan plan;
    sd_crop_plan_make(&plan, ll->w, ll->h, ll->w, ll->h, SD_CROP_CENTER, 0, 0, false);
    sq_tensor t;
    char rgbp[512];
    snprintf(rgbp, sizeof rgbp, "%s/webp/%s.rgb", tu_fixtures_dir(), ll->name);
    uint8_t *want = read_bytes(rgbp, (size_t)ll->w * ll->h * 3);
    rc = sd_transform_load(dt_path("lossless.WEBP"), &plan, &t);
    TU_CHECK(rc == SQ_OK && want, "sd_transform_load(lossless.WEBP): %s", sq_error_message());
    if (rc == SQ_OK && want) {
        const float *x = t.data;
        double max_err = 0;
        for (int c = 0; c < 3; c++)
            for (int p = 0; p < ll->w * ll->h; p++) {
                double e = fabs(x[c * ll->w * ll->h + p] - (want[p * 3 + c] / 255.0 * 2.0 - 1.0));
                if (e > max_err) max_err = e;
            }
        TU_CHECK(max_err < 1e-6, "tensor from WebP differs by %g", max_err);
        sq_tensor_free(&t);
    }
    free(want);
    sd_image_folder_free(&f);
}

int main(void) {
    ref_image refs[8];
    int n = read_reference(refs, 8);
    test_decode_vs_pillow(refs, n);
    test_scan_and_load(refs, n);
    if (tu_failures == 0) dt_cleanup();
    return tu_finish("test_webp");
}
