// tests/unit/test_datasets.c: the datasets module on small images written at test
// time: folder scan and the three caption sources, decode of PNG/JPEG/BMP, resize
// and crop values against a hand-written exact area-average reference, flips,
// bucket sets and assignment, determinism of the epoch order and of caption
// dropout/tag shuffle, the data stream's own RNG key, the dataset iteration API,
// the latent/text cache (store, load, miss, corrupted and truncated entries), and
// loss masks (finding, checking, the image's geometry, area averaging onto the latent
// grid, alpha and luma, cache keys, the dataset API).
#include <math.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "core/sha256.h"
#include "datasets/dataset.h"
#include "datasets/rng.h"
#include "tests/dataset_test_util.h"
#include "tests/test_util.h"

static sd_image_folder_opts folder_opts(const char *dir, const char *captions) {
    sd_image_folder_opts o;
    memset(&o, 0, sizeof(o));
    o.images_dir = dir;
    o.captions_file = captions;
    return o;
}

// ---- scanning and captions -------------------------------------------------

static void test_scan(void) {
    dt_make_root("scan");
    dt_write_image("b.jpg", 6, 4, 3, 1);
    dt_write_image("a.png", 4, 8, 3, 2);
    dt_write_image("c.BMP", 5, 5, 3, 3);
    dt_write_image(".hidden.png", 4, 4, 3, 4);
    dt_write_text("notes.md", "not an image");
    dt_mkdir("sub");
    dt_write_image("sub/d.png", 3, 2, 1, 5);
    dt_write_text("a.txt", "a cat,\nsitting\n");
    dt_write_text("b.txt", "  a dog  ");
    dt_write_text("c.txt", "");
    dt_write_text("sub/d.txt", "deep");

    sd_image_folder f;
    sd_image_folder_opts o = folder_opts(dt_root, NULL);
    int rc = sd_image_folder_scan(&f, &o);
    TU_CHECK(rc == SQ_OK, "scan: %s", sq_error_message());
    if (rc) return;
    TU_CHECK(f.count == 3, "non-recursive scan found %d images, want 3", f.count);
    const char *want[] = {"a.png", "b.jpg", "c.BMP"};
    const int ww[] = {4, 6, 5}, wh[] = {8, 4, 5};
    const char *cap[] = {"a cat, sitting", "a dog", ""};
    for (int i = 0; i < 3 && i < f.count; i++) {
        TU_CHECK(!strcmp(f.entries[i].rel_path, want[i]), "entry %d is %s, want %s", i, f.entries[i].rel_path, want[i]);
        TU_CHECK(f.entries[i].width == ww[i] && f.entries[i].height == wh[i], "%s: %dx%d", want[i], f.entries[i].width,
                 f.entries[i].height);
        TU_CHECK(!strcmp(f.entries[i].caption, cap[i]), "%s caption '%s', want '%s'", want[i], f.entries[i].caption,
                 cap[i]);
    }
    TU_CHECK(strstr(f.entries[0].path, dt_root) == f.entries[0].path, "path not under root: %s", f.entries[0].path);
    sd_image_folder_free(&f);

    o.recursive = true;
    rc = sd_image_folder_scan(&f, &o);
    TU_CHECK(rc == SQ_OK && f.count == 4, "recursive scan: rc %d, %d images", rc, f.count);
    if (rc == SQ_OK && f.count == 4) {
        TU_CHECK(!strcmp(f.entries[3].rel_path, "sub/d.png"), "4th entry %s", f.entries[3].rel_path);
        TU_CHECK(!strcmp(f.entries[3].caption, "deep"), "sub/d caption %s", f.entries[3].caption);
    }
    sd_image_folder_free(&f);

    // TAB format, any order, CRLF, a BOM, blank lines, an empty caption after the TAB.
    dt_write_text("caps.tsv", "\xEF\xBB\xBF" "c.BMP\tthird one\r\n\r\nsub/d.png\t\r\na.png\tfirst, tag\r\n./b.jpg\t second \n");
    o = folder_opts(dt_root, dt_path("caps.tsv"));
    o.recursive = true;
    rc = sd_image_folder_scan(&f, &o);
    TU_CHECK(rc == SQ_OK, "TAB captions: %s", sq_error_message());
    if (rc == SQ_OK) {
        const char *c4[] = {"first, tag", "second", "third one", ""};
        for (int i = 0; i < 4; i++)
            TU_CHECK(!strcmp(f.entries[i].caption, c4[i]), "TAB caption %d '%s' want '%s'", i, f.entries[i].caption,
                     c4[i]);
        sd_image_folder_free(&f);
    }

    // Plain lines in sorted order; a blank middle line is an empty caption, trailing
    // blank lines are ignored.
    dt_write_text("caps.txt.list", "one\n\nthree\n\n\n");
    o = folder_opts(dt_root, dt_path("caps.txt.list"));
    rc = sd_image_folder_scan(&f, &o);
    TU_CHECK(rc == SQ_OK, "plain captions: %s", sq_error_message());
    if (rc == SQ_OK) {
        TU_CHECK(!strcmp(f.entries[0].caption, "one") && !strcmp(f.entries[1].caption, "") &&
                     !strcmp(f.entries[2].caption, "three"),
                 "plain captions '%s' '%s' '%s'", f.entries[0].caption, f.entries[1].caption, f.entries[2].caption);
        sd_image_folder_free(&f);
    }

    // Missing .txt with the "empty caption" option.
    unlink(dt_path("b.txt"));
    o = folder_opts(dt_root, NULL);
    o.missing_caption = SD_CAPTION_MISSING_EMPTY;
    sq_log_set_level(SQ_LOG_ERROR);   // the expected warning
    rc = sd_image_folder_scan(&f, &o);
    sq_log_set_level(SQ_LOG_INFO);
    TU_CHECK(rc == SQ_OK && f.count == 3 && !strcmp(f.entries[1].caption, ""), "missing .txt as empty: rc %d", rc);
    if (rc == SQ_OK) sd_image_folder_free(&f);
}

// ---- decoding and transforms -----------------------------------------------

// Exact area average of one axis: weight of source pixel j in output pixel i is the
// overlap of [j, j+1) with [i*f, (i+1)*f), divided by f = src/dst.
static double area_weight(int i, int j, int src, int dst) {
    double f = (double)src / dst, lo = i * f, hi = (i + 1) * f;
    double a = j > lo ? j : lo, b = j + 1 < hi ? j + 1 : hi;
    return b > a ? (b - a) / f : 0.0;
}

// Reference for a downscale (both axes shrink or stay): area resize, crop, flip.
static void reference(const uint8_t *rgb, const sd_crop_plan *p, double *out) {
    int ow = p->out_w, oh = p->out_h;
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++) {
                int ry = y + p->crop_y, rx = (p->flip ? ow - 1 - x : x) + p->crop_x;
                double acc = 0;
                for (int sy = 0; sy < p->src_h; sy++) {
                    double wy = p->resized_h == p->src_h ? (sy == ry) : area_weight(ry, sy, p->src_h, p->resized_h);
                    if (wy == 0) continue;
                    for (int sx = 0; sx < p->src_w; sx++) {
                        double wx = p->resized_w == p->src_w ? (sx == rx) : area_weight(rx, sx, p->src_w, p->resized_w);
                        acc += wy * wx * rgb[((size_t)sy * p->src_w + sx) * 3 + c] / 255.0;
                    }
                }
                out[(c * oh + y) * ow + x] = acc * 2 - 1;
            }
}

