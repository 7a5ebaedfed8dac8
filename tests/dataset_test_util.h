// tests/dataset_test_util.h: helpers shared by the dataset tests (unit and
// bad-input): a fresh temp folder, small images written with stb_image_write
// (compiled static into each test, so it never clashes with a library copy), and
// text files.
#ifndef SQ_DATASET_TEST_UTIL_H
#define SQ_DATASET_TEST_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif
#include <stb_image_write.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

static char dt_root[256];
static char dt_roots[16][256];
static int dt_n_roots = 0;

// mkdtemp under $TMPDIR (or /tmp); dt_cleanup removes them all, so a test calls it
// only when every check passed and a failure leaves the files for inspection.
static inline const char *dt_make_root(const char *tag) {
    const char *t = getenv("TMPDIR");
    snprintf(dt_root, sizeof(dt_root), "%s/sdqzo_%s_XXXXXX", t && *t ? t : "/tmp", tag);
    if (!mkdtemp(dt_root)) {
        perror("mkdtemp");
        exit(1);
    }
    if (dt_n_roots < 16) snprintf(dt_roots[dt_n_roots++], sizeof(dt_roots[0]), "%s", dt_root);
    return dt_root;
}

static inline void dt_cleanup(void) {
    for (int i = 0; i < dt_n_roots; i++) {
        char cmd[sizeof(dt_roots[0]) + 16];
        snprintf(cmd, sizeof(cmd), "rm -rf '%.255s'", dt_roots[i]);   // mkdtemp names: no quotes in them
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dt_roots[i]);
    }
    dt_n_roots = 0;
}

// root/rel (rel may contain one '/' level: the folder is created).
static inline const char *dt_path(const char *rel) {
    static char buf[8][512];
    static int k = 0;
    char *p = buf[k++ & 7];
    snprintf(p, 512, "%s/%s", dt_root, rel);
    return p;
}

static inline void dt_mkdir(const char *rel) { mkdir(dt_path(rel), 0777); }

static inline void dt_write_text(const char *rel, const char *text) {
    FILE *f = fopen(dt_path(rel), "wb");
    if (!f) { perror(rel); exit(1); }
    fwrite(text, 1, strlen(text), f);
    fclose(f);
}

// A w x h image with pixel (x, y, c) = pattern value, written by extension:
// .png (exact), .bmp (exact), .jpg (quality 95, lossy).
static inline uint8_t dt_pattern(int x, int y, int c, int seed) {
    return (uint8_t)((x * 37 + y * 91 + c * 53 + seed * 17 + (x * y) % 7 * 11) & 0xff);
}

static inline void dt_write_image(const char *rel, int w, int h, int comp, int seed) {
    uint8_t *px = malloc((size_t)w * h * comp);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < comp; c++) px[((size_t)y * w + x) * comp + c] = dt_pattern(x, y, c, seed);
    const char *p = dt_path(rel);
    const char *ext = strrchr(rel, '.');
    int ok = 0;
    if (!strcmp(ext, ".png")) ok = stbi_write_png(p, w, h, comp, px, w * comp);
    else if (!strcmp(ext, ".bmp")) ok = stbi_write_bmp(p, w, h, comp, px);
    else ok = stbi_write_jpg(p, w, h, comp, px, 95);
    free(px);
    if (!ok) { fprintf(stderr, "cannot write %s\n", p); exit(1); }
}

#endif
