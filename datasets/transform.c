// datasets/transform.c: decode -> resize to cover -> crop -> flip -> [-1, 1] CHW.
// See transform.h for the exact size and filter rules; the resize runs on float
// pixels in [0, 1] so no intermediate 8-bit rounding happens.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/third_party/stb_image.h"
#include <stb_image_resize.h>

#include "core/error.h"
#include "datasets/transform.h"
#include "datasets/webp.h"

// round(a * b / c) for positive ints without float error.
static int round_div(long long a, long long b, long long c) { return (int)((a * b + c / 2) / c); }

void sd_crop_plan_make(sd_crop_plan *plan, int src_w, int src_h, int out_w, int out_h, sd_crop_mode mode,
                       float u_x, float u_y, bool flip) {
    plan->src_w = src_w;
    plan->src_h = src_h;
    plan->out_w = out_w;
    plan->out_h = out_h;
    // s = max(out_w / src_w, out_h / src_h): compare out_w * src_h with out_h * src_w.
    if ((long long)out_w * src_h >= (long long)out_h * src_w) {
        plan->resized_w = out_w;
        plan->resized_h = round_div(src_h, out_w, src_w);
    } else {
        plan->resized_h = out_h;
        plan->resized_w = round_div(src_w, out_h, src_h);
    }
    if (plan->resized_w < out_w) plan->resized_w = out_w;
    if (plan->resized_h < out_h) plan->resized_h = out_h;
    int free_x = plan->resized_w - out_w, free_y = plan->resized_h - out_h;
    if (mode == SD_CROP_RANDOM) {
        plan->crop_x = (int)floorf(u_x * (float)(free_x + 1));
        plan->crop_y = (int)floorf(u_y * (float)(free_y + 1));
        if (plan->crop_x > free_x) plan->crop_x = free_x;
        if (plan->crop_y > free_y) plan->crop_y = free_y;
        if (plan->crop_x < 0) plan->crop_x = 0;
        if (plan->crop_y < 0) plan->crop_y = 0;
    } else {
        plan->crop_x = free_x / 2;
        plan->crop_y = free_y / 2;
    }
    plan->flip = flip;
}

// stb_image allocates a PNG chunk's declared length before reading it, so a chunk
// claiming a gigabyte in a small file is refused here: every chunk must lie inside
// the file, up to IEND (which also finds a truncated file). Only the 8-byte chunk
// heads are read.
static int check_png_chunks(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return sq_error_errno("%s: cannot open", path);
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    int rc = sq_errorf("%s: truncated PNG (no IEND chunk at its end); cannot be decoded", path);
    unsigned char h[8];
    for (long i = 8; size > 0 && i + 12 <= size;) {
        if (fseek(f, i, SEEK_SET) != 0 || fread(h, 1, 8, f) != 8) { rc = sq_errorf("%s: read error", path); break; }
        long len = (long)((unsigned long)h[0] << 24 | (unsigned long)h[1] << 16 | (unsigned long)h[2] << 8 | h[3]);
        if (len > size - i - 12) {
            rc = sq_errorf("%s: corrupt or truncated PNG (chunk '%.4s' of %ld bytes runs past the end of the %ld-byte "
                           "file); cannot be decoded", path, (const char *)h + 4, len, size);
            break;
        }
        if (!memcmp(h + 4, "IEND", 4)) { rc = SQ_OK; break; }
        i += 12 + len;
    }
    fclose(f);
    return rc;
}

int sd_image_check_complete(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return sq_error_errno("%s: cannot open", path);
    unsigned char head[8] = {0}, tail[4096];
    size_t nh = fread(head, 1, sizeof head, f);
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    size_t nt = 0;
    if (size > 0) {
        long from = size > (long)sizeof tail ? size - (long)sizeof tail : 0;
        if (fseek(f, from, SEEK_SET) == 0) nt = fread(tail, 1, (size_t)(size - from), f);
    }
    int err = ferror(f);
    fclose(f);
    if (err || size < 0) return sq_errorf("%s: read error", path);
    static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (nh == 8 && !memcmp(head, png_sig, 8)) {
        return check_png_chunks(path);
    }
    if (nh >= 2 && head[0] == 0xFF && head[1] == 0xD8) {
        size_t e = nt;
        while (e > 0 && (tail[e - 1] == 0x00 || tail[e - 1] == 0xFF || tail[e - 1] == '\r' || tail[e - 1] == '\n')) e--;
        if (e >= 2 && tail[e - 2] == 0xFF && tail[e - 1] == 0xD9) return SQ_OK;
        return sq_errorf("%s: truncated JPEG (no end-of-image marker FF D9 at its end); cannot be decoded", path);
    }
    if (nh >= 6 && head[0] == 'B' && head[1] == 'M') {
        long want = (long)head[2] | (long)head[3] << 8 | (long)head[4] << 16 | (long)head[5] << 24;
        if (want > size)
            return sq_errorf("%s: truncated BMP (%ld bytes, its header says %ld); cannot be decoded", path, size, want);
    }
    return SQ_OK;
}

// The first 12 bytes hold a WebP header (an unreadable file is reported by
// sd_image_check_complete).
static bool is_webp(const char *path) {
    unsigned char head[12];
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    return sd_webp_sniff(head, n);
}