static void check_transform(const char *what, int sw, int sh, int ow, int oh, sd_crop_mode mode, float ux, float uy,
                            bool flip, int want_rw, int want_rh, int want_cx, int want_cy) {
    uint8_t *rgb = malloc((size_t)sw * sh * 3);
    for (int y = 0; y < sh; y++)
        for (int x = 0; x < sw; x++)
            for (int c = 0; c < 3; c++) rgb[((size_t)y * sw + x) * 3 + c] = dt_pattern(x, y, c, 9);
    sd_crop_plan p;
    sd_crop_plan_make(&p, sw, sh, ow, oh, mode, ux, uy, flip);
    TU_CHECK(p.resized_w == want_rw && p.resized_h == want_rh && p.crop_x == want_cx && p.crop_y == want_cy,
             "%s: plan resized %dx%d crop +%d+%d, want %dx%d +%d+%d", what, p.resized_w, p.resized_h, p.crop_x,
             p.crop_y, want_rw, want_rh, want_cx, want_cy);
    size_t n = (size_t)3 * ow * oh;
    float *out = malloc(n * sizeof(float));
    double *ref = malloc(n * sizeof(double));
    tu_poison(out, (int64_t)n);
    int rc = sd_transform_rgb(rgb, &p, out);
    reference(rgb, &p, ref);
    double err = tu_rel_err_f32_f64(out, ref, (int64_t)n);
    TU_CHECK(rc == SQ_OK && err <= 1e-5, "%s: rel err %.3g vs exact area average", what, err);
    printf("transform %-36s rel err %.2e\n", what, err);
    free(rgb), free(out), free(ref);
}

static void test_transforms(void) {
    // 8x4 -> 2x2: scale 1/2 -> 4x2, centre window at x = 1 (2x2 block means).
    check_transform("8x4->2x2 centre", 8, 4, 2, 2, SD_CROP_CENTER, 0, 0, false, 4, 2, 1, 0);
    check_transform("8x4->2x2 centre flipped", 8, 4, 2, 2, SD_CROP_CENTER, 0, 0, true, 4, 2, 1, 0);
    // Random window: u = 0.99 of 3 positions -> 2; u = 0 -> 0.
    check_transform("8x4->2x2 random right", 8, 4, 2, 2, SD_CROP_RANDOM, 0.99f, 0.5f, false, 4, 2, 2, 0);
    check_transform("8x4->2x2 random left", 8, 4, 2, 2, SD_CROP_RANDOM, 0.0f, 0.0f, true, 4, 2, 0, 0);
    // Tall image: height binds -> 3x? no: 4x12 -> 2x3: s = max(1/2, 1/4) = 1/2 -> 2x6, window y = 1.
    check_transform("4x12->2x3 centre", 4, 12, 2, 3, SD_CROP_CENTER, 0, 0, false, 2, 6, 0, 1);
    // Non-integer factors: 6x3 -> 4x2 (1.5 each way), 7x5 -> 3x2 (2.33 and 2.5).
    check_transform("6x3->4x2 fractional", 6, 3, 4, 2, SD_CROP_CENTER, 0, 0, false, 4, 2, 0, 0);
    check_transform("7x5->3x2 fractional", 7, 5, 3, 2, SD_CROP_CENTER, 0, 0, false, 3, 2, 0, 0);
    // 9x5 -> 3x3: s = 3/5 -> round(5.4) = 5 wide x 3 high, centre x = 1.
    check_transform("9x5->3x3 fractional crop", 9, 5, 3, 3, SD_CROP_CENTER, 0, 0, false, 5, 3, 1, 0);
    // No resize at all: a pure crop, values exactly pixel / 127.5 - 1.
    check_transform("5x4->4x4 crop only", 5, 4, 4, 4, SD_CROP_CENTER, 0, 0, true, 5, 4, 0, 0);

    // Upscale (Catmull-Rom): a constant image stays constant, a ramp stays in range
    // and monotone.
    uint8_t flat[2 * 2 * 3], ramp[4 * 1 * 3];
    for (int i = 0; i < 12; i++) flat[i] = (uint8_t)(i % 3 == 0 ? 200 : i % 3 == 1 ? 30 : 128);
    for (int x = 0; x < 4; x++)
        for (int c = 0; c < 3; c++) ramp[x * 3 + c] = (uint8_t)(x * 80);
    sd_crop_plan p;
    float out[3 * 8 * 8];
    sd_crop_plan_make(&p, 2, 2, 8, 8, SD_CROP_CENTER, 0, 0, false);
    tu_poison(out, 3 * 64);
    TU_CHECK(sd_transform_rgb(flat, &p, out) == SQ_OK, "flat upscale failed");
    double maxd = 0;
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 64; i++) {
            double want = (c == 0 ? 200 : c == 1 ? 30 : 128) / 127.5 - 1;
            double d = isnan(out[c * 64 + i]) ? INFINITY : fabs(out[c * 64 + i] - want);
            if (d > maxd) maxd = d;
        }
    TU_CHECK(maxd < 1e-5, "flat 2x2 -> 8x8 upscale: max deviation %.3g", maxd);
    sd_crop_plan_make(&p, 4, 1, 8, 2, SD_CROP_CENTER, 0, 0, false);
    tu_poison(out, 3 * 16);
    TU_CHECK(sd_transform_rgb(ramp, &p, out) == SQ_OK, "ramp upscale failed");
    bool mono = true;
    for (int x = 1; x < 8; x++) mono &= out[x] >= out[x - 1] - 1e-6f && out[x] >= -1 && out[x] <= 1;
    TU_CHECK(mono, "ramp 4x1 -> 8x2 upscale is not monotone in [-1, 1]");
    TU_CHECK(out[0] < -0.9f && out[7] > 0.8f, "ramp ends %g %g", out[0], out[7]);

    // Decoding: PNG and BMP are exact, grey is replicated to RGB, JPEG is close.
    dt_make_root("decode");
    dt_write_image("rgb.png", 5, 3, 3, 7);
    dt_write_image("rgb.bmp", 5, 3, 3, 7);
    dt_write_image("grey.png", 5, 3, 1, 7);
    dt_write_image("rgba.png", 5, 3, 4, 7);
    const char *files[] = {"rgb.png", "rgb.bmp", "grey.png", "rgba.png"};
    const int comps[] = {3, 3, 1, 4};
    for (int k = 0; k < 4; k++) {
        uint8_t *rgb;
        int w, h;
        int rc = sd_image_decode_rgb(dt_path(files[k]), &rgb, &w, &h);
        TU_CHECK(rc == SQ_OK && w == 5 && h == 3, "decode %s: %s", files[k], sq_error_message());
        if (rc) continue;
        int bad = 0;
        for (int y = 0; y < 3; y++)
            for (int x = 0; x < 5; x++)
                for (int c = 0; c < 3; c++)
                    bad += rgb[(y * 5 + x) * 3 + c] != dt_pattern(x, y, comps[k] == 1 ? 0 : c, 7);
        TU_CHECK(bad == 0, "decode %s: %d values differ from the written ones", files[k], bad);
        free(rgb);
    }
    // JPEG of a smooth image: within a few levels.
    {
        int w = 16, h = 16;
        uint8_t px[16 * 16 * 3];
        for (int i = 0; i < w * h; i++)
            for (int c = 0; c < 3; c++) px[i * 3 + c] = (uint8_t)(60 + (i % 16) * 4 + c * 30);
        stbi_write_jpg(dt_path("smooth.jpg"), w, h, 3, px, 100);
        uint8_t *rgb;
        int rw, rh;
        int rc = sd_image_decode_rgb(dt_path("smooth.jpg"), &rgb, &rw, &rh);
        TU_CHECK(rc == SQ_OK && rw == 16 && rh == 16, "decode jpg: %s", sq_error_message());
        if (rc == SQ_OK) {
            int maxdiff = 0;
            for (int i = 0; i < w * h * 3; i++) {
                int d = abs((int)rgb[i] - (int)px[i]);
                if (d > maxdiff) maxdiff = d;
            }
            TU_CHECK(maxdiff <= 6, "jpeg q100 decode differs by %d levels", maxdiff);
            free(rgb);
        }
    }
    // sd_transform_load: file -> tensor equals decode + transform.
    {
        sd_crop_plan pl;
        sd_crop_plan_make(&pl, 5, 3, 2, 2, SD_CROP_CENTER, 0, 0, true);
        sq_tensor t;
        int rc = sd_transform_load(dt_path("rgb.png"), &pl, &t);
        TU_CHECK(rc == SQ_OK && t.ndim == 3 && t.shape[0] == 3 && t.shape[1] == 2 && t.shape[2] == 2,
                 "transform_load: %s", sq_error_message());
        if (rc == SQ_OK) {
            uint8_t *rgb;
            int w, h;
            sd_image_decode_rgb(dt_path("rgb.png"), &rgb, &w, &h);
            float ref[12];
            sd_transform_rgb(rgb, &pl, ref);
            TU_CHECK(memcmp(ref, t.data, sizeof(ref)) == 0, "transform_load differs from decode + transform");
            free(rgb);
            sq_tensor_free(&t);
        }
        sd_crop_plan_make(&pl, 6, 3, 2, 2, SD_CROP_CENTER, 0, 0, false);
        rc = sd_transform_load(dt_path("rgb.png"), &pl, &t);
        TU_CHECK(rc == SQ_FAIL && strstr(sq_error_message(), "rgb.png"), "size change not caught: %s",
                 sq_error_message());
    }
}

