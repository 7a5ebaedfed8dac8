// datasets/masks.c: finding, checking and loading per-image loss masks (see masks.h).
// Every message names the mask and the image it belongs to.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <stb_image.h>

#include "core/error.h"
#include "core/log.h"
#include "datasets/masks.h"
#include "datasets/webp.h"

// Warnings about images trained unmasked: the first few by name, then a count.
#define MAX_NAMED_WARNINGS 5

static bool is_webp(const char *path) {
    uint8_t head[16];
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    return sd_webp_sniff(head, n);
}

// Width, height and whether the file has an alpha channel, from its header (libwebp
// for WebP, stbi_info otherwise: 2 or 4 channels). SQ_FAIL with the reason, the path
// not named (the callers say whose mask it is).
static int image_info(const char *path, int *w, int *h, bool *alpha) {
    if (is_webp(path)) {
        sd_webp_info wi;
        if (sd_webp_read_info(path, &wi) != SQ_OK) return SQ_FAIL;
        *w = wi.width, *h = wi.height, *alpha = wi.has_alpha;
        return SQ_OK;
    }
    int n = 0;
    if (!stbi_info(path, w, h, &n)) {
        const char *why = stbi_failure_reason();
        return sq_errorf("not a decodable PNG/JPEG/BMP/WebP image (%s)", why ? why : "unknown reason");
    }
    *alpha = n == 2 || n == 4;
    return sd_image_check_complete(path);
}

static bool is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int sd_mask_find(const char *dir, const char *rel, char **out) {
    *out = NULL;
    size_t ld = strlen(dir), lr = strlen(rel);
    char *p = sq_malloc(ld + lr + 8);
    if (!p) return SQ_FAIL;
    snprintf(p, ld + lr + 8, "%s/%s", dir, rel);
    if (is_file(p)) {
        *out = p;
        return SQ_OK;
    }
    const char *slash = strrchr(rel, '/'), *dot = strrchr(rel, '.');
    size_t stem = dot && (!slash || dot > slash) ? (size_t)(dot - rel) : lr;
    static const char *const exts[] = {".png", ".jpg", ".jpeg", ".bmp", ".webp"};
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
        snprintf(p, ld + lr + 8, "%s/%.*s%s", dir, (int)stem, rel, exts[i]);
        if (is_file(p)) {
            *out = p;
            return SQ_OK;
        }
    }
    free(p);
    return SQ_OK;
}

// Header check of a mask file against its image.
static int check_mask(const char *mask, const sd_image_entry *e) {
    int w, h;
    bool alpha;
    if (image_info(mask, &w, &h, &alpha) != SQ_OK) {
        // sd_webp_read_info and the truncation check name the file themselves
        const char *m = sq_error_message();
        if (!strncmp(m, mask, strlen(mask))) return sq_error_context("mask of %s", e->path);
        return sq_error_context("%s: mask of %s", mask, e->path);
    }
    if (w != e->width || h != e->height)
        return sq_errorf("%s: mask is %dx%d but its image %s is %dx%d (a mask must have its image's size)", mask, w, h,
                         e->path, e->width, e->height);
    return SQ_OK;
}

int sd_masks_resolve(const sd_mask_opts *o, const sd_image_entry *entries, int n, sd_mask_source *src, char **paths) {
    for (int i = 0; i < n; i++) src[i] = SD_MASK_SRC_NONE, paths[i] = NULL;
    if (o->mode == SD_MASKS_NONE) return SQ_OK;
    int rc = SQ_OK, unmasked = 0;
    const char *first_unmasked = NULL;
    if (o->mode == SD_MASKS_DIR) {
        struct stat st;
        if (!o->dir || !*o->dir) return sq_errorf("no mask folder given");
        if (stat(o->dir, &st) != 0) return sq_error_errno("%s: mask folder", o->dir);
        if (!S_ISDIR(st.st_mode)) return sq_errorf("%s: not a folder (--masks takes the folder of mask images)", o->dir);
    }
    for (int i = 0; i < n && rc == SQ_OK; i++) {
        const sd_image_entry *e = &entries[i];
        if (o->mode == SD_MASKS_ALPHA) {
            int w, h;
            bool alpha = false;
            if (image_info(e->path, &w, &h, &alpha) != SQ_OK) {
                rc = sq_error_context("%s: reading the header for its alpha channel", e->path);
            } else if (alpha) {
                src[i] = SD_MASK_SRC_ALPHA;
            } else if (unmasked++ == 0) {
                first_unmasked = e->path;
            }
            continue;
        }
        if (sd_mask_find(o->dir, e->rel_path, &paths[i]) != SQ_OK) {
            rc = SQ_FAIL;
        } else if (!paths[i]) {
            if (o->missing == SD_MASK_MISSING_FAIL) {
                rc = sq_errorf("%s: no mask for image %s (looked for %s/%s, or its stem with .png/.jpg/.jpeg/.bmp/.webp); "
                               "--masks-missing warn trains such images unmasked",
                               o->dir, e->path, o->dir, e->rel_path);
            } else if (unmasked++ < MAX_NAMED_WARNINGS) {
                sq_log_warn("%s: no mask in %s; this image trains unmasked (weight 1)", e->path, o->dir);
            }
        } else if (check_mask(paths[i], e) != SQ_OK) {
            rc = SQ_FAIL;
        } else {
            src[i] = SD_MASK_SRC_FILE;
        }
    }
    if (rc != SQ_OK) {
        for (int i = 0; i < n; i++) free(paths[i]), paths[i] = NULL, src[i] = SD_MASK_SRC_NONE;
        return SQ_FAIL;
    }
    if (o->mode == SD_MASKS_ALPHA && unmasked)
        sq_log_warn("--alpha-mask: %d of %d images have no alpha channel (first: %s); they train unmasked (weight 1)",
                    unmasked, n, first_unmasked);
    if (o->mode == SD_MASKS_DIR && unmasked > MAX_NAMED_WARNINGS)
        sq_log_warn("%d of %d images have no mask in %s and train unmasked (the first %d named above)", unmasked, n,
                    o->dir, MAX_NAMED_WARNINGS);
    return SQ_OK;
}

