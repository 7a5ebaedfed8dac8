// tests/e2e/test_gguf_base.c: a GGUF as the base of `sample`, `train` and `export`,
// on the tiny pipeline's MMDiT made into GGUFs by the gguf Python package
// (tests/fixtures/gguf/, tools/make_gguf_fixtures.py):
// 1. `sample --transformer tiny_q4_0.gguf` (an int4 base at group 32) gives the same
//    pixels as `sample --transformer tiny_q4_0_values.safetensors`, a dense single
//    file holding the values the GGUF stands for (gguf's dequantisation with
//    mmdit/gguf_base.h's sign rule); likewise tiny_q8_0.gguf (dequantised, dense);
// 2. `train --model tiny_q4_0.gguf` runs (group 32) and its info lines say what
//    the GGUF became; a group size other than 32 is refused with a message;
// 3. `export --model tiny_q4_0.gguf --scales CKPT --format gguf --verify` and
//    `--format single --verify` write files whose samples are within a few levels
//    of the base + scales image (--verify samples each exported file as a base);
// 4. `sd-qzo info` lists a GGUF's tensors.
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "datasets/transform.h"
#include "tests/e2e/train_fixture.h"
#include "tests/test_util.h"

static const char *bin;
static char dir[64];

static void sample(const char *transformer, const char *scales, const char *out) {
    char cmd[4096], *o = NULL;
    snprintf(cmd, sizeof cmd,
             "'%s' sample --model '%s/pipeline/tiny' --transformer '%s' %s%s%s --prompt 'a red square on grey' --steps 3 "
             "--width 64 --height 64 --seed 5 --device cpu --out '%s'",
             bin, tu_fixtures_dir(), transformer, scales ? "--scales '" : "", scales ? scales : "", scales ? "'" : "", out);
    int rc = tu_run(cmd, &o);
    TU_CHECK(rc == 0, "sample from %s failed: %s", transformer, o ? o : "");
    free(o);
}

// max |a - b| over the two samples' pixels (-1 when one is missing)
static int pixel_diff(const char *a_dir, const char *b_dir, double *mean) {
    char a[400], b[400];
    snprintf(a, sizeof a, "%s/00000_5.png", a_dir);
    snprintf(b, sizeof b, "%s/00000_5.png", b_dir);
    uint8_t *pa = NULL, *pb = NULL;
    int wa, ha, wb, hb, mx = -1;
    if (sd_image_decode_rgb(a, &pa, &wa, &ha) == SQ_OK && sd_image_decode_rgb(b, &pb, &wb, &hb) == SQ_OK && wa == wb && ha == hb) {
        double sum = 0, sq = 0;
        mx = 0;
        for (int i = 0; i < wa * ha * 3; i++) {
            int d = abs((int)pa[i] - (int)pb[i]);
            if (d > mx) mx = d;
            sum += d;
            sq += pa[i];
        }
        if (mean) *mean = sum / (wa * ha * 3);
        TU_CHECK(sq > 0, "%s is all black", a);
    }
    free(pa);
    free(pb);
    return mx;
}

static void test_sample_same_image(const char *tag) {
    char g[512], v[512], a[256], b[256];
    snprintf(g, sizeof g, "%s/gguf/tiny_%s.gguf", tu_fixtures_dir(), tag);
    snprintf(v, sizeof v, "%s/gguf/tiny_%s_values.safetensors", tu_fixtures_dir(), tag);
    snprintf(a, sizeof a, "%s/%s_gguf", dir, tag);
    snprintf(b, sizeof b, "%s/%s_st", dir, tag);
    sample(g, NULL, a);
    sample(v, NULL, b);
    int d = pixel_diff(a, b, NULL);
    printf("%s: GGUF base vs the safetensors of its values: max pixel difference %d\n", tag, d);
    TU_CHECK(d == 0, "%s: the GGUF base samples another image (max diff %d)", tag, d);
}

static double verify_line(const char *out, const char *what, double *mean) {
    const char *l = strstr(out, what);
    double mx = -1;
    *mean = -1;
    if (l) {
        const char *m = strstr(l, "max |diff| ");
        if (m) sscanf(m, "max |diff| %lf/255, mean %lf/255", &mx, mean);
    }
    return mx;
}