// ---- buckets and epoch order -----------------------------------------------

static void test_buckets(void) {
    sd_bucket_set s;
    TU_CHECK(sd_buckets_make(&s, 128, true) == SQ_OK, "buckets 128: %s", sq_error_message());
    // Hand-derived: widths 64..512 with the tallest height (and the transpose).
    const int want[][2] = {{64, 256}, {64, 192}, {128, 128}, {192, 64}, {256, 64}};
    TU_CHECK(s.count == 5, "R=128: %d buckets, want 5", s.count);
    for (int i = 0; i < 5 && i < s.count; i++)
        TU_CHECK(s.buckets[i].width == want[i][0] && s.buckets[i].height == want[i][1], "R=128 bucket %d: %dx%d", i,
                 s.buckets[i].width, s.buckets[i].height);
    sd_buckets_free(&s);

    TU_CHECK(sd_buckets_make(&s, 1024, true) == SQ_OK, "buckets 1024");
    bool has_sq = false, has_tall = false, has_wide = false, ok = true;
    for (int i = 0; i < s.count; i++) {
        int w = s.buckets[i].width, h = s.buckets[i].height;
        ok &= w % 64 == 0 && h % 64 == 0 && (long)w * h <= 1024L * 1024 && 4 * w >= h && 4 * h >= w;
        if (i) ok &= (long)s.buckets[i - 1].width * h < (long)w * s.buckets[i - 1].height;   // strictly ascending
        // symmetric: the transpose is there too
        bool t = false;
        for (int j = 0; j < s.count; j++) t |= s.buckets[j].width == h && s.buckets[j].height == w;
        ok &= t;
        has_sq |= w == 1024 && h == 1024;
        has_tall |= w == 512 && h == 2048;
        has_wide |= w == 2048 && h == 512;
    }
    TU_CHECK(ok && has_sq && has_tall && has_wide, "R=1024 bucket set broken (%d buckets)", s.count);
    printf("R=1024: %d buckets, from %dx%d to %dx%d\n", s.count, s.buckets[0].width, s.buckets[0].height,
           s.buckets[s.count - 1].width, s.buckets[s.count - 1].height);
    // Nearest against brute force on many aspects.
    int mism = 0;
    for (int w = 100; w <= 4000; w += 37)
        for (int h = 100; h <= 4000; h += 53) {
            int b = sd_bucket_nearest(&s, w, h);
            double a = log((double)w / h), db = fabs(a - log((double)s.buckets[b].width / s.buckets[b].height));
            for (int j = 0; j < s.count; j++)
                if (fabs(a - log((double)s.buckets[j].width / s.buckets[j].height)) < db - 1e-9) mism++;
        }
    TU_CHECK(mism == 0, "nearest bucket not nearest in %d cases", mism);
    int b = sd_bucket_nearest(&s, 1000, 1000);
    TU_CHECK(s.buckets[b].width == 1024 && s.buckets[b].height == 1024, "1000x1000 -> %dx%d", s.buckets[b].width,
             s.buckets[b].height);
    b = sd_bucket_nearest(&s, 100, 5000);
    TU_CHECK(s.buckets[b].width == 512 && s.buckets[b].height == 2048, "1:50 -> %dx%d", s.buckets[b].width,
             s.buckets[b].height);
    sd_buckets_free(&s);

    TU_CHECK(sd_buckets_make(&s, 512, false) == SQ_OK && s.count == 1 && s.buckets[0].width == 512 &&
                 s.buckets[0].height == 512, "disabled buckets: want one 512x512");
    sd_buckets_free(&s);
    TU_CHECK(sd_buckets_make(&s, 500, true) == SQ_FAIL && strstr(sq_error_message(), "500"), "R=500 accepted");

    // Epoch plans: 11 items in 3 buckets, batch 2.
    const int ib[] = {0, 1, 2, 0, 0, 1, 2, 2, 0, 1, 0};
    const int n = 11;
    sd_epoch_plan p, q;
    sd_epoch_plan_make(&p, ib, n, 3, 2, false, 42, 3);
    int seen[11] = {0}, nb = 0;
    bool one_bucket = true;
    for (int i = 0; i < p.count; i++) {
        for (int j = 0; j < p.batches[i].count; j++) {
            seen[p.batches[i].items[j]]++;
            one_bucket &= ib[p.batches[i].items[j]] == p.batches[i].bucket;
        }
        nb += p.batches[i].count < 2;
    }
    bool all_once = true;
    for (int i = 0; i < n; i++) all_once &= seen[i] == 1;
    // bucket sizes 5, 3, 3 -> 3 + 2 + 2 batches, 3 of them partial
    TU_CHECK(all_once && one_bucket && p.count == 7 && nb == 3, "epoch plan: %d batches (%d partial)", p.count, nb);
    sd_epoch_plan_make(&q, ib, n, 3, 2, false, 42, 3);
    bool same = p.count == q.count;
    for (int i = 0; same && i < p.count; i++)
        same = p.batches[i].count == q.batches[i].count &&
               !memcmp(p.batches[i].items, q.batches[i].items, sizeof(int) * (size_t)p.batches[i].count);
    TU_CHECK(same, "same seed and epoch gave a different plan");
    sd_epoch_plan_free(&q);
    // Other epochs / seeds: different orders (over a few tries, at least one differs).
    int differ_epoch = 0, differ_seed = 0;
    for (int e = 4; e < 8; e++) {
        sd_epoch_plan_make(&q, ib, n, 3, 2, false, 42, e);
        for (int i = 0; i < p.count; i++)
            if (q.batches[i].items[0] != p.batches[i].items[0]) { differ_epoch++; break; }
        sd_epoch_plan_free(&q);
        sd_epoch_plan_make(&q, ib, n, 3, 2, false, 1000 + e, 3);
        for (int i = 0; i < p.count; i++)
            if (q.batches[i].items[0] != p.batches[i].items[0]) { differ_seed++; break; }
        sd_epoch_plan_free(&q);
    }
    TU_CHECK(differ_epoch >= 3 && differ_seed >= 3, "shuffle does not depend on epoch (%d/4) or seed (%d/4)",
             differ_epoch, differ_seed);
    sd_epoch_plan_free(&p);
    sd_epoch_plan_make(&p, ib, n, 3, 2, true, 42, 3);
    int total = 0;
    for (int i = 0; i < p.count; i++) total += p.batches[i].count;
    TU_CHECK(p.count == 4 && total == 8, "drop_last: %d batches, %d items; want 4, 8", p.count, total);
    sd_epoch_plan_free(&p);
    // Uniformity of the first position over many epochs (a biased shuffle shows up).
    const int ib1[8] = {0};
    int first[8] = {0};
    for (int e = 0; e < 8000; e++) {
        sd_epoch_plan_make(&p, ib1, 8, 1, 8, false, 7, e);
        first[p.batches[0].items[0]]++;
        sd_epoch_plan_free(&p);
    }
    int lo = 8000, hi = 0;
    for (int i = 0; i < 8; i++) lo = first[i] < lo ? first[i] : lo, hi = first[i] > hi ? first[i] : hi;
    TU_CHECK(lo > 850 && hi < 1150, "first item of the shuffle not uniform: %d..%d of 1000", lo, hi);
}

