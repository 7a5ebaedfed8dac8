// tests/e2e/test_sample_cli.c: `sd-qzo sample` on the tiny pipeline, end to end
// through the text encoders, the sampler, the VAE and the PNG writer, against
// diffusers: given the initial latents of tools/make_sampler_fixtures.py (--latents),
// the PNGs' pixels must equal round(255 · StableDiffusion3Pipeline's image) within
// 1 level (the conditioning, here computed by sd-qzo from the prompt text, is
// what the fixture fed diffusers; --no-t5-int8, as diffusers' T5 is not int8), for
// CFG with two prompts and for no CFG. Each
// PNG carries the A1111 "parameters" text; grid.png holds them all. Also: a width
// that is not a multiple of 4 and a missing prompt are refused with an error.
// --scales: a checkpoint holding the int4 file's own scales reproduces the int4
// model exactly, whether the base is given dense (quantised on the fly) or as the
// `sd-qzo quantize` file; changed scales change the image; a checkpoint made for
// another base is refused.
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#if defined(__GNUC__)   // stb's own warnings
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#endif
#include <stb_image.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "qzo/checkpoint.h"
#include "tests/test_util.h"

static const char *PROMPT0 = "a photo of a cat sitting on a red chair";
static const char *PROMPT1 = "the quick brown fox, 4k, highly detailed!";

static int run(const char *cmd) {
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *d = malloc(*len + 1);
    if (fread(d, 1, *len, f) != *len) { free(d); d = NULL; }
    fclose(f);
    return d;
}

// The "parameters" tEXt chunk's text (NULL if none).
static char *parameters(const uint8_t *png, size_t len) {
    for (size_t off = 8; off + 12 <= len;) {
        uint32_t n = (uint32_t)png[off] << 24 | (uint32_t)png[off + 1] << 16 | (uint32_t)png[off + 2] << 8 | png[off + 3];
        if (off + 12 + n > len) break;
        if (!memcmp(png + off + 4, "tEXt", 4) && n > 11 && !memcmp(png + off + 8, "parameters", 11)) {
            char *t = malloc(n - 11 + 1);
            memcpy(t, png + off + 8 + 11, n - 11);
            t[n - 11] = 0;
            return t;
        }
        off += 12 + n;
    }
    return NULL;
}

// Writes fixture tensor `key` as the 'latents' tensor of a new file.
static void write_latents(sq_safetensors *fx, const char *key, const char *path) {
    const sq_st_entry *e = sq_st_find(fx, key);
    SQ_CHECK(e != NULL, "fixture lacks %s", key);
    sq_st_tensor_desc d = {.name = "latents", .dtype = e->dtype, .ndim = e->ndim, .data = e->data};
    memcpy(d.shape, e->shape, sizeof e->shape);
    SQ_CHECK(sq_st_write(path, &d, 1, NULL, 0) == SQ_OK, "%s", sq_error_message());
}

// Image k of the run vs image `b` of fixture `key` (B,3,H,W) floats.
static void check_png(const char *dir, int k, unsigned seed, sq_safetensors *fx, const char *key, int b,
                      const char *want_text) {
    char path[256];
    snprintf(path, sizeof path, "%s/%05d_%u.png", dir, k, seed);
    size_t len;
    uint8_t *png = read_file(path, &len);
    TU_CHECK(png != NULL, "%s not written", path);
    if (!png) return;
    int w, h, c;
    uint8_t *px = stbi_load_from_memory(png, (int)len, &w, &h, &c, 3);
    const sq_st_entry *e = sq_st_find(fx, key);
    int H = (int)e->shape[2], W = (int)e->shape[3];
    TU_CHECK(px && w == W && h == H, "%s: %dx%d, want %dx%d", path, w, h, W, H);
    if (px && w == W && h == H) {
        const float *ref = (const float *)e->data + (int64_t)b * 3 * H * W;
        int worst = 0;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                for (int ch = 0; ch < 3; ch++) {
                    int want = (int)rintf(ref[(ch * H + y) * W + x] * 255.0f);
                    int d = abs((int)px[(y * W + x) * 3 + ch] - want);
                    if (d > worst) worst = d;
                }
        printf("  %s: max pixel difference to diffusers %d/255\n", path, worst);
        TU_CHECK(worst <= 1, "%s: pixels differ from diffusers by up to %d levels", path, worst);
    }
    stbi_image_free(px);
    char *text = parameters(png, len);
    TU_CHECK(text && !strcmp(text, want_text), "%s parameters:\n%s\nwant:\n%s", path, text ? text : "(none)", want_text);
    free(text);
    free(png);
}