static void test_train_export(void) {
    e2e_make_dataset(dir);
    char g[512], cmd[4096], *out = NULL, extra[700];
    snprintf(g, sizeof g, "%s/gguf/tiny_q4_0.gguf", tu_fixtures_dir());
    // a group size the GGUF is not in
    snprintf(cmd, sizeof cmd,
             "'%s' train --model '%s' --encoders '%s/pipeline/tiny' --images %s/images --captions %s/captions.txt --output %s/bad "
             "--resolution 64 --steps 2 --group-size 64 --t5-max-length 32 --batch-size 2 --device cpu --threads 1",
             bin, g, tu_fixtures_dir(), dir, dir, dir);
    int rc = tu_run(cmd, &out);
    TU_CHECK(rc != 0 && out && strstr(out, "group size 32") && strstr(out, "--group-size 32"), "group 64 on a Q4_0 GGUF: %s",
             out ? out : "");
    free(out);
    snprintf(extra, sizeof extra, "--encoders '%s/pipeline/tiny'", tu_fixtures_dir());
    // e2e_train_cmd's --model is the pipeline: replace it with the GGUF
    snprintf(cmd, sizeof cmd,
             "'%s' train --model '%s' %s --images %s/images --captions %s/captions.txt --output %s/run --resolution 64 "
             "--steps 2 --group-size 32 --t5-max-length 32 --batch-size 2 --device cpu --threads 1",
             bin, g, extra, dir, dir, dir);
    rc = tu_run(cmd, &out);
    TU_CHECK(rc == 0, "train on the GGUF: %s", out ? out : "");
    TU_CHECK(out && strstr(out, "Q4_0 tensors carried over exactly as int4 at group 32") && strstr(out, "have a negative scale"),
             "train says what the GGUF became: %s", out ? out : "");
    free(out);
    char ckpt[256];
    snprintf(ckpt, sizeof ckpt, "%s/run/checkpoint.safetensors", dir);
    const char *formats[2] = {"gguf", "single"};
    for (int f = 0; f < 2; f++) {
        snprintf(cmd, sizeof cmd,
                 "'%s' export --model '%s' --scales '%s' --out %s/exp_%s --name ft --format %s --verify --pipeline '%s/pipeline/tiny' "
                 "--verify-size 64 --verify-steps 2 --device cpu",
                 bin, g, ckpt, dir, formats[f], formats[f], tu_fixtures_dir());
        rc = tu_run(cmd, &out);
        double mean, mx = verify_line(out ? out : "", f == 0 ? "verify: gguf" : "verify: single", &mean);
        printf("export --format %s --verify: max %.0f/255, mean %.3f/255\n", formats[f], mx, mean);
        TU_CHECK(rc == 0 && mx >= 0 && mx <= 8 && mean >= 0 && mean < 0.5, "export %s --verify: rc %d, %s", formats[f], rc,
                 out ? out : "");
        free(out);
    }
}

static void test_info(void) {
    char cmd[1024], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' info '%s/gguf/tiny_q4_0.gguf'", bin, tu_fixtures_dir());
    int rc = tu_run(cmd, &out);
    TU_CHECK(rc == 0 && out && strstr(out, "GGUF version 3") && strstr(out, "architecture sd3") && strstr(out, "59 tensors") &&
                 strstr(out, "joint_blocks.0.x_block.attn.qkv.weight") && strstr(out, "Q4_0  [96, 32]"),
             "info on a GGUF: %s", out ? out : "");
    free(out);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_gguf_base SD_QZO_BINARY\n");
        return 1;
    }
    bin = argv[1];
    snprintf(dir, sizeof dir, "/tmp/sq_gguf_base_XXXXXX");
    SQ_CHECK(mkdtemp(dir), "mkdtemp");
    test_info();
    test_sample_same_image("q4_0");
    test_sample_same_image("q8_0");
    test_train_export();
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    TU_CHECK(system(cmd) == 0, "cleanup");
    return tu_finish("gguf_base");
}