// ---- captions ----------------------------------------------------------------

// The one resolution check (datasets/buckets.h) with SD3.5 Large's limits: VAE
// factor 8, patch 2, a 192-patch position table, so 3072 pixels a side. A square
// fits up to 3072, but with buckets the 4:1 bucket (about 2R long) meets the table
// first: 1536 fits (its 3072x768 bucket just does), 2048 does not (4096x1024); the
// largest that fits with buckets is 1600 (3072x832).
static void test_size_limits(void) {
    const sd_size_limits large = {8, 2, 192, NULL}, tiny = {2, 2, 16, "tiny/config.json"};
    TU_CHECK(sd_check_resolution(1024, true, &large) == SQ_OK, "1024 with buckets fits: %s", sq_error_message());
    TU_CHECK(sd_check_resolution(1536, true, &large) == SQ_OK, "1536 with buckets fits: %s", sq_error_message());
    TU_CHECK(sd_check_resolution(2048, false, &large) == SQ_OK, "2048 square fits: %s", sq_error_message());
    TU_CHECK(sd_check_resolution(3072, false, &large) == SQ_OK, "3072 square fits: %s", sq_error_message());
    TU_CHECK(sd_check_resolution(2048, true, &large) == SQ_FAIL, "2048 with buckets: the 4:1 bucket exceeds the table");
    const char *m = sq_error_message();
    TU_CHECK(!strchr(m, '\n') && strstr(m, "4:1 bucket") && strstr(m, "4096") && strstr(m, "--resolution 1600 or less") &&
             strstr(m, "--no-buckets"), "one line naming the bucket and what fits: %s", m);
    TU_CHECK(sd_check_resolution(3136, false, &large) == SQ_FAIL && strstr(sq_error_message(), "--resolution 3072 or less"),
             "a square above 3072 is refused: %s", sq_error_message());
    TU_CHECK(sd_check_resolution(96, true, NULL) == SQ_FAIL &&
             strstr(sq_error_message(), "--resolution must be a positive multiple of 64"), "96: %s", sq_error_message());
    TU_CHECK(sd_check_resolution(8256, false, NULL) == SQ_FAIL, "above 8192 is refused");
    TU_CHECK(sd_check_resolution(4096, true, NULL) == SQ_OK, "no model: only the bucket rule");
    TU_CHECK(sd_check_resolution(64, true, &tiny) == SQ_OK, "tiny fixture: 64 fits its 64-pixel table");
    TU_CHECK(sd_check_resolution(128, false, &tiny) == SQ_FAIL, "tiny fixture: 128 does not");
    TU_CHECK(sd_check_image_size(1024, 1024, &large) == SQ_OK, "1024x1024 image");
    TU_CHECK(sd_check_image_size(3072, 768, &large) == SQ_OK, "3072x768 image");
    TU_CHECK(sd_check_image_size(3088, 768, &large) == SQ_FAIL && !strchr(sq_error_message(), '\n'), "3088 wide image: %s",
             sq_error_message());
    TU_CHECK(sd_check_image_size(18, 16, &tiny) == SQ_FAIL && strstr(sq_error_message(), "multiples of 4"),
             "18 wide on the tiny model: %s", sq_error_message());
}

static void test_captions(void) {
    sd_caption_opts o = {0};
    const char *cap = "sks dog, sitting, on grass,  sunny , , photo";
    char *s = sd_caption_augment(cap, &o, 1, 0, 0);
    TU_CHECK(!strcmp(s, cap), "no augmentation changed the caption: %s", s);
    free(s);
    o.dropout = 1.0f;
    s = sd_caption_augment(cap, &o, 1, 0, 0);
    TU_CHECK(!strcmp(s, ""), "dropout 1 left '%s'", s);
    free(s);
    o.dropout = 0.3f;
    int dropped = 0, agree = 0;
    for (int i = 0; i < 4000; i++) {
        char *a = sd_caption_augment(cap, &o, 5, i / 1000, i % 1000);
        char *b = sd_caption_augment(cap, &o, 5, i / 1000, i % 1000);
        dropped += !*a;
        agree += !strcmp(a, b);
        free(a), free(b);
    }
    TU_CHECK(dropped > 1050 && dropped < 1350, "dropout 0.3 dropped %d of 4000", dropped);
    TU_CHECK(agree == 4000, "dropout not deterministic (%d of 4000 agree)", agree);

    o.dropout = 0;
    o.shuffle_tags = true;
    o.keep_tags = 1;
    int moved = 0;
    char *first = sd_caption_augment(cap, &o, 9, 0, 3);
    for (int e = 0; e < 20; e++) {
        char *a = sd_caption_augment(cap, &o, 9, e, 3);
        char *b = sd_caption_augment(cap, &o, 9, e, 3);
        TU_CHECK(!strcmp(a, b), "tag shuffle not deterministic: '%s' vs '%s'", a, b);
        TU_CHECK(!strncmp(a, "sks dog, ", 9), "kept tag moved: '%s'", a);
        // Same multiset of tags: same length and each tag present once.
        const char *tags[] = {"sitting", "on grass", "sunny", "photo"};
        TU_CHECK(strlen(a) == strlen("sks dog, sitting, on grass, sunny, photo"), "tags lost or added: '%s'", a);
        for (int t = 0; t < 4; t++) TU_CHECK(strstr(a, tags[t]), "tag '%s' missing from '%s'", tags[t], a);
        moved += strcmp(a, first) != 0;
        free(a), free(b);
    }
    TU_CHECK(moved >= 10, "tag order changed in only %d of 20 epochs", moved);
    free(first);
    o.keep_tags = 10;   // more than there are: nothing moves, only normalised
    s = sd_caption_augment(cap, &o, 9, 1, 3);
    TU_CHECK(!strcmp(s, "sks dog, sitting, on grass, sunny, photo"), "keep all: '%s'", s);
    free(s);
}

// ---- dataset API ---------------------------------------------------------------

