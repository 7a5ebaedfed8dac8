// tests/e2e/train_fixture.h: what the `sd-qzo train` end-to-end tests share (running
// the binary is tests/test_util.h's tu_run): reading a file whole, and the small data set
// they train on (6 pictures of a red square with a captions file, 2 held-out ones
// with .txt captions, and preview prompts), written under a folder of the test's.
#ifndef SQ_TESTS_E2E_TRAIN_FIXTURE_H
#define SQ_TESTS_E2E_TRAIN_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "core/error.h"
#include "samples/png.h"
#include "tests/test_util.h"

static inline char *e2e_read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = calloc((size_t)n + 1, 1);
    if (fread(s, 1, (size_t)n, f) != (size_t)n) { free(s); s = NULL; }
    fclose(f);
    return s;
}

// Lines in the file at path (0 when it cannot be read).
static inline int e2e_count_lines(const char *path) {
    char *s = e2e_read_all(path);
    int n = 0;
    for (char *p = s; p && *p; p++) n += *p == '\n';
    free(s);
    return n;
}

// A red square of side 24 at (x, y) on a light background: the "concept".
static inline void e2e_write_image(const char *dir, const char *name, int x, int y, uint8_t shade) {
    static uint8_t rgb[64 * 64 * 3];
    for (int i = 0; i < 64; i++)
        for (int j = 0; j < 64; j++) {
            bool in = i >= y && i < y + 24 && j >= x && j < x + 24;
            uint8_t *p = rgb + (i * 64 + j) * 3;
            p[0] = in ? 220 : shade;
            p[1] = in ? 30 : shade;
            p[2] = in ? 40 : (uint8_t)(shade - 20);
        }
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    SQ_CHECK(sd_png_write(path, rgb, 64, 64, NULL, NULL) == SQ_OK, "%s", sq_error_message());
}

// The data set under dir: images/ + captions.txt, val/ with .txt captions, prompts.txt.
static inline void e2e_make_dataset(const char *dir) {
    char d[128], v[128], path[256];
    snprintf(d, sizeof d, "%s/images", dir);
    snprintf(v, sizeof v, "%s/val", dir);
    mkdir(d, 0755);
    mkdir(v, 0755);
    FILE *c = fopen((snprintf(path, sizeof path, "%s/captions.txt", dir), path), "w");
    for (int i = 0; i < 6; i++) {
        char name[32];
        snprintf(name, sizeof name, "img%d.png", i);
        e2e_write_image(d, name, 4 + 6 * i, 36 - 5 * i, (uint8_t)(200 + 8 * i));
        fprintf(c, "%s\ta red square, photo %d\n", name, i);
    }
    fclose(c);
    for (int i = 0; i < 2; i++) {
        char name[32], txt[256];
        snprintf(name, sizeof name, "v%d.png", i);
        e2e_write_image(v, name, 10 + 20 * i, 20, 230);
        snprintf(txt, sizeof txt, "%s/v%d.txt", v, i);
        FILE *f = fopen(txt, "w");
        fputs("a red square", f);
        fclose(f);
    }
    FILE *p = fopen((snprintf(path, sizeof path, "%s/prompts.txt", dir), path), "w");
    fputs("a red square\na photo\n", p);
    fclose(p);
}

// `sd-qzo train` on the fixtures' tiny pipeline and the data set under dir (64 px, int4
// group 32, batch 2, CPU, one thread) into dir/out; `extra` carries the test's own flags.
static inline void e2e_train_cmd(char *cmd, size_t size, const char *bin, const char *dir, const char *out, int steps,
                                 const char *extra) {
    snprintf(cmd, size,
             "'%s' train --model '%s/pipeline/tiny' --images %s/images --captions %s/captions.txt --output %s/%s "
             "--resolution 64 --steps %d --group-size 32 --t5-max-length 32 --batch-size 2 --device cpu --threads 1 %s",
             bin, tu_fixtures_dir(), dir, dir, dir, out, steps, extra);
}

#endif