// A scales checkpoint for the int4 file q: its scales times `factor`, for base hash `sha`.
static void write_checkpoint(const char *qpath, const char *path, float factor, const char *sha) {
    sq_safetensors *q;
    SQ_CHECK(sq_st_open(&q, qpath) == SQ_OK, "%s", sq_error_message());
    int n = 0, total = sq_st_count(q);
    sq_named_scales *named = calloc((size_t)total, sizeof *named);
    sq_tensor *ts = calloc((size_t)total, sizeof *ts);
    for (int i = 0; i < total; i++) {
        const sq_st_entry *e = sq_st_at(q, i);
        size_t l = strlen(e->name);
        if (l < 14 || strcmp(e->name + l - 14, ".weight.scales")) continue;
        SQ_CHECK(sq_tensor_alloc(&ts[n], SQ_F32, SQ_CPU, e->ndim, e->shape) == SQ_OK && sq_st_load(q, e->name, &ts[n]) == SQ_OK,
                 "%s", sq_error_message());
        float *d = ts[n].data;
        for (int64_t j = 0; j < sq_tensor_numel(&ts[n]); j++) d[j] *= factor;
        named[n] = (sq_named_scales){e->name, &ts[n]};
        n++;
    }
    sq_checkpoint_info info = {.group_size = atoi(sq_st_metadata(q, "sd_qzo.group_size"))};
    snprintf(info.base_sha256, sizeof info.base_sha256, "%s", sha ? sha : sq_st_metadata(q, "sd_qzo.source_sha256"));
    sq_qzo_config_defaults(&info.config);
    sq_qzo_state_init(&info.state);
    TU_CHECK(n > 0 && sq_checkpoint_save(path, named, n, &info) == SQ_OK, "checkpoint: %s", sq_error_message());
    for (int i = 0; i < n; i++) sq_tensor_free(&ts[i]);
    free(ts);
    free(named);
    sq_st_close(q);
}

// Decoded pixels of two PNGs equal (their text chunks may differ).
static bool same_pixels(const char *a, const char *b) {
    int wa = 0, ha = 0, wb = 0, hb = 0, c;
    uint8_t *pa = stbi_load(a, &wa, &ha, &c, 3), *pb = stbi_load(b, &wb, &hb, &c, 3);
    bool same = pa && pb && wa == wb && ha == hb && !memcmp(pa, pb, (size_t)wa * ha * 3);
    stbi_image_free(pa);
    stbi_image_free(pb);
    return same;
}