// A whole batch (all items of one bucket) into images, a host f32 tensor
// {count, 3, h, w}, and the captions into captions[count] (malloc'ed): the items of
// sd_dataset_load_item side by side, what a batched loader would hand the VAE.
static int load_batch(const sd_dataset *ds, const sd_batch *batch, int epoch, sq_tensor *images, char **captions) {
    for (int j = 0; j < batch->count; j++) captions[j] = NULL;
    for (int j = 0; j < batch->count; j++) {
        sd_dataset_item it;
        if (sd_dataset_load_item(ds, batch->items[j], epoch, &it)) return SQ_FAIL;
        const size_t per = (size_t)3 * it.height * it.width;
        if (images->shape[0] != batch->count || images->shape[2] != it.height || images->shape[3] != it.width) {
            sd_dataset_item_free(&it);
            return sq_errorf("batch images: need {%d, 3, %d, %d}", batch->count, it.height, it.width);
        }
        memcpy((float *)images->data + (size_t)j * per, it.image.data, per * sizeof(float));
        captions[j] = it.caption;
        it.caption = NULL;
        sd_dataset_item_free(&it);
    }
    return SQ_OK;
}

// Width and height of the bucket an item is in (the size describe_item gives it).
static void item_bucket_size(const sd_dataset *ds, int index, int *w, int *h) {
    sd_dataset_item it;
    TU_CHECK(sd_dataset_describe_item(ds, index, 0, &it) == SQ_OK, "describe %d: %s", index, sq_error_message());
    *w = it.width;
    *h = it.height;
    sd_dataset_item_free(&it);
}

static void test_dataset(void) {
    dt_make_root("ds");
    // Aspects: square, 2:1 wide, 1:3 tall, and another square.
    dt_write_image("a.png", 40, 40, 3, 1);
    dt_write_image("b.png", 80, 40, 3, 2);
    dt_write_image("c.bmp", 30, 90, 3, 3);
    dt_write_image("d.jpg", 50, 50, 3, 4);
    dt_write_text("caps.tsv", "a.png\tred, blue, green\nb.png\twide\nc.bmp\ttall\nd.jpg\tjpeg one\n");
    sd_dataset_opts o;
    sd_dataset_opts_default(&o);
    o.folder.images_dir = dt_root;
    o.folder.captions_file = dt_path("caps.tsv");
    o.resolution = 128;
    o.batch_size = 2;
    o.random_flip = true;
    o.captions.shuffle_tags = true;
    o.seed = 1234;
    sd_dataset *ds;
    int rc = sd_dataset_open(&ds, &o);
    TU_CHECK(rc == SQ_OK, "open: %s", sq_error_message());
    if (rc) return;
    TU_CHECK(sd_dataset_count(ds) == 4, "count %d", sd_dataset_count(ds));
    const int want_w[] = {128, 192, 64, 128}, want_h[] = {128, 64, 192, 128};
    for (int i = 0; i < 4; i++) {
        int bw, bh;
        item_bucket_size(ds, i, &bw, &bh);
        TU_CHECK(bw == want_w[i] && bh == want_h[i], "item %d in %dx%d, want %dx%d", i, bw, bh, want_w[i], want_h[i]);
    }
    sd_epoch_plan p;
    TU_CHECK(sd_dataset_epoch(ds, 2, &p) == SQ_OK && p.count == 3, "epoch plan: %d batches, want 3", p.count);
    int flips = 0;
    for (int bi = 0; bi < p.count; bi++) {
        const sd_batch *b = &p.batches[bi];
        sd_bucket size = {0}, *bk = &size;
        item_bucket_size(ds, b->items[0], &size.width, &size.height);
        sq_tensor imgs;
        sq_tensor_alloc(&imgs, SQ_F32, SQ_CPU, 4, SQ_SHAPE(b->count, 3, bk->height, bk->width));
        tu_poison(imgs.data, sq_tensor_numel(&imgs));
        char *caps[2];
        rc = load_batch(ds, b, 2, &imgs, caps);
        TU_CHECK(rc == SQ_OK, "load batch: %s", sq_error_message());
        if (rc) { sq_tensor_free(&imgs); continue; }
        bool finite = true;
        const float *v = imgs.data;
        for (int64_t k = 0; k < sq_tensor_numel(&imgs); k++) finite &= v[k] >= -1 && v[k] <= 1;
        TU_CHECK(finite, "batch %d has values outside [-1, 1] or NaN", bi);
        for (int j = 0; j < b->count; j++) {
            sd_dataset_item it, it2;
            sd_dataset_load_item(ds, b->items[j], 2, &it);
            sd_dataset_describe_item(ds, b->items[j], 2, &it2);
            TU_CHECK(it.width == bk->width && it.height == bk->height, "item size %dx%d", it.width, it.height);
            TU_CHECK(!strcmp(it.caption, caps[j]) && !strcmp(it.caption, it2.caption), "captions differ: %s / %s",
                     it.caption, caps[j]);
            TU_CHECK(it.plan.flip == it2.plan.flip && it2.image.data == NULL, "describe differs from load");
            size_t per = (size_t)3 * bk->width * bk->height;
            TU_CHECK(!memcmp(it.image.data, v + j * per, per * sizeof(float)), "batch image %d differs from item", j);
            flips += it.plan.flip;
            // Reference: the plan applied by the transform directly.
            sd_crop_plan want;
            const sd_image_entry *e = sd_dataset_entry(ds, b->items[j]);
            sd_crop_plan_make(&want, e->width, e->height, bk->width, bk->height, SD_CROP_CENTER, 0, 0, it.plan.flip);
            TU_CHECK(want.resized_w == it.plan.resized_w && want.resized_h == it.plan.resized_h &&
                         want.crop_x == it.plan.crop_x && want.crop_y == it.plan.crop_y && want.out_w == it.plan.out_w &&
                         want.out_h == it.plan.out_h && want.src_w == it.plan.src_w,
                     "item plan is not the centre-crop plan");
            sd_dataset_item_free(&it);
            sd_dataset_item_free(&it2);
            free(caps[j]);
        }
        sq_tensor_free(&imgs);
    }
    sd_epoch_plan_free(&p);
    // Flips over many epochs: about half.
    int fl = 0;
    for (int e = 0; e < 200; e++) {
        sd_dataset_item it;
        sd_dataset_describe_item(ds, 0, e, &it);
        fl += it.plan.flip;
        sd_dataset_item_free(&it);
    }
    TU_CHECK(fl > 70 && fl < 130, "random flip chose %d of 200", fl);
    // sha256 of an item equals core's file hash; the latent key depends on flip.
    char h1[65], h2[65];
    sd_dataset_image_sha256(ds, 1, h1);
    sq_sha256_file(dt_path("b.png"), h2);
    TU_CHECK(!strcmp(h1, h2), "memoised sha256 differs");
    TU_CHECK(sd_dataset_describe_item(ds, 4, 0, &(sd_dataset_item){0}) == SQ_FAIL, "index 4 accepted");
    sd_dataset_close(ds);
    (void)flips;
}

// ---- cache ------------------------------------------------------------------------

