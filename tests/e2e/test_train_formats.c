// tests/e2e/test_train_formats.c: `sd-qzo train` on the data set formats users bring,
// on the CPU with the tiny pipeline of tests/fixtures/pipeline:
//   1. a training folder of WebP images (lossy, lossless, both with alpha, and an
//      animation: the fixtures of tests/fixtures/webp) plus a PNG in a subfolder,
//      captioned by a Hugging Face metadata.jsonl (the subfolder image named
//      "sub/red.png", read with --recursive; .txt files beside the images are
//      ignored), and a validation folder of WebP images captioned by a
//      metadata.csv with quoted fields: the run trains, logs finite validation
//      losses, warns about the animation, and says which caption files it read;
//   2. --caption-ext .caption (and caption_ext in a --config file): kohya's other
//      sidecar extension is read instead of .txt.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "tests/e2e/train_fixture.h"
#include "tests/test_util.h"

static const char *bin;
static char tmp[64] = "/tmp/sq-e2e-formats-XXXXXX";

static void copy_fixture(const char *name, const char *to) {
    char from[512];
    snprintf(from, sizeof from, "%s/webp/%s", tu_fixtures_dir(), name);
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    SQ_CHECK(a && b, "copy %s -> %s", from, to);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0) fwrite(buf, 1, n, b);
    fclose(a);
    fclose(b);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    SQ_CHECK(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static const char *webps[] = {"lossy", "lossless", "alpha_lossless", "alpha_lossy", "animated"};

static void make_data(void) {
    char p[256];
    snprintf(p, sizeof p, "%s/images", tmp);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/images/sub", tmp);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/val", tmp);
    mkdir(p, 0755);
    char sub[128];
    snprintf(sub, sizeof sub, "%s/images/sub", tmp);
    e2e_write_image(sub, "red.png", 20, 20, 200);
    char jsonl[2048] = "";
    for (int i = 0; i < 5; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s.webp", webps[i]);
        snprintf(p, sizeof p, "%s/images/%s", tmp, name);
        copy_fixture(name, p);
        snprintf(jsonl + strlen(jsonl), sizeof jsonl - strlen(jsonl),
                 "{\"file_name\": \"%s.webp\", \"text\": \"a %s picture, from jsonl\"}\n", webps[i], webps[i]);
        snprintf(p, sizeof p, "%s/images/%s.txt", tmp, webps[i]);
        write_text(p, "IGNORED sidecar caption");
    }
    strcat(jsonl, "{\"file_name\": \"sub/red.png\", \"text\": \"a red square\", \"extra\": 1}\n");
    snprintf(p, sizeof p, "%s/images/metadata.jsonl", tmp);
    write_text(p, jsonl);
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/val/v%d.webp", tmp, i);
        copy_fixture(i ? "lossy.webp" : "alpha_lossless.webp", p);
    }
    snprintf(p, sizeof p, "%s/val/metadata.csv", tmp);
    write_text(p, "file_name,text\r\nv0.webp,\"a picture, with alpha\"\r\nv1.webp,\"a \"\"lossy\"\" one\"\r\n");
}

static void run_cmd(char *cmd, size_t size, const char *images, const char *out, const char *extra) {
    snprintf(cmd, size,
             "'%s' train --model '%s/pipeline/tiny' --images %s/%s --output %s/%s --resolution 64 --no-buckets "
             "--steps 2 --group-size 32 --t5-max-length 32 --batch-size 2 --device cpu --threads 1 --sample-every 0 "
             "--save-every 2 --cache-dir %s/cache %s",
             bin, tu_fixtures_dir(), tmp, images, tmp, out, tmp, extra);
}

static void check_webp_metadata_run(void) {
    char cmd[4096], path[256], *out = NULL, extra[512];
    snprintf(extra, sizeof extra, "--recursive --val-images %s/val --val-every 2", tmp);
    run_cmd(cmd, sizeof cmd, "images", "run", extra);
    int rc = tu_run(cmd, &out);
    TU_CHECK(rc == 0, "train on WebP + metadata.jsonl exits 0 (got %d):\n%s", rc, out ? out : "");
    TU_CHECK(out && strstr(out, "animated.webp: animated WebP; only its first frame is used"),
             "the animation is announced:\n%s", out ? out : "");
    TU_CHECK(out && strstr(out, "images/metadata.jsonl (6 entries, caption key \"text\")"),
             "the training captions come from metadata.jsonl:\n%s", out ? out : "");
    TU_CHECK(out && strstr(out, "val/metadata.csv (2 entries, caption column \"text\")"),
             "the validation captions come from metadata.csv:\n%s", out ? out : "");
    TU_CHECK(out && strstr(out, ": 6 images (0 skipped)"), "6 training images (5 WebP, 1 PNG in sub/):\n%s",
             out ? out : "");
    free(out);
    snprintf(path, sizeof path, "%s/run/checkpoint.safetensors", tmp);
    struct stat st;
    TU_CHECK(stat(path, &st) == 0, "the run writes its checkpoint");
    snprintf(path, sizeof path, "%s/run/log.jsonl", tmp);
    char *log = e2e_read_all(path);
    int vals = 0;
    for (char *p = log; p && (p = strstr(p, "\"val_loss\": ")); p += 12) {
        double v = strtod(p + 12, NULL);
        if (p[12] != 'n') {
            vals++;
            TU_CHECK(isfinite(v) && v > 0, "validation loss %g is a positive number", v);
        }
    }
    TU_CHECK(vals == 2, "validation loss at steps 0 and 2 on the WebP validation set: %d values", vals);
    free(log);
}

// --caption-ext .caption: foo.caption beside foo.webp, not foo.txt.
static void check_caption_ext(void) {
    char cmd[4096], p[256], *out = NULL;
    snprintf(p, sizeof p, "%s/kohya", tmp);
    mkdir(p, 0755);
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/kohya/k%d.webp", tmp, i);
        copy_fixture(i ? "lossless.webp" : "alpha_lossy.webp", p);
        snprintf(p, sizeof p, "%s/kohya/k%d.caption", tmp, i);
        write_text(p, i ? "kohya one" : "kohya zero");
    }
    run_cmd(cmd, sizeof cmd, "kohya", "run_kohya", "");
    int rc = tu_run(cmd, &out);
    TU_CHECK(rc != 0 && out && strstr(out, "k0.txt") && strstr(out, "missing caption file"),
             "without --caption-ext the .txt files are looked for (rc %d):\n%s", rc, out ? out : "");
    free(out);
    run_cmd(cmd, sizeof cmd, "kohya", "run_kohya", "--caption-ext .caption");
    rc = tu_run(cmd, &out);
    TU_CHECK(rc == 0, "train with --caption-ext .caption exits 0 (got %d):\n%s", rc, out ? out : "");
    free(out);
    // the same setting as a run-config key
    char cfg[256], flag[300];
    snprintf(cfg, sizeof cfg, "%s/kohya.toml", tmp);
    write_text(cfg, "# kohya's sidecar extension\ncaption_ext = \"caption\"\n");
    snprintf(flag, sizeof flag, "--config %s", cfg);
    run_cmd(cmd, sizeof cmd, "kohya", "run_kohya_cfg", flag);
    rc = tu_run(cmd, &out);
    TU_CHECK(rc == 0, "train with caption_ext in --config exits 0 (got %d):\n%s", rc, out ? out : "");
    free(out);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_train_formats SD_QZO_BINARY\n");
        return 2;
    }
    bin = argv[1];
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    make_data();
    check_webp_metadata_run();
    check_caption_ext();
    if (tu_failures == 0) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    }
    return tu_finish("test_train_formats");
}
