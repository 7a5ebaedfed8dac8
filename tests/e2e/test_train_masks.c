// tests/e2e/test_train_masks.c: `sd-qzo train` with loss masks, on the tiny fixture
// (CPU, one step, batch 2; the step's L+ and L- come from log.jsonl at %.17g):
//   1. --masks with every mask zero on the right half (left), and with the complement
//      (right): the two losses differ, and their mean equals the unmasked run's loss
//      to 1e-12. That identity holds only for the per-sample normalised weighted mean
//      (each half has half the weight, docs/QZO.md); kohya's unnormalised mean, a
//      mask read transposed against the channels, or masks dropped would all break it;
//   2. the cache holds the masks at latent resolution (1,1,32,32), exactly 1 on the
//      left 16 columns and 0 on the right (identical mask files share one entry);
//   3. --alpha-mask on the same pictures saved as RGBA with the left half opaque gives
//      the --masks run's L+ and L- bit for bit;
//   4. --masks with all-white masks gives the unmasked loss (to 1e-12);
//   5. report.html says masks were used, and run.json holds the keys; the alpha and
//      white runs take their mask settings from TOML config files.
// SD_QZO_TEST_DEVICE=cuda runs the same on the GPU (scripts/gpu/train-masks.sh):
// every identity above holds there too, as each run's passes are deterministic.
#include <dirent.h>
#include <math.h>
#include <string.h>

#include "core/safetensors.h"
#include "tests/dataset_test_util.h"
#include "tests/e2e/train_fixture.h"
#include "tests/test_util.h"

static const char *bin;
static char tmp[64] = "/tmp/sq-e2e-masks-XXXXXX";

enum { HALF_LEFT, HALF_RIGHT, WHITE };

static void write_masks(const char *sub, int kind) {
    char d[256], path[300];
    snprintf(d, sizeof d, "%s/%s", tmp, sub);
    mkdir(d, 0755);
    static uint8_t m[64 * 64];
    for (int i = 0; i < 64 * 64; i++) {
        bool left = (i % 64) < 32;
        m[i] = kind == WHITE ? 255 : (kind == HALF_LEFT) == left ? 255 : 0;
    }
    for (int i = 0; i < 6; i++) {
        snprintf(path, sizeof path, "%s/img%d.png", d, i);
        SQ_CHECK(stbi_write_png(path, 64, 64, 1, m, 64), "cannot write %s", path);
    }
}

// The pictures of e2e_make_dataset's images/ (same formula as e2e_write_image), as
// RGBA with the left half opaque and the right half transparent.
static void write_alpha_images(void) {
    char d[256], path[300];
    snprintf(d, sizeof d, "%s/images_rgba", tmp);
    mkdir(d, 0755);
    static uint8_t px[64 * 64 * 4];
    for (int k = 0; k < 6; k++) {
        int x = 4 + 6 * k, y = 36 - 5 * k;
        uint8_t shade = (uint8_t)(200 + 8 * k);
        for (int i = 0; i < 64; i++)
            for (int j = 0; j < 64; j++) {
                bool in = i >= y && i < y + 24 && j >= x && j < x + 24;
                uint8_t *p = px + (i * 64 + j) * 4;
                p[0] = in ? 220 : shade;
                p[1] = in ? 30 : shade;
                p[2] = in ? 40 : (uint8_t)(shade - 20);
                p[3] = j < 32 ? 255 : 0;
            }
        snprintf(path, sizeof path, "%s/img%d.png", d, k);
        SQ_CHECK(stbi_write_png(path, 64, 64, 4, px, 64 * 4), "cannot write %s", path);
    }
}