static void test_cache(void) {
    dt_make_root("cache");
    sd_cache *c;
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/deep/cache", dt_root);
    TU_CHECK(sd_cache_open(&c, dir) == SQ_OK, "cache open: %s", sq_error_message());
    sd_crop_plan p;
    sd_crop_plan_make(&p, 100, 50, 64, 32, SD_CROP_CENTER, 0, 0, false);
    sd_cache_key k, kf, ke, kr, kt, kt2;
    const char *img = "aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11";
    sd_cache_key_latent(&k, img, &p, SD_CROP_CENTER, "vae-1");
    sd_cache_key_latent(&ke, img, &p, SD_CROP_CENTER, "vae-2");
    sd_cache_key_latent(&kr, img, &p, SD_CROP_RANDOM, "vae-1");
    p.flip = true;
    sd_cache_key_latent(&kf, img, &p, SD_CROP_CENTER, "vae-1");
    sd_cache_key_text(&kt, "a photo", "te-1");
    sd_cache_key_text(&kt2, "a photo ", "te-1");
    TU_CHECK(strcmp(k.hex, kf.hex) && strcmp(k.hex, ke.hex) && strcmp(k.hex, kr.hex) && strcmp(kt.hex, kt2.hex) &&
                 strlen(k.hex) == 64,
             "cache keys do not separate flip / encoder / crop mode / caption");

    uint64_t seed = 3;
    sq_tensor lat, ctx, lat_in, ctx_in;
    sq_tensor_alloc(&lat, SQ_F32, SQ_CPU, 3, SQ_SHAPE(16, 4, 8));
    sq_tensor_alloc(&ctx, SQ_BF16, SQ_CPU, 2, SQ_SHAPE(5, 6));
    tu_fill_uniform(lat.data, 16 * 4 * 8, &seed, -3, 3);
    float tmp[30];
    tu_fill_uniform(tmp, 30, &seed, -1, 1);
    sq_tensor_from_host_f32(&ctx, tmp);
    sq_tensor_alloc(&lat_in, SQ_F32, SQ_CPU, 3, SQ_SHAPE(16, 4, 8));
    sq_tensor_alloc(&ctx_in, SQ_F32, SQ_CPU, 2, SQ_SHAPE(5, 6));
    sd_cache_item store[] = {{"latent", &lat}, {"context", &ctx}};
    sd_cache_item load[] = {{"latent", &lat_in}, {"context", &ctx_in}};
    bool hit = true;
    TU_CHECK(!sd_cache_exists(c, &k), "exists before store");
    TU_CHECK(sd_cache_load(c, &k, load, 2, &hit) == SQ_OK && !hit, "miss before store");
    TU_CHECK(sd_cache_store(c, &k, store, 2) == SQ_OK, "store: %s", sq_error_message());
    TU_CHECK(sd_cache_exists(c, &k), "entry missing after store");
    char path[1024];
    sd_cache_entry_path(c, &k, path, sizeof(path));
    char want[1024];
    snprintf(want, sizeof(want), "%s/%.2s/%s.safetensors", dir, k.hex, k.hex);
    TU_CHECK(!strcmp(path, want), "entry path %s", path);
    tu_poison(lat_in.data, 16 * 4 * 8);
    tu_poison(ctx_in.data, 30);
    TU_CHECK(sd_cache_load(c, &k, load, 2, &hit) == SQ_OK && hit, "hit after store");
    TU_CHECK(tu_rel_err(lat_in.data, lat.data, 16 * 4 * 8) == 0, "latent changed through the cache");
    float ctx_ref[30];
    sq_tensor_to_host_f32(ctx_ref, &ctx);
    TU_CHECK(tu_rel_err(ctx_in.data, ctx_ref, 30) == 0, "bf16 context not widened exactly");
    TU_CHECK(sd_cache_load(c, &kf, load, 2, &hit) == SQ_OK && !hit, "flipped key hit the unflipped entry");

    sq_log_set_level(SQ_LOG_ERROR);   // the warnings below are expected
    // A wanted tensor of another shape: miss, entry removed.
    sq_tensor wrong;
    sq_tensor_alloc(&wrong, SQ_F32, SQ_CPU, 3, SQ_SHAPE(16, 8, 4));
    sd_cache_item load_wrong[] = {{"latent", &wrong}};
    TU_CHECK(sd_cache_load(c, &k, load_wrong, 1, &hit) == SQ_OK && !hit && !sd_cache_exists(c, &k),
             "shape mismatch not a miss that removes the entry");
    // Truncated entry.
    sd_cache_store(c, &k, store, 2);
    struct stat st;
    stat(path, &st);
    TU_CHECK(truncate(path, st.st_size / 2) == 0, "truncate");
    TU_CHECK(sd_cache_load(c, &k, load, 2, &hit) == SQ_OK && !hit && !sd_cache_exists(c, &k), "truncated entry hit");
    // Garbage entry, then rewritten and hit again.
    FILE *f = fopen(path, "wb");
    fputs("garbage garbage garbage", f);
    fclose(f);
    TU_CHECK(sd_cache_load(c, &k, load, 2, &hit) == SQ_OK && !hit, "garbage entry hit");
    // An entry with a tensor missing.
    sd_cache_store(c, &k, store, 1);
    TU_CHECK(sd_cache_load(c, &k, load, 2, &hit) == SQ_OK && !hit, "entry without 'context' hit");
    // An entry copied under another key's name (key mismatch in the metadata).
    sd_cache_store(c, &k, store, 2);
    char path2[1024], sub[1024];
    sd_cache_entry_path(c, &ke, path2, sizeof(path2));
    snprintf(sub, sizeof(sub), "%s/%.2s", dir, ke.hex);
    mkdir(sub, 0777);
    TU_CHECK(link(path, path2) == 0, "link");
    TU_CHECK(sd_cache_load(c, &ke, load, 2, &hit) == SQ_OK && !hit, "entry under a foreign name hit");
    sq_log_set_level(SQ_LOG_INFO);
    tu_poison(lat_in.data, 16 * 4 * 8);
    TU_CHECK(sd_cache_load(c, &k, load, 2, &hit) == SQ_OK && hit &&
                 tu_rel_err(lat_in.data, lat.data, 16 * 4 * 8) == 0,
             "rewritten entry does not hit");
    TU_CHECK(sd_cache_load(c, &k, load, 0, &hit) == SQ_FAIL, "n = 0 accepted");
    sq_tensor_free(&lat), sq_tensor_free(&ctx), sq_tensor_free(&lat_in), sq_tensor_free(&ctx_in);
    sq_tensor_free(&wrong);
    sd_cache_close(c);
}

// The data stream has its own Philox key: its draws never repeat the QZO perturbation
// words (key = the seed, counter = (scale block, step)). Before the stream key, the
// crop x of item k in epoch 0 was word 0 of the perturbation's block 2 at step k.
static void test_rng_streams(void) {
    int same = 0, n = 0;
    for (uint64_t seed = 0; seed < 4; seed++)
        for (int c = SD_RNG_EPOCH_SHUFFLE; c <= SD_RNG_TAG_SHUFFLE; c++)
            for (int k = 0; k < 64; k++, n++) {
                sq_philox_out z = sq_philox4x32_10((uint32_t)c, 0, (uint32_t)k, 0, (uint32_t)seed, (uint32_t)(seed >> 32));
                same += sd_rng_u32(seed, (sd_rng_choice)c, 0, k, 0) == z.v[0];
            }
    TU_CHECK(same == 0, "data draws equal perturbation words in %d of %d cases", same, n);
    uint64_t keys[5] = {42};
    for (int s = SQ_RNG_STREAM_NOISE; s <= SQ_RNG_STREAM_DATA; s++) keys[s] = sq_rng_stream_key(42, (sq_rng_stream)s);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < i; j++) TU_CHECK(keys[i] != keys[j], "streams %d and %d share a key", i, j);
}

// ---- loss masks ---------------------------------------------------------------

static void write_px(const char *rel, int w, int h, int comp, const uint8_t *px) {
    TU_CHECK(stbi_write_png(dt_path(rel), w, h, comp, px, w * comp) != 0, "cannot write %s", rel);
}