static void test_scales(const char *bin, const char *pipe, const char *dir) {
    char q[160], ck1[160], ck2[160], ck3[160], cmd[4096], a[200], b[200];
    snprintf(q, sizeof q, "%s/int4.safetensors", dir);
    snprintf(cmd, sizeof cmd, "%s quantize --model %s --out %s --group-size 32 >/dev/null", bin, pipe, q);
    TU_CHECK(run(cmd) == 0, "quantize failed");
    snprintf(ck1, sizeof ck1, "%s/same.safetensors", dir);
    snprintf(ck2, sizeof ck2, "%s/scaled.safetensors", dir);
    snprintf(ck3, sizeof ck3, "%s/other_base.safetensors", dir);
    write_checkpoint(q, ck1, 1.0f, NULL);
    write_checkpoint(q, ck2, 1.1f, NULL);
    write_checkpoint(q, ck3, 1.0f, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    const char *common = "--prompt 'a red chair' --steps 3 --cfg 2 --width 16 --height 16 --seed 5 --max-sequence-length 32";
    const char *runs[4][2] = {{"--transformer", q}, {"--scales", ck1}, {"--transformer", q}, {"--scales", ck3}};
    for (int r = 0; r < 4; r++) {
        char extra[512];
        if (r == 2) snprintf(extra, sizeof extra, "--transformer %s --scales %s", q, ck2);
        else snprintf(extra, sizeof extra, "%s %s", runs[r][0], runs[r][1]);
        snprintf(cmd, sizeof cmd, "%s sample --model %s %s %s --out %s/s%d >/dev/null 2>%s/s%d.err", bin, pipe, common, extra,
                 dir, r, dir, r);
        printf("$ %s\n", cmd);
        int rc = run(cmd);
        TU_CHECK(r == 3 ? rc == 1 : rc == 0, "--scales run %d exit status %d", r, rc);
    }
    snprintf(a, sizeof a, "%s/s0/00000_5.png", dir);
    snprintf(b, sizeof b, "%s/s1/00000_5.png", dir);
    TU_CHECK(same_pixels(a, b), "dense base + its own int4 scales differs from the int4 file");
    snprintf(cmd, sizeof cmd, "test -z \"$(ls %s/s1 | grep -v '\\.png$')\"", dir);
    TU_CHECK(run(cmd) == 0, "the temporary int4 file was left in the output folder");
    snprintf(b, sizeof b, "%s/s2/00000_5.png", dir);
    TU_CHECK(!same_pixels(a, b), "scales x1.1 left the image unchanged");
    size_t lb;
    uint8_t *y = read_file(b, &lb);
    char *text = y ? parameters(y, lb) : NULL;
    TU_CHECK(text && strstr(text, ", Scales: scaled.safetensors"), "parameters lack the scales file: %s", text ? text : "");
    free(text);
    free(y);
    snprintf(cmd, sizeof cmd, "grep -q 'another base model' %s/s3.err", dir);
    TU_CHECK(run(cmd) == 0, "scales of another base: refusal does not say why");
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: test_sample_cli SD_QZO_BINARY\n"); return 1; }
    const char *bin = argv[1];
    char dir[64] = "/tmp/sq-e2e-sample-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char fxp[1024], pipe[1024], lat[128], prompts[128], out[128], cmd[4096];
    snprintf(fxp, sizeof fxp, "%s/sampler/tiny.safetensors", tu_fixtures_dir());
    snprintf(pipe, sizeof pipe, "%s/pipeline/tiny", tu_fixtures_dir());
    sq_safetensors *fx;
    if (sq_st_open(&fx, fxp) != SQ_OK) { fprintf(stderr, "%s\n", sq_error_message()); return 1; }

    // CFG: two prompts, one image each, guidance 4.5, 32x16, 5 steps
    snprintf(lat, sizeof lat, "%s/cfg_latents.safetensors", dir);
    write_latents(fx, "cfg.init", lat);
    snprintf(prompts, sizeof prompts, "%s/prompts.txt", dir);
    FILE *f = fopen(prompts, "w");
    fprintf(f, "# comment lines and empty lines are skipped\n%s\n\n%s\n", PROMPT0, PROMPT1);
    fclose(f);
    snprintf(out, sizeof out, "%s/cfg", dir);
    snprintf(cmd, sizeof cmd, "%s sample --model %s --prompts %s --cfg 4.5 --steps 5 --width 32 --height 16 --seed 3 "
             "--max-sequence-length 32 --no-t5-int8 --latents %s --device cpu --out %s", bin, pipe, prompts, lat, out);
    printf("$ %s\n", cmd);
    TU_CHECK(run(cmd) == 0, "sample with CFG failed");
    char want[512];
    snprintf(want, sizeof want, "%s\nSteps: 5, Sampler: Euler (flow), CFG scale: 4.5, Seed: 3, Size: 32x16, Model: tiny", PROMPT0);
    check_png(out, 0, 3, fx, "cfg.image", 0, want);
    snprintf(want, sizeof want, "%s\nSteps: 5, Sampler: Euler (flow), CFG scale: 4.5, Seed: 4, Size: 32x16, Model: tiny", PROMPT1);
    check_png(out, 1, 4, fx, "cfg.image", 1, want);
    // the grid: 2 images side by side with an 8-pixel gap
    char gp[256];
    snprintf(gp, sizeof gp, "%s/grid.png", out);
    int gw = 0, gh = 0, gc;
    uint8_t *g = stbi_load(gp, &gw, &gh, &gc, 3);
    TU_CHECK(g && gw == 2 * 32 + 8 && gh == 16, "grid.png %dx%d, want 72x16", gw, gh);
    stbi_image_free(g);

    // no CFG: guidance 1, 16x16, 4 steps, one prompt (a negative prompt is recorded but unused)
    snprintf(lat, sizeof lat, "%s/nocfg_latents.safetensors", dir);
    write_latents(fx, "nocfg.init", lat);
    snprintf(out, sizeof out, "%s/nocfg", dir);
    snprintf(cmd, sizeof cmd, "%s sample --model %s --prompt '%s' --negative-prompt 'blurry, low quality' --cfg 1 "
             "--steps 4 --width 16 --height 16 --seed 11 --max-sequence-length 32 --no-t5-int8 --latents %s --device cpu --out %s",
             bin, pipe, PROMPT0, lat, out);
    printf("$ %s\n", cmd);
    TU_CHECK(run(cmd) == 0, "sample without CFG failed");
    snprintf(want, sizeof want, "%s\nNegative prompt: blurry, low quality\nSteps: 4, Sampler: Euler (flow), CFG scale: 1, "
             "Seed: 11, Size: 16x16, Model: tiny", PROMPT0);
    check_png(out, 0, 11, fx, "nocfg.image", 0, want);

    // refusals: one line on stderr, non-zero exit, nothing written
    snprintf(out, sizeof out, "%s/bad", dir);
    snprintf(cmd, sizeof cmd, "%s sample --model %s --prompt x --width 18 --height 16 --out %s 2>%s/err.txt", bin, pipe,
             out, dir);
    TU_CHECK(run(cmd) == 1, "odd width accepted");
    snprintf(cmd, sizeof cmd, "grep -q 'multiples of 4' %s/err.txt", dir);
    TU_CHECK(run(cmd) == 0, "odd width: message does not say what is wrong");
    snprintf(cmd, sizeof cmd, "%s sample --model %s --out %s 2>/dev/null", bin, pipe, out);
    TU_CHECK(run(cmd) == 1, "missing prompt accepted");
    struct stat st;
    TU_CHECK(stat(out, &st) != 0, "a refused run created its output folder");

    test_scales(bin, pipe, dir);

    sq_st_close(fx);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    run(cmd);
    return tu_finish("test_sample_cli");
}