// One step into tmp/out; extra flags; images from `images` (a folder under tmp).
static void run(const char *out, const char *images, const char *extra, double *lp, double *lm) {
    char cmd[4096], flags[2048], *o = NULL;
    snprintf(flags, sizeof flags, "--sample-every 0 --val-every 0 --cache-dir %s/cache_%s --lr 2e-3 --eps 2e-3 %s", tmp, out,
             extra);
    const char *dev = getenv("SD_QZO_TEST_DEVICE");   // later flags win: --device cuda
    if (dev && *dev) snprintf(flags + strlen(flags), sizeof flags - strlen(flags), " --device %s", dev);
    e2e_train_cmd(cmd, sizeof cmd, bin, tmp, out, 1, flags);
    if (strcmp(images, "images")) {   // swap the images folder
        char from[300], to[300], *p;
        snprintf(from, sizeof from, "--images %s/images ", tmp);
        snprintf(to, sizeof to, "--images %s/%s ", tmp, images);
        if ((p = strstr(cmd, from))) {
            char rest[4096];
            snprintf(rest, sizeof rest, "%s", p + strlen(from));
            snprintf(p, sizeof cmd - (size_t)(p - cmd), "%s%s", to, rest);
        }
    }
    int rc = tu_run(cmd, &o);
    TU_CHECK(rc == 0, "%s: train exits 0 (got %d):\n%s", out, rc, o);
    if (extra[0]) TU_CHECK(o && strstr(o, "loss masks"), "%s: the run says it uses loss masks:\n%s", out, o);
    free(o);
    char path[300];
    snprintf(path, sizeof path, "%s/%s/log.jsonl", tmp, out);
    char *log = e2e_read_all(path);
    char *s1 = log ? strstr(log, "{\"step\": 1,") : NULL;
    char *a = s1 ? strstr(s1, "\"loss_plus\": ") : NULL, *b = s1 ? strstr(s1, "\"loss_minus\": ") : NULL;
    TU_CHECK(a && b, "%s: step 1 in log.jsonl", out);
    *lp = a ? strtod(a + 13, NULL) : NAN;
    *lm = b ? strtod(b + 14, NULL) : NAN;
    free(log);
}

static bool close_rel(double a, double b, double tol) { return fabs(a - b) <= tol * fabs(b); }