static void test_mask_find(void) {
    dt_make_root("maskfind");
    dt_mkdir("m");
    dt_mkdir("m/sub");
    dt_write_image("m/a.jpg", 4, 4, 1, 1);      // same name as its image
    dt_write_image("m/a.png", 4, 4, 1, 1);      // the exact name wins over the stem
    dt_write_image("m/b.png", 4, 4, 1, 1);      // image b.jpg: the stem with .png
    dt_write_image("m/sub/c.bmp", 4, 4, 1, 1);  // image sub/c.png: the stem with .bmp
    char *got, dir[300];
    snprintf(dir, sizeof dir, "%s/m", dt_root);
    const char *cases[][2] = {{"a.jpg", "m/a.jpg"}, {"b.jpg", "m/b.png"}, {"sub/c.png", "m/sub/c.bmp"}, {"d.png", NULL},
                              {"sub/a.jpg", NULL}};
    for (int i = 0; i < 5; i++) {
        TU_CHECK(sd_mask_find(dir, cases[i][0], &got) == SQ_OK, "find");
        const char *want = cases[i][1] ? dt_path(cases[i][1]) : NULL;
        TU_CHECK(want ? got && !strcmp(got, want) : !got, "mask of %s: got %s, want %s", cases[i][0], got ? got : "(none)",
                 want ? want : "(none)");
        free(got);
    }
}

// The geometry against a hand-written reference: a 128x128 source to a 64x48 bucket
// is an exact 2x box down-scale to 64x64 (each pixel the mean of a 2x2 block), a
// centre crop 8 rows down, a flip, then 8x8 blocks onto the 8x6 latent grid.
static void test_mask_geometry(void) {
    dt_make_root("maskgeo");
    const int S = 128, ow = 64, oh = 48, f = 8;
    uint8_t *grey = malloc((size_t)S * S), *rgba = malloc((size_t)S * S * 4), *rgb = malloc((size_t)S * S * 3);
    uint8_t *luma = malloc((size_t)S * S);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            int i = y * S + x;
            grey[i] = dt_pattern(x, y, 0, 3);
            for (int c = 0; c < 3; c++) rgba[i * 4 + c] = dt_pattern(x, y, c, 9), rgb[i * 3 + c] = dt_pattern(x, y, c, 5);
            rgba[i * 4 + 3] = grey[i];
            luma[i] = (uint8_t)((77 * rgb[i * 3] + 150 * rgb[i * 3 + 1] + 29 * rgb[i * 3 + 2]) >> 8);
        }
    write_px("grey.png", S, S, 1, grey);
    write_px("rgba.png", S, S, 4, rgba);
    write_px("rgb.png", S, S, 3, rgb);
    write_px("luma.png", S, S, 1, luma);
    sd_crop_plan p;
    sd_crop_plan_make(&p, S, S, ow, oh, SD_CROP_CENTER, 0, 0, true);
    TU_CHECK(p.resized_w == 64 && p.resized_h == 64 && p.crop_x == 0 && p.crop_y == 8, "plan %dx%d+%d+%d", p.resized_w,
             p.resized_h, p.crop_x, p.crop_y);
    const int lw = ow / f, lh = oh / f;
    double ref[6 * 8];
    for (int ly = 0; ly < lh; ly++)
        for (int lx = 0; lx < lw; lx++) {
            double s = 0;
            for (int y = ly * f; y < ly * f + f; y++)
                for (int x = lx * f; x < lx * f + f; x++) {
                    int sx = 2 * (ow - 1 - x), sy = 2 * (y + 8);   // flip, then the crop's offset, then 2x2
                    s += (grey[sy * S + sx] + grey[sy * S + sx + 1] + grey[(sy + 1) * S + sx] + grey[(sy + 1) * S + sx + 1]) /
                         (4.0 * 255.0);
                }
            ref[ly * lw + lx] = s / (f * f);
        }
    float got[6 * 8], alpha[6 * 8], a[6 * 8], b[6 * 8];
    for (int i = 0; i < lw * lh; i++) got[i] = alpha[i] = a[i] = b[i] = NAN;
    TU_CHECK(sd_mask_load(SD_MASK_SRC_FILE, dt_path("grey.png"), &p, f, got) == SQ_OK, "%s", sq_error_message());
    double err = 0;
    for (int i = 0; i < lw * lh; i++) err = fmax(err, fabs(got[i] - ref[i]));
    TU_CHECK(err <= 1e-5, "mask through crop + flip + area: max error %g", err);
    // the alpha channel of an RGBA image is read as the same grey
    TU_CHECK(sd_mask_load(SD_MASK_SRC_ALPHA, dt_path("rgba.png"), &p, f, alpha) == SQ_OK, "%s", sq_error_message());
    TU_CHECK(!memcmp(alpha, got, sizeof got), "alpha mask equals the grey mask of the same values");
    // an RGB mask is read as its luma
    TU_CHECK(sd_mask_load(SD_MASK_SRC_FILE, dt_path("rgb.png"), &p, f, a) == SQ_OK &&
                 sd_mask_load(SD_MASK_SRC_FILE, dt_path("luma.png"), &p, f, b) == SQ_OK, "%s", sq_error_message());
    TU_CHECK(!memcmp(a, b, sizeof a), "an RGB mask is its luma (77 R + 150 G + 29 B) >> 8");
    // a mask of another size than the plan's source
    sd_crop_plan small;
    sd_crop_plan_make(&small, 64, 64, 64, 48, SD_CROP_CENTER, 0, 0, false);
    TU_CHECK(sd_mask_load(SD_MASK_SRC_FILE, dt_path("grey.png"), &small, f, a) == SQ_FAIL &&
                 strstr(sq_error_message(), "grey.png") && strstr(sq_error_message(), "128x128"),
             "a changed mask size is an error naming it: %s", sq_error_message());
    sq_error_clear();
    free(grey); free(rgba); free(rgb); free(luma);
}

