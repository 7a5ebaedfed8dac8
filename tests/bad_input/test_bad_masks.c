// tests/bad_input/test_bad_masks.c: `sd-qzo train --masks / --alpha-mask` on broken
// mask folders (tiny fixture, CPU). Each refusal exits 1 with one error line naming
// the files at fault, before any model runs, and leaves no OUT behind:
//   a mask of another size than its image, a missing mask (and --masks-missing warn,
//   which trains that image unmasked with a warning naming it), a mask that is not an
//   image, a mask folder that does not exist, --masks with --alpha-mask, an unknown
//   --masks-missing value, and a mask that is 0 over its whole crop.
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/dataset_test_util.h"
#include "tests/e2e/train_fixture.h"
#include "tests/test_util.h"

static const char *bin;
static char dir[64] = "/tmp/sq-bad-masks-XXXXXX";

static void write_mask(const char *sub, const char *name, int w, int h, uint8_t v) {
    char path[300];
    snprintf(path, sizeof path, "%s/%s", dir, sub);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", dir, sub, name);
    uint8_t *m = malloc((size_t)w * h);
    for (int i = 0; i < w * h; i++) m[i] = (i % w) < w / 2 ? v : 255;
    SQ_CHECK(stbi_write_png(path, w, h, 1, m, w), "cannot write %s", path);
    free(m);
}

// A mask folder with a good mask for each of the six images.
static void good_masks(const char *sub) {
    for (int i = 0; i < 6; i++) {
        char name[32];
        snprintf(name, sizeof name, "img%d.png", i);
        write_mask(sub, name, 64, 64, 0);
    }
}

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

// Runs train into dir/out with `extra`; expects exit 1 and one error line holding
// want and want2 (if given), and no OUT left.
static void refused(const char *out, const char *extra, const char *want, const char *want2) {
    char cmd[4096], flags[2048], path[300], *o = NULL;
    snprintf(flags, sizeof flags, "--sample-every 0 --val-every 0 --cache-dir %s/cache %s", dir, extra);
    e2e_train_cmd(cmd, sizeof cmd, bin, dir, out, 1, flags);
    int st = tu_run(cmd, &o);
    TU_CHECK(o && st == 1, "%s: exit 1 (got %d):\n%s", out, st, o ? o : "");
    const char *e = o ? strstr(o, "sd-qzo train: error: ") : NULL;
    const char *nl = e ? strchr(e, '\n') : NULL;
    TU_CHECK(e && nl && nl[1] == 0 && !strstr(e + 21, "error:"), "%s: one error line, the last:\n%s", out, o ? o : "");
    TU_CHECK(e && strstr(e, want), "%s: '%s' not in:\n%s", out, want, o ? o : "");
    if (want2) TU_CHECK(e && strstr(e, want2), "%s: '%s' not in:\n%s", out, want2, o ? o : "");
    snprintf(path, sizeof path, "%s/%s", dir, out);
    TU_CHECK(!exists(path), "%s: a refused start leaves no OUT", out);
    free(o);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: test_bad_masks SD_QZO_BINARY\n"); return 1; }
    bin = argv[1];
    if (!mkdtemp(dir)) return 1;
    e2e_make_dataset(dir);
    char flags[1024], m[300];

    // another size than its image: both files and both sizes named
    good_masks("wrong_size");
    write_mask("wrong_size", "img2.png", 32, 48, 0);
    snprintf(flags, sizeof flags, "--masks %s/wrong_size", dir);
    refused("o1", flags, "wrong_size/img2.png: mask is 32x48 but its image", "images/img2.png is 64x64");

    // a missing mask: the image and the folder named, and the option that allows it
    good_masks("missing");
    snprintf(m, sizeof m, "%s/missing/img4.png", dir);
    unlink(m);
    snprintf(flags, sizeof flags, "--masks %s/missing", dir);
    refused("o2", flags, "no mask for image", "images/img4.png");
    {
        char cmd[4096], f2[2048], *o = NULL;
        snprintf(f2, sizeof f2, "--sample-every 0 --val-every 0 --cache-dir %s/cache --masks %s/missing --masks-missing warn",
                 dir, dir);
        e2e_train_cmd(cmd, sizeof cmd, bin, dir, "o3", 1, f2);
        int st = tu_run(cmd, &o);
        TU_CHECK(st == 0, "--masks-missing warn: the run goes on (exit %d):\n%s", st, o ? o : "");
        TU_CHECK(o && strstr(o, "images/img4.png: no mask in") && strstr(o, "trains unmasked"),
                 "--masks-missing warn: a warning names the image:\n%s", o ? o : "");
        TU_CHECK(o && strstr(o, "5 of 6 images masked"), "--masks-missing warn: the count of masked images:\n%s", o ? o : "");
        free(o);
    }

    // a mask that is not an image
    good_masks("not_image");
    snprintf(m, sizeof m, "%s/not_image/img1.png", dir);
    FILE *f = fopen(m, "w");
    fputs("not a png", f);
    fclose(f);
    snprintf(flags, sizeof flags, "--masks %s/not_image", dir);
    refused("o4", flags, "not_image/img1.png: mask of", "not a decodable");

    // no such folder; both sources; an unknown --masks-missing
    snprintf(flags, sizeof flags, "--masks %s/nowhere", dir);
    refused("o5", flags, "nowhere: mask folder", NULL);
    snprintf(flags, sizeof flags, "--masks %s/missing --alpha-mask", dir);
    refused("o6", flags, "--masks and --alpha-mask exclude each other", NULL);
    snprintf(flags, sizeof flags, "--masks %s/missing --masks-missing maybe", dir);
    refused("o7", flags, "masks-missing", "maybe");

    // 0 over the whole crop: nothing to train on
    good_masks("black");
    for (int i = 0; i < 6; i++) {
        char name[32];
        snprintf(name, sizeof name, "img%d.png", i);
        snprintf(m, sizeof m, "%s/black/%s", dir, name);
        uint8_t zero[64 * 64] = {0};
        SQ_CHECK(stbi_write_png(m, 64, 64, 1, zero, 64), "cannot write %s", m);
    }
    {
        char cmd[4096], f2[2048], *o = NULL;
        snprintf(f2, sizeof f2, "--sample-every 0 --val-every 0 --cache-dir %s/cache --masks %s/black", dir, dir);
        e2e_train_cmd(cmd, sizeof cmd, bin, dir, "o8", 1, f2);
        int st = tu_run(cmd, &o);
        const char *e = o ? strstr(o, "sd-qzo train: error: ") : NULL;
        TU_CHECK(st == 1 && e && strstr(e, "black/img") && strstr(e, "0 over the whole") && strstr(e, "nothing to train on"),
                 "an all-black mask is an error naming it (exit %d):\n%s", st, o ? o : "");
        snprintf(m, sizeof m, "%s/o8/checkpoint.safetensors", dir);
        TU_CHECK(!exists(m), "no checkpoint after an all-black mask");
        free(o);
    }

    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (!tu_failures && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return tu_finish("bad masks");
}