// Every mask entry in cache dir: (1,1,32,32), 1 on the left half and 0 on the right.
static int check_cached_masks(const char *cache) {
    int found = 0;
    DIR *d = opendir(cache);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.' || strlen(e->d_name) != 2) continue;
        char sub[400];
        snprintf(sub, sizeof sub, "%s/%s", cache, e->d_name);
        DIR *d2 = opendir(sub);
        struct dirent *f;
        while (d2 && (f = readdir(d2))) {
            if (!strstr(f->d_name, ".safetensors")) continue;
            char path[700];
            snprintf(path, sizeof path, "%s/%s", sub, f->d_name);
            sq_safetensors *st;
            if (sq_st_open(&st, path) != SQ_OK) continue;
            const sq_st_entry *m = sq_st_find(st, "mask");
            if (m) {
                found++;
                sq_tensor t;
                TU_CHECK(m->ndim == 4 && m->shape[0] == 1 && m->shape[1] == 1 && m->shape[2] == 32 && m->shape[3] == 32,
                         "cached mask shape (1,1,32,32)");
                if (m->ndim == 4 && sq_tensor_alloc(&t, SQ_F32, SQ_CPU, 4, m->shape) == SQ_OK) {
                    tu_poison(t.data, sq_tensor_numel(&t));
                    TU_CHECK(sq_st_load(st, "mask", &t) == SQ_OK, "load %s", path);
                    const float *w = t.data;
                    bool ok = true;
                    for (int i = 0; i < 32 * 32; i++) ok &= w[i] == ((i % 32) < 16 ? 1.0f : 0.0f);
                    TU_CHECK(ok, "%s: the mask at latent resolution is 1 on the left half, 0 on the right", path);
                    sq_tensor_free(&t);
                }
            }
            sq_st_close(st);
        }
        if (d2) closedir(d2);
    }
    if (d) closedir(d);
    return found;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: test_train_masks SD_QZO_BINARY\n"); return 1; }
    bin = argv[1];
    if (!mkdtemp(tmp)) return 1;
    e2e_make_dataset(tmp);
    write_masks("masks_left", HALF_LEFT);
    write_masks("masks_right", HALF_RIGHT);
    write_masks("masks_white", WHITE);
    write_alpha_images();

    double fp, fm, lp, lm, rp, rm, ap, am, wp, wm;
    char flags[512];
    run("full", "images", "", &fp, &fm);
    snprintf(flags, sizeof flags, "--masks %s/masks_left", tmp);
    run("left", "images", flags, &lp, &lm);
    snprintf(flags, sizeof flags, "--masks %s/masks_right", tmp);
    run("right", "images", flags, &rp, &rm);
    // these two through config files: the keys as README gives them
    char cfg[300];
    snprintf(cfg, sizeof cfg, "%s/alpha.toml", tmp);
    FILE *f = fopen(cfg, "w");
    fputs("alpha_mask = true\n", f);
    fclose(f);
    snprintf(flags, sizeof flags, "--config %s", cfg);
    run("alpha", "images_rgba", flags, &ap, &am);
    snprintf(cfg, sizeof cfg, "%s/white.toml", tmp);
    f = fopen(cfg, "w");
    fprintf(f, "masks = \"%s/masks_white\"\nmasks_missing = \"warn\"\n", tmp);
    fclose(f);
    snprintf(flags, sizeof flags, "--config %s", cfg);
    run("white", "images", flags, &wp, &wm);
    printf("step 1 L+ / L-: unmasked %.12g / %.12g, left %.12g / %.12g, right %.12g / %.12g, alpha %.12g / %.12g, "
           "white %.12g / %.12g\n", fp, fm, lp, lm, rp, rm, ap, am, wp, wm);

    TU_CHECK(isfinite(lp) && isfinite(rp) && !close_rel(lp, rp, 1e-6), "the two half masks give different losses");
    TU_CHECK(close_rel(0.5 * (lp + rp), fp, 1e-12) && close_rel(0.5 * (lm + rm), fm, 1e-12),
             "mean of the complementary half-masked losses = the unmasked loss: L+ %.17g vs %.17g, L- %.17g vs %.17g",
             0.5 * (lp + rp), fp, 0.5 * (lm + rm), fm);
    TU_CHECK(ap == lp && am == lm, "--alpha-mask = --masks with the same mask, bit for bit: %.17g vs %.17g", ap, lp);
    TU_CHECK(close_rel(wp, fp, 1e-12) && close_rel(wm, fm, 1e-12), "white masks = unmasked: %.17g vs %.17g", wp, fp);

    char path[300];
    snprintf(path, sizeof path, "%s/cache_left", tmp);
    int n = check_cached_masks(path);
    // the six masks are the same file bytes and the same crop: one key, one entry
    TU_CHECK(n == 1, "one cached mask for the step's two images (identical masks share their entry): %d", n);
    snprintf(path, sizeof path, "%s/cache_alpha", tmp);
    n = check_cached_masks(path);
    TU_CHECK(n == 2, "the alpha run caches its masks too, keyed by each image: %d", n);

    snprintf(path, sizeof path, "%s/left/report.html", tmp);
    char *html = e2e_read_all(path);
    TU_CHECK(html && strstr(html, "Masked loss: masks from") && strstr(html, "6 of 6 training images masked"),
             "report.html says masks were used");
    free(html);
    snprintf(path, sizeof path, "%s/alpha/report.html", tmp);
    html = e2e_read_all(path);
    TU_CHECK(html && strstr(html, "alpha channel"), "report.html names the alpha channel");
    free(html);
    snprintf(path, sizeof path, "%s/full/report.html", tmp);
    html = e2e_read_all(path);
    TU_CHECK(html && !strstr(html, "Masked loss"), "no mask line without masks");
    free(html);
    snprintf(path, sizeof path, "%s/left/run.json", tmp);
    char *js = e2e_read_all(path);
    TU_CHECK(js && strstr(js, "masks_left") && strstr(js, "\"alpha-mask\"") && strstr(js, "\"masks-missing\""),
             "run.json holds the mask settings");
    free(js);

    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (!tu_failures && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    return tu_finish("e2e train masks");
}
