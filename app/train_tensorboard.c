// app/train_tensorboard.c: see app/train_tensorboard.h.
#include "app/train_tensorboard.h"

#include <dirent.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"

#define EVENTS_PREFIX "events.out.tfevents."

// A fresh run (also one with --overwrite) replaces log.jsonl; the event files of
// the run it replaces would otherwise be merged into its charts.
static int remove_old_event_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return SQ_OK;
    struct dirent *e;
    int n = 0, rc = SQ_OK;
    while ((e = readdir(d)) && rc == SQ_OK) {
        if (strncmp(e->d_name, EVENTS_PREFIX, sizeof EVENTS_PREFIX - 1)) continue;
        char path[1400];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) != 0) rc = sq_error_errno("cannot remove the earlier run's %s", path);
        else n++;
    }
    closedir(d);
    if (n) sq_log_info("removed %d TensorBoard event file(s) of the run this one replaces in %s", n, dir);
    return rc;
}

int sd_train_tb_open(sd_train_tb *tb, const char *dir, int64_t resume_step, bool gpu) {
    memset(tb, 0, sizeof *tb);
    tb->gpu = gpu;
    if (resume_step < 0 && remove_old_event_files(dir) != SQ_OK) return sq_error_context("--tensorboard");
    if (sq_tb_open(&tb->w, dir, "sd-qzo") != SQ_OK) return sq_error_context("--tensorboard");
    tb->open = true;
    if (resume_step >= 0 && sq_tb_session_start(&tb->w, sq_tb_wall_time(), resume_step + 1) != SQ_OK) {
        sd_train_tb_close(tb);
        return sq_error_context("--tensorboard");
    }
    sq_log_info("TensorBoard: %s (tensorboard --logdir %s)", tb->w.path, dir);
    return SQ_OK;
}

typedef struct {
    const char *tag;
    size_t offset;
} scalar_tag;

#define TAG(tag, f) {tag, offsetof(sd_step_record, f)}
#define RTAG(name, i) {"train/perturbation_rel/" name, offsetof(sd_step_record, rel_perturb) + (i) * sizeof(double)}
static const scalar_tag step_tags[] = {
    TAG("train/loss", loss), TAG("train/loss_plus", loss_plus), TAG("train/loss_minus", loss_minus),
    TAG("train/d", d_raw), TAG("train/d_clipped", d_clipped), TAG("train/lr", lr),
    TAG("train/clipped_share", clipped_share), TAG("train/discarded", discarded), TAG("time/step_seconds", seconds),
};
// measured with the validation loss, also at step 0 (the untrained scales)
static const scalar_tag val_tags[] = {
    TAG("val/loss", val_loss), TAG("val/loss_ema", val_loss_ema), TAG("train/zero_share", zero_share), RTAG("attn_qkv", 0), RTAG("attn_out", 1),
    RTAG("mlp_in", 2), RTAG("mlp_out", 3), RTAG("adaln", 4),
};
_Static_assert(sizeof val_tags / sizeof val_tags[0] == 3 + sizeof((sd_step_record *)0)->rel_perturb / sizeof(double),
               "one tag per layer type");

static int write_tags(sd_train_tb *tb, double wall, const sd_step_record *r, const scalar_tag *tags, int n) {
    for (int i = 0; i < n; i++) {
        double v = *(const double *)((const char *)r + tags[i].offset);
        if (isfinite(v) && sq_tb_scalar(&tb->w, wall, r->step, tags[i].tag, (float)v) != SQ_OK) return SQ_FAIL;
    }
    return SQ_OK;
}

int sd_train_tb_record(sd_train_tb *tb, const sd_step_record *r) {
    if (!tb->open) return SQ_OK;
    double wall = sq_tb_wall_time();
    // step 0 holds no training step: its zeros (seconds, discarded) would be noise on the charts
    if (r->step > 0 && write_tags(tb, wall, r, step_tags, (int)(sizeof step_tags / sizeof step_tags[0])) != SQ_OK)
        return SQ_FAIL;
    if (write_tags(tb, wall, r, val_tags, (int)(sizeof val_tags / sizeof val_tags[0])) != SQ_OK) return SQ_FAIL;
    if (tb->gpu && sq_tb_scalar(&tb->w, wall, r->step, "gpu/memory_gib", (float)r->gpu_mem_gib) != SQ_OK) return SQ_FAIL;
    return SQ_OK;
}

int sd_train_tb_preview(sd_train_tb *tb, int64_t step, const char *png_path) {
    if (!tb->open) return SQ_OK;
    FILE *f = fopen(png_path, "rb");
    if (!f) return sq_error_errno("--tensorboard: cannot read %s", png_path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *png = n > 0 ? malloc((size_t)n) : NULL;
    bool ok = png && fread(png, 1, (size_t)n, f) == (size_t)n;
    fclose(f);
    // the size TensorBoard shows comes from the IHDR chunk: signature (8), length and type (8), then width, height
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (!ok || n < 24 || memcmp(png, sig, 8) || memcmp(png + 12, "IHDR", 4)) {
        free(png);
        return sq_errorf("--tensorboard: %s is not a PNG file", png_path);
    }
    int w = (int)((uint32_t)png[16] << 24 | (uint32_t)png[17] << 16 | (uint32_t)png[18] << 8 | png[19]);
    int h = (int)((uint32_t)png[20] << 24 | (uint32_t)png[21] << 16 | (uint32_t)png[22] << 8 | png[23]);
    int rc = sq_tb_image(&tb->w, sq_tb_wall_time(), step, "previews", w, h, png, (size_t)n);
    free(png);
    return rc;
}

void sd_train_tb_close(sd_train_tb *tb) {
    if (tb->open) sq_tb_close(&tb->w);
    memset(tb, 0, sizeof *tb);
}