int sd_image_decode_rgb(const char *path, uint8_t **rgb, int *w, int *h) {
    int n = 0;
    *rgb = NULL;
    if (is_webp(path)) return sd_webp_decode_rgb(path, rgb, w, h);   // checks the RIFF length and the size itself
    if (sd_image_check_complete(path) != SQ_OK) return SQ_FAIL;   // before stb_image parses anything
    if (!stbi_info(path, w, h, &n)) {
        const char *why = stbi_failure_reason();
        return sq_errorf("%s: cannot decode image (%s)", path, why ? why : "unknown reason");
    }
    if (sd_image_check_size(path, *w, *h) != SQ_OK) return SQ_FAIL;
    unsigned char *px = stbi_load(path, w, h, &n, 3);
    if (!px) {
        const char *why = stbi_failure_reason();
        return sq_errorf("%s: cannot decode image (%s)", path, why ? why : "unknown reason");
    }
    // Hand the caller memory from malloc, as documented, not stb's allocator's.
    size_t bytes = (size_t)*w * (size_t)*h * 3;
    *rgb = sq_malloc(bytes);
    if (!*rgb) {
        stbi_image_free(px);
        return sq_error_context("%s", path);
    }
    memcpy(*rgb, px, bytes);
    stbi_image_free(px);
    return SQ_OK;
}

// The geometry every channel of a training item goes through (image and loss mask
// alike): src (ch interleaved floats in [0, 1], plan->src_w x plan->src_h; freed
// here) resized to cover, cropped, flipped, clamped to [0, 1], then v * mul + add
// into ch planes of out_h x out_w.
static int resize_crop_flip(float *src, int ch, const sd_crop_plan *p, float mul, float add, float *out) {
    const int sw = p->src_w, sh = p->src_h, rw = p->resized_w, rh = p->resized_h;
    float *res = src;
    if (rw != sw || rh != sh) {
        res = sq_malloc((size_t)rw * rh * ch * sizeof(float));
        if (!res) {
            free(src);
            return SQ_FAIL;
        }
        // Area (box) when an axis shrinks, bicubic Catmull-Rom when it grows.
        stbir_filter fh = rw < sw ? STBIR_FILTER_BOX : STBIR_FILTER_CATMULLROM;
        stbir_filter fv = rh < sh ? STBIR_FILTER_BOX : STBIR_FILTER_CATMULLROM;
        int ok = stbir_resize(src, sw, sh, sw * ch * (int)sizeof(float), res, rw, rh, rw * ch * (int)sizeof(float),
                              STBIR_TYPE_FLOAT, ch, STBIR_ALPHA_CHANNEL_NONE, 0, STBIR_EDGE_CLAMP, STBIR_EDGE_CLAMP,
                              fh, fv, STBIR_COLORSPACE_LINEAR, NULL);
        free(src);
        if (!ok) {
            free(res);
            return sq_errorf("resizing %dx%d to %dx%d failed (out of memory)", sw, sh, rw, rh);
        }
    }
    const int ow = p->out_w, oh = p->out_h;
    const size_t plane = (size_t)ow * oh;
    for (int y = 0; y < oh; y++) {
        const float *row = res + ((size_t)(y + p->crop_y) * rw + p->crop_x) * ch;
        for (int x = 0; x < ow; x++) {
            int sx = p->flip ? ow - 1 - x : x;
            for (int c = 0; c < ch; c++) {
                float v = row[(size_t)sx * ch + c];
                v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);   // Catmull-Rom overshoot
                out[c * plane + (size_t)y * ow + x] = v * mul + add;
            }
        }
    }
    free(res);
    return SQ_OK;
}

static void check_plan(const sd_crop_plan *p) {
    SQ_CHECK(p->src_w > 0 && p->src_h > 0 && p->out_w > 0 && p->out_h > 0, "bad crop plan");
    SQ_CHECK(p->crop_x >= 0 && p->crop_y >= 0 && p->crop_x + p->out_w <= p->resized_w && p->crop_y + p->out_h <= p->resized_h,
             "crop window outside the resized image");
}

int sd_transform_rgb(const uint8_t *rgb, const sd_crop_plan *p, float *out_chw) {
    check_plan(p);
    size_t src_n = (size_t)p->src_w * p->src_h * 3;
    float *src = sq_malloc(src_n * sizeof(float));
    if (!src) return SQ_FAIL;
    for (size_t i = 0; i < src_n; i++) src[i] = (float)rgb[i] * (1.0f / 255.0f);
    return resize_crop_flip(src, 3, p, 2.0f, -1.0f, out_chw);
}

int sd_transform_grey(const uint8_t *grey, int stride, const sd_crop_plan *p, float *out_hw) {
    check_plan(p);
    size_t src_n = (size_t)p->src_w * p->src_h;
    float *src = sq_malloc(src_n * sizeof(float));
    if (!src) return SQ_FAIL;
    for (size_t i = 0; i < src_n; i++) src[i] = (float)grey[i * (size_t)stride] * (1.0f / 255.0f);
    return resize_crop_flip(src, 1, p, 1.0f, 0.0f, out_hw);
}

int sd_transform_load(const char *path, const sd_crop_plan *plan, sq_tensor *out) {
    uint8_t *rgb;
    int w, h;
    memset(out, 0, sizeof(*out));
    if (sd_image_decode_rgb(path, &rgb, &w, &h)) return SQ_FAIL;
    if (w != plan->src_w || h != plan->src_h) {
        free(rgb);
        return sq_errorf("%s: image is now %dx%d, was %dx%d when the dataset was scanned", path, w, h, plan->src_w,
                         plan->src_h);
    }
    if (sq_tensor_alloc(out, SQ_F32, SQ_CPU, 3, SQ_SHAPE(3, plan->out_h, plan->out_w))) {
        free(rgb);
        return sq_error_context("%s", path);
    }
    int rc = sd_transform_rgb(rgb, plan, out->data);
    free(rgb);
    if (rc) {
        sq_tensor_free(out);
        return sq_error_context("%s", path);
    }
    return SQ_OK;
}