void sd_mask_area_downsample(const float *in, int w, int h, int f, float *out) {
    const int ow = w / f, oh = h / f;
    const double inv = 1.0 / ((double)f * f);
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++) {
            double s = 0;
            for (int dy = 0; dy < f; dy++)
                for (int dx = 0; dx < f; dx++) s += in[(size_t)(y * f + dy) * w + (size_t)(x * f + dx)];
            out[(size_t)y * ow + x] = (float)(s * inv);
        }
}

int sd_mask_load(sd_mask_source src, const char *path, const sd_crop_plan *plan, int factor, float *out) {
    SQ_CHECK(src == SD_MASK_SRC_FILE || src == SD_MASK_SRC_ALPHA, "sd_mask_load: no mask to load");
    SQ_CHECK(factor >= 1 && plan->out_w % factor == 0 && plan->out_h % factor == 0, "mask: bucket %dx%d, factor %d",
             plan->out_w, plan->out_h, factor);
    int w, h, rc = SQ_OK;
    uint8_t *px = NULL;
    // grey masks: the luma of the decoded RGB; alpha: the fourth byte of RGBA (grey +
    // alpha expands to it too)
    int comp = src == SD_MASK_SRC_ALPHA ? 4 : 1;
    if (src == SD_MASK_SRC_ALPHA && is_webp(path)) {
        rc = sd_webp_decode_rgba(path, &px, &w, &h);
    } else if (src == SD_MASK_SRC_ALPHA) {
        int n;
        stbi_uc *p = NULL;
        rc = sd_image_check_complete(path);
        if (rc == SQ_OK && !(p = stbi_load(path, &w, &h, &n, 4))) {
            const char *why = stbi_failure_reason();
            rc = sq_errorf("%s: cannot decode the image for its alpha channel (%s)", path, why ? why : "unknown reason");
        }
        if (rc == SQ_OK && !(px = sq_malloc((size_t)w * h * 4))) rc = sq_error_context("%s", path);
        if (rc == SQ_OK) memcpy(px, p, (size_t)w * h * 4);
        if (p) stbi_image_free(p);
    } else {
        uint8_t *rgb = NULL;
        rc = sd_image_decode_rgb(path, &rgb, &w, &h);   // PNG/JPEG/BMP/WebP, the completeness check included
        if (rc == SQ_OK && !(px = sq_malloc((size_t)w * h))) rc = sq_error_context("%s", path);
        // stb_image's own formula for RGB -> grey (stbi__compute_y), for every format
        for (size_t i = 0; rc == SQ_OK && i < (size_t)w * h; i++)
            px[i] = (uint8_t)((77 * rgb[3 * i] + 150 * rgb[3 * i + 1] + 29 * rgb[3 * i + 2]) >> 8);
        free(rgb);
    }
    if (rc != SQ_OK) {
        free(px);
        return SQ_FAIL;
    }
    float *full = NULL;
    if (w != plan->src_w || h != plan->src_h) {
        rc = sq_errorf("%s: mask is now %dx%d, its image was %dx%d when the dataset was scanned", path, w, h, plan->src_w,
                       plan->src_h);
    } else {
        full = sq_malloc((size_t)plan->out_w * plan->out_h * sizeof(float));
        if (!full) rc = SQ_FAIL;
        else rc = sd_transform_grey(src == SD_MASK_SRC_ALPHA ? px + 3 : px, comp, plan, full);
        if (rc == SQ_OK) sd_mask_area_downsample(full, plan->out_w, plan->out_h, factor, out);
        else sq_error_context("%s", path);
    }
    free(full);
    free(px);
    return rc;
}
