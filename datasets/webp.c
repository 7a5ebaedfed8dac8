// datasets/webp.c: WebP header reading and decoding through libwebp (see webp.h).
// A still image is decoded straight into our buffer (WebPDecodeRGBInto); an
// animation goes through WebPAnimDecoder, which composites the first frame onto the
// canvas, and its alpha is dropped afterwards.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <webp/decode.h>
#include <webp/demux.h>

#include "core/error.h"
#include "datasets/image_size.h"
#include "datasets/webp.h"

// The head read at scan time: the RIFF header, VP8X and the first image chunk's
// header fit in far less; a file whose metadata chunks (ICC, EXIF) come first and
// are larger is read whole instead.
#define HEAD_BYTES 65536

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

bool sd_webp_sniff(const uint8_t *d, size_t n) {
    return n >= 12 && !memcmp(d, "RIFF", 4) && !memcmp(d + 8, "WEBP", 4);
}

// Reads at most `max` bytes of path (all of it when max is 0); *size is the file's size.
static int read_head(const char *path, size_t max, uint8_t **out, size_t *n, long *size) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return sq_error_errno("%s: cannot open", path);
    long sz = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (sz < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return sq_errorf("%s: read error", path);
    }
    size_t want = max && (size_t)sz > max ? max : (size_t)sz;
    uint8_t *buf = sq_malloc(want ? want : 1);
    if (!buf) {
        fclose(f);
        return sq_error_context("%s", path);
    }
    size_t got = fread(buf, 1, want, f);
    int err = ferror(f);
    fclose(f);
    if (err || got != want) {
        free(buf);
        return sq_errorf("%s: read error", path);
    }
    *out = buf;
    *n = got;
    *size = sz;
    return SQ_OK;
}

static const char *status_text(VP8StatusCode s) {
    switch (s) {
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "corrupt or not a WebP bitstream";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "a feature libwebp does not support";
    case VP8_STATUS_SUSPENDED: return "decoding suspended";
    case VP8_STATUS_USER_ABORT: return "decoding aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "the data ends early (truncated)";
    default: return "unknown error";
    }
}

// The RIFF header and the file's length agree (trailing bytes are allowed).
static int check_riff(const char *path, const uint8_t *d, size_t n, long size) {
    if (!sd_webp_sniff(d, n)) return sq_errorf("%s: not a WebP file (no RIFF/WEBP header)", path);
    long want = (long)le32(d + 4) + 8;
    if (want > size)
        return sq_errorf("%s: truncated WebP (%ld bytes, its RIFF header says %ld); cannot be decoded", path, size, want);
    return SQ_OK;
}

static int features(const char *path, const uint8_t *d, size_t n, WebPBitstreamFeatures *ft) {
    VP8StatusCode s = WebPGetFeatures(d, n, ft);
    if (s != VP8_STATUS_OK) return sq_errorf("%s: cannot read the WebP header (%s)", path, status_text(s));
    return sd_image_check_size(path, ft->width, ft->height);
}

int sd_webp_read_info(const char *path, sd_webp_info *info) {
    memset(info, 0, sizeof *info);
    uint8_t *d;
    size_t n;
    long size;
    if (read_head(path, HEAD_BYTES, &d, &n, &size)) return SQ_FAIL;
    int rc = check_riff(path, d, n, size);
    WebPBitstreamFeatures ft;
    if (rc == SQ_OK && WebPGetFeatures(d, n, &ft) == VP8_STATUS_NOT_ENOUGH_DATA && (long)n < size) {
        free(d);   // large metadata chunks before the image: read it all
        if (read_head(path, 0, &d, &n, &size)) return SQ_FAIL;
    }
    if (rc == SQ_OK) rc = features(path, d, n, &ft);
    free(d);
    if (rc != SQ_OK) return SQ_FAIL;
    info->width = ft.width;
    info->height = ft.height;
    info->has_alpha = ft.has_alpha != 0;
    info->animated = ft.has_animation != 0;
    info->lossless = ft.format == 2;
    return SQ_OK;
}

// First frame of an animation, composited onto the canvas, alpha dropped.
// ch: 3 (RGB) or 4 (RGBA) bytes per pixel into rgb.
static int decode_first_frame(const char *path, const uint8_t *d, size_t n, uint8_t *rgb, int w, int h, int ch) {
    WebPAnimDecoderOptions opt;
    if (!WebPAnimDecoderOptionsInit(&opt)) return sq_errorf("%s: libwebp version mismatch (demux)", path);
    opt.color_mode = MODE_RGBA;
    opt.use_threads = 0;
    WebPData wd = {d, n};
    WebPAnimDecoder *dec = WebPAnimDecoderNew(&wd, &opt);
    if (!dec) return sq_errorf("%s: cannot parse the animated WebP (corrupt or truncated)", path);
    WebPAnimInfo ai;
    uint8_t *rgba = NULL;
    int ts = 0, rc = SQ_OK;
    if (!WebPAnimDecoderGetInfo(dec, &ai) || ai.frame_count < 1)
        rc = sq_errorf("%s: animated WebP without frames", path);
    else if ((int)ai.canvas_width != w || (int)ai.canvas_height != h)
        rc = sq_errorf("%s: canvas %ux%u disagrees with the header's %dx%d", path, ai.canvas_width, ai.canvas_height, w, h);
    else if (!WebPAnimDecoderGetNext(dec, &rgba, &ts))
        rc = sq_errorf("%s: cannot decode the first frame of the animated WebP (corrupt or truncated)", path);
    if (rc == SQ_OK) {
        size_t px = (size_t)w * (size_t)h;
        for (size_t i = 0; i < px; i++) memcpy(rgb + (size_t)ch * i, rgba + 4 * i, (size_t)ch);
    }
    WebPAnimDecoderDelete(dec);   // owns rgba
    return rc;
}

// sd_webp_decode_rgb (ch 3) and sd_webp_decode_rgba (ch 4).
static int decode(const char *path, int ch, uint8_t **rgb, int *w, int *h) {
    *rgb = NULL;
    uint8_t *d;
    size_t n;
    long size;
    if (read_head(path, 0, &d, &n, &size)) return SQ_FAIL;
    WebPBitstreamFeatures ft;
    int rc = check_riff(path, d, n, size);
    if (rc == SQ_OK) rc = features(path, d, n, &ft);
    uint8_t *out = NULL;
    if (rc == SQ_OK) {
        size_t stride = (size_t)ft.width * (size_t)ch, bytes = stride * (size_t)ft.height;
        out = sq_malloc(bytes);
        if (!out) rc = sq_error_context("%s", path);
        else if (ft.has_animation) rc = decode_first_frame(path, d, n, out, ft.width, ft.height, ch);
        else if (!(ch == 4 ? WebPDecodeRGBAInto(d, n, out, bytes, (int)stride) : WebPDecodeRGBInto(d, n, out, bytes, (int)stride)))
            rc = sq_errorf("%s: cannot decode the WebP image (corrupt or truncated data)", path);
    }
    free(d);
    if (rc != SQ_OK) {
        free(out);
        return SQ_FAIL;
    }
    *rgb = out;
    *w = ft.width;
    *h = ft.height;
    return SQ_OK;
}

int sd_webp_decode_rgb(const char *path, uint8_t **rgb, int *w, int *h) { return decode(path, 3, rgb, w, h); }
int sd_webp_decode_rgba(const char *path, uint8_t **rgba, int *w, int *h) { return decode(path, 4, rgba, w, h); }