static void test_mask_dataset(void) {
    dt_make_root("maskds");
    dt_mkdir("img");
    dt_mkdir("m");
    dt_write_image("img/a.png", 64, 64, 3, 1);
    dt_write_image("img/b.jpg", 64, 64, 3, 2);
    dt_write_image("img/c.png", 64, 64, 4, 3);   // has alpha
    dt_write_text("img/a.txt", "a");
    dt_write_text("img/b.txt", "b");
    dt_write_text("img/c.txt", "c");
    // a: left half white, right half black; b: mask b.png (stem); c: no mask yet
    uint8_t half[64 * 64];
    for (int i = 0; i < 64 * 64; i++) half[i] = (i % 64) < 32 ? 255 : 0;
    write_px("m/a.png", 64, 64, 1, half);
    dt_write_image("m/b.png", 64, 64, 1, 4);
    sd_dataset_opts o;
    sd_dataset_opts_default(&o);
    char img[300], m[300];
    snprintf(img, sizeof img, "%s/img", dt_root);
    snprintf(m, sizeof m, "%s/m", dt_root);
    o.folder.images_dir = img;
    o.resolution = 64;
    o.masks.mode = SD_MASKS_DIR;
    o.masks.dir = m;
    sd_dataset *ds = NULL;
    TU_CHECK(sd_dataset_open(&ds, &o) == SQ_FAIL && strstr(sq_error_message(), "c.png") && strstr(sq_error_message(), "no mask"),
             "a missing mask is an error naming the image: %s", sq_error_message());
    sq_error_clear();
    o.masks.missing = SD_MASK_MISSING_WARN;
    TU_CHECK(sd_dataset_open(&ds, &o) == SQ_OK, "missing masks with warn: %s", sq_error_message());
    TU_CHECK(ds && sd_dataset_masked_count(ds) == 2 && sd_dataset_mask_source(ds, 0) == SD_MASK_SRC_FILE &&
                 sd_dataset_mask_source(ds, 2) == SD_MASK_SRC_NONE, "2 of 3 images masked");
    sd_dataset_item it;
    sq_tensor t;
    sd_cache_key k1, k2;
    TU_CHECK(sd_dataset_describe_item(ds, 0, 0, &it) == SQ_OK && sd_dataset_load_mask(ds, &it, 8, &t) == SQ_OK, "%s",
             sq_error_message());
    TU_CHECK(t.ndim == 4 && t.shape[2] == 8 && t.shape[3] == 8, "mask at latent resolution (1,1,8,8)");
    const float *w = t.data;
    bool ok = true;
    for (int i = 0; i < 64; i++) ok &= w[i] == ((i % 8) < 4 ? 1.0f : 0.0f);
    TU_CHECK(ok, "the left half weighs 1, the right 0");
    sq_tensor_free(&t);
    TU_CHECK(sd_dataset_mask_key(ds, &it, 8, &k1) == SQ_OK, "%s", sq_error_message());
    sd_dataset_item_free(&it);
    sd_dataset_close(ds);
    // a changed mask file changes the key
    for (int i = 0; i < 64 * 64; i++) half[i] = (i % 64) < 32 ? 0 : 255;
    write_px("m/a.png", 64, 64, 1, half);
    TU_CHECK(sd_dataset_open(&ds, &o) == SQ_OK && sd_dataset_describe_item(ds, 0, 0, &it) == SQ_OK &&
                 sd_dataset_mask_key(ds, &it, 8, &k2) == SQ_OK, "%s", sq_error_message());
    TU_CHECK(strcmp(k1.hex, k2.hex) != 0, "a changed mask file is a new cache key");
    sd_cache_key kf;
    TU_CHECK(sd_dataset_mask_key(ds, &it, 2, &kf) == SQ_OK && strcmp(kf.hex, k2.hex) != 0, "the latent factor is in the key");
    sd_dataset_item_free(&it);
    sd_dataset_close(ds);
    // all black: an error naming the mask and the image
    memset(half, 0, sizeof half);
    write_px("m/a.png", 64, 64, 1, half);
    TU_CHECK(sd_dataset_open(&ds, &o) == SQ_OK && sd_dataset_describe_item(ds, 0, 0, &it) == SQ_OK, "%s", sq_error_message());
    TU_CHECK(sd_dataset_load_mask(ds, &it, 8, &t) == SQ_FAIL && strstr(sq_error_message(), "m/a.png") &&
                 strstr(sq_error_message(), "img/a.png") && strstr(sq_error_message(), "0 over the whole"),
             "all-zero mask: %s", sq_error_message());
    sq_error_clear();
    sd_dataset_item_free(&it);
    sd_dataset_close(ds);
    // a mask of the wrong size: an error naming both files and both sizes
    dt_write_image("m/c.png", 32, 64, 1, 5);
    o.masks.missing = SD_MASK_MISSING_FAIL;
    TU_CHECK(sd_dataset_open(&ds, &o) == SQ_FAIL && strstr(sq_error_message(), "m/c.png") &&
                 strstr(sq_error_message(), "img/c.png") && strstr(sq_error_message(), "32x64") &&
                 strstr(sq_error_message(), "64x64"), "wrong-size mask: %s", sq_error_message());
    sq_error_clear();
    // alpha: only c.png has an alpha channel
    o.masks.mode = SD_MASKS_ALPHA;
    o.masks.dir = NULL;
    TU_CHECK(sd_dataset_open(&ds, &o) == SQ_OK, "alpha: %s", sq_error_message());
    TU_CHECK(ds && sd_dataset_masked_count(ds) == 1 && sd_dataset_mask_source(ds, 2) == SD_MASK_SRC_ALPHA &&
                 sd_dataset_mask_source(ds, 0) == SD_MASK_SRC_NONE, "alpha masks only where there is alpha");
    sd_dataset_close(ds);
}

static uint8_t *read_fixture(const char *name, size_t want) {
    char path[1100];
    snprintf(path, sizeof path, "%s/webp/%s", tu_fixtures_dir(), name);
    FILE *f = fopen(path, "rb");
    uint8_t *b = malloc(want + 1);
    size_t n = f ? fread(b, 1, want + 1, f) : 0;
    if (f) fclose(f);
    TU_CHECK(n == want, "%s: %zu bytes, want %zu", path, n, want);
    return b;
}

// WebP masks and WebP alpha, against Pillow's decode (tools/make_webp_alpha_reference.py,
// tools/make_webp_fixtures.py): an identity plan and factor 1 leave value / 255.
static void test_mask_webp(void) {
    static const struct { const char *name; int w, h; } alpha[] = {{"alpha_lossless", 18, 14}, {"alpha_lossy", 16, 16}};
    char path[1100], ref[64];
    for (int k = 0; k < 2; k++) {
        int w = alpha[k].w, h = alpha[k].h;
        snprintf(ref, sizeof ref, "%s.alpha", alpha[k].name);
        uint8_t *a = read_fixture(ref, (size_t)w * h);
        snprintf(path, sizeof path, "%s/webp/%s.webp", tu_fixtures_dir(), alpha[k].name);
        sd_crop_plan p;
        sd_crop_plan_make(&p, w, h, w, h, SD_CROP_CENTER, 0, 0, false);
        float *got = malloc((size_t)w * h * sizeof(float));
        tu_poison(got, (int64_t)w * h);
        TU_CHECK(sd_mask_load(SD_MASK_SRC_ALPHA, path, &p, 1, got) == SQ_OK, "%s", sq_error_message());
        double err = 0;
        for (int i = 0; i < w * h; i++) err = fmax(err, fabs(got[i] - a[i] / 255.0));
        TU_CHECK(err <= 1e-6, "%s: the alpha of the WebP vs Pillow's: max error %g", alpha[k].name, err);
        free(a);
        free(got);
    }
    // a WebP mask file: the luma of its RGB (Pillow's decode, lossless.rgb)
    const int w = 20, h = 12;
    uint8_t *rgb = read_fixture("lossless.rgb", (size_t)w * h * 3);
    snprintf(path, sizeof path, "%s/webp/lossless.webp", tu_fixtures_dir());
    sd_crop_plan p;
    sd_crop_plan_make(&p, w, h, w, h, SD_CROP_CENTER, 0, 0, false);
    float got[20 * 12];
    tu_poison(got, w * h);
    TU_CHECK(sd_mask_load(SD_MASK_SRC_FILE, path, &p, 1, got) == SQ_OK, "%s", sq_error_message());
    double err = 0;
    for (int i = 0; i < w * h; i++) {
        int luma = (77 * rgb[3 * i] + 150 * rgb[3 * i + 1] + 29 * rgb[3 * i + 2]) >> 8;
        err = fmax(err, fabs(got[i] - luma / 255.0));
    }
    TU_CHECK(err <= 1e-6, "a WebP mask is its luma: max error %g", err);
    free(rgb);
}

int main(void) {
    test_mask_find();
    test_mask_webp();
    test_mask_geometry();
    test_mask_dataset();
    test_rng_streams();
    test_scan();
    test_transforms();
    test_buckets();
    test_size_limits();
    test_captions();
    test_dataset();
    test_cache();
    if (tu_failures == 0) dt_cleanup();
    return tu_finish("test_datasets");
}
