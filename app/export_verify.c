// app/export_verify.c: `sd-qzo export --verify` (app/export_verify.h). Runs the
// sample command itself (app/commands.h) so the check goes through exactly the path
// a user's `sd-qzo sample --transformer FILE` takes: the reference from the base +
// checkpoint (the int4 model training evaluated), then each exported file, all with
// seed 1, then compares the decoded PNGs pixel by pixel.
#include "app/export_verify.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/commands.h"
#include "core/error.h"
#include "core/log.h"
#include "core/path.h"
#include "datasets/transform.h"

// scales NULL: the exported file alone; ema: the checkpoint's EMA, as `export --ema` wrote it.
static int sample_into(const sd_export_verify_options *v, const char *transformer, const char *scales, bool ema,
                       const char *out) {
    char steps[16], size[16];
    snprintf(steps, sizeof steps, "%d", v->steps);
    snprintf(size, sizeof size, "%d", v->size);
    char *argv[32];
    int n = 0;
    argv[n++] = "sample";
    argv[n++] = "--model", argv[n++] = (char *)v->pipeline;
    argv[n++] = "--transformer", argv[n++] = (char *)transformer;
    if (scales) argv[n++] = "--scales", argv[n++] = (char *)scales;
    if (scales && ema) argv[n++] = "--ema";
    argv[n++] = "--prompt", argv[n++] = (char *)v->prompt;
    argv[n++] = "--steps", argv[n++] = steps;
    argv[n++] = "--width", argv[n++] = size;
    argv[n++] = "--height", argv[n++] = size;
    argv[n++] = "--seed", argv[n++] = "1";
    argv[n++] = "--device", argv[n++] = (char *)(v->device ? v->device : "auto");
    argv[n++] = "--out", argv[n++] = (char *)out;
    argv[n] = NULL;
    if (sq_cmd_sample(n, argv) != SQ_OK) return sq_error_context("--verify: sampling from %s", transformer);
    return SQ_OK;
}

static int compare(const char *a_dir, const char *b_dir, double *max_diff, double *mean_diff) {
    char a[4400], b[4400];
    snprintf(a, sizeof a, "%s/00000_1.png", a_dir);
    snprintf(b, sizeof b, "%s/00000_1.png", b_dir);
    uint8_t *pa = NULL, *pb = NULL;
    int wa, ha, wb, hb;
    int rc = sd_image_decode_rgb(a, &pa, &wa, &ha);
    if (rc == SQ_OK) rc = sd_image_decode_rgb(b, &pb, &wb, &hb);
    if (rc == SQ_OK && (wa != wb || ha != hb)) rc = sq_errorf("--verify: %s and %s differ in size", a, b);
    if (rc == SQ_OK) {
        double sum = 0, mx = 0;
        size_t n = (size_t)wa * (size_t)ha * 3;
        for (size_t i = 0; i < n; i++) {
            double d = fabs((double)pa[i] - pb[i]);
            sum += d;
            if (d > mx) mx = d;
        }
        *max_diff = mx;
        *mean_diff = sum / (double)n;
    }
    free(pa);
    free(pb);
    return rc;
}

int sd_export_verify(const sd_export_options *o, const sd_export_verify_options *v, sd_export_verify_result *r) {
    memset(r, 0, sizeof *r);
    if (!v->pipeline || !v->pipeline[0]) return sq_errorf("--verify needs the text encoders and VAE: pass --pipeline DIR");
    char name[256], dir[4200], ref[4300], out[4300], file[4600];
    const char *slash = NULL;
    if (o->name && o->name[0]) snprintf(name, sizeof name, "%s", o->name);
    else {
        char real[4096];
        const char *p = realpath(o->out_dir, real) ? real : o->out_dir;
        slash = strrchr(p, '/');
        snprintf(name, sizeof name, "%s", slash && slash[1] ? slash + 1 : "model");
    }
    snprintf(dir, sizeof dir, "%s/verify", o->out_dir);
    snprintf(ref, sizeof ref, "%s/training-scales", dir);
    if (sq_mkdirs(dir) != SQ_OK) return SQ_FAIL;
    sq_log_info("--verify: sampling '%s' (%d steps, %d px, seed 1) from %s + %s", v->prompt, v->steps, v->size, o->model, o->scales);
    if (sample_into(v, o->model, o->scales, o->ema, ref) != SQ_OK) return SQ_FAIL;
    static const char *tags[3] = {"diffusers", "single", "gguf"};
    for (int f = 0; f < 3; f++) {
        if (!(o->formats & (1 << f))) continue;
        if (f == 0) snprintf(file, sizeof file, "%s/transformer", o->out_dir);
        else snprintf(file, sizeof file, "%s/%s.%s", o->out_dir, name, f == 1 ? "safetensors" : "gguf");
        snprintf(out, sizeof out, "%s/%s", dir, tags[f]);
        if (sample_into(v, file, NULL, false, out) != SQ_OK) return SQ_FAIL;
        if (compare(ref, out, &r->max_diff[f], &r->mean_diff[f]) != SQ_OK) return SQ_FAIL;
        r->done[f] = true;
        printf("verify: %-9s %s vs base + scales: max |diff| %.0f/255, mean %.3f/255%s\n", tags[f], file, r->max_diff[f],
               r->mean_diff[f], r->mean_diff[f] > 8.0 ? "  <- much larger than rounding: check this file" : "");
    }
    printf("verify: images in %s/\n", dir);
    return SQ_OK;
}
