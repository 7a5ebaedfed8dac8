// tests/e2e/test_demo_features.c: the training features users expect from a
// fine-tuner, all at once, on the built-in demo model (demo/train.toml: demo/model,
// demo/finetune, demo/val) for a few steps on the CPU:
//   --ema 0.9                   the log has val_loss_ema, the checkpoint ema.* tensors,
//                               `sample --ema` and `export --ema` use them;
//   --masks DIR                 a mask per picture (left half weighted 1, right half 0):
//                               the run says so and report.html names the masks;
//   --train-blocks 0 --train-layers attn,adaln
//                               the trainable-scale count is printed and report.html
//                               names the selection;
//   --tensorboard               an event file whose records parse (CRCs checked) and
//                               hold train/loss, val/loss, val/loss_ema and a preview;
// and the closing timing summary, in the output and in report.html.
#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/safetensors.h"
#include "qzo/checkpoint.h"
#include "samples/png.h"
#include "tests/e2e/train_fixture.h"
#include "tests/tensorboard_reader.h"
#include "tests/test_util.h"

// A 64x64 mask: white (weight 1) on the left half, black (0) on the right.
static void write_mask(const char *path) {
    static uint8_t rgb[64 * 64 * 3];
    for (int i = 0; i < 64; i++)
        for (int j = 0; j < 64; j++) memset(rgb + (i * 64 + j) * 3, j < 32 ? 255 : 0, 3);
    SQ_CHECK(sd_png_write(path, rgb, 64, 64, NULL, NULL) == SQ_OK, "%s", sq_error_message());
}

// The first file in dir whose name starts with prefix, into out ("" when none).
static void find_prefixed(const char *dir, const char *prefix, char *out, size_t size) {
    out[0] = 0;
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, prefix, strlen(prefix))) {
            snprintf(out, size, "%s/%s", dir, e->d_name);
            break;
        }
    closedir(d);
}

static bool has_tag(const tbr_file *r, const char *tag, bool image) {
    for (int i = 0; i < r->count; i++)
        if (r->ev[i].has_summary && !strcmp(r->ev[i].tag, tag) && (image ? r->ev[i].has_image : r->ev[i].has_simple))
            return true;
    return false;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: test_demo_features SD_QZO_BINARY SOURCE_ROOT\n"); return 1; }
    // absolute: the commands run from the source root (demo/train.toml's paths are relative)
    char bin[4096], root[4096];
    SQ_CHECK(realpath(argv[1], bin) && realpath(argv[2], root), "%s or %s: no such path", argv[1], argv[2]);
    char dir[] = "/tmp/sq_demo_features_XXXXXX";
    SQ_CHECK(mkdtemp(dir), "mkdtemp");
    char masks[256], path[4400], cmd[16384], *out = NULL;
    snprintf(masks, sizeof masks, "%s/masks", dir);
    mkdir(masks, 0755);
    char fin[4200];
    snprintf(fin, sizeof fin, "%s/demo/finetune", root);
    DIR *d = opendir(fin);
    SQ_CHECK(d, "%s: %s", fin, "cannot open");
    int n_masks = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l > 4 && !strcmp(e->d_name + l - 4, ".png")) {
            snprintf(path, sizeof path, "%s/%s", masks, e->d_name);
            write_mask(path);
            n_masks++;
        }
    }
    closedir(d);
    TU_CHECK(n_masks >= 8, "a mask for each of the demo's %d pictures", n_masks);

    // demo/train.toml's paths are relative to the source root: run from there
    snprintf(cmd, sizeof cmd,
             "cd '%s' && '%s' train --config demo/train.toml --output %s/run --cache-dir %s/cache --steps 4 --val-every 4 "
             "--queries 2 --sample-every 4 --sample-steps 2 --ema 0.9 --masks %s --train-blocks 0 --train-layers attn,adaln "
             "--tensorboard --threads 2 2>&1",
             root, bin, dir, dir, masks);
    int rc = tu_run(cmd, &out);
    TU_CHECK(rc == 0, "train with --ema --masks --train-blocks --train-layers --tensorboard on the demo exits 0: %s",
             out ? out : "");
    if (out) {
        TU_CHECK(strstr(out, "EMA of the") != NULL, "the memory line states the EMA");
        TU_CHECK(strstr(out, "trainable scales") != NULL, "the trainable-scale count is printed");
        TU_CHECK(strstr(out, "loss masks") != NULL, "the encode phase counts the loss masks");
        TU_CHECK(strstr(out, "Time: 4 steps") != NULL, "the closing timing summary is printed");
    }
    free(out);

    snprintf(path, sizeof path, "%s/run/log.jsonl", dir);
    char *log = e2e_read_all(path);
    TU_CHECK(log && strstr(log, "\"val_loss_ema\": 0.") && strstr(log, "\"step\": 4"), "log.jsonl: 4 steps with val_loss_ema");
    free(log);

    snprintf(path, sizeof path, "%s/run/report.html", dir);
    char *rep = e2e_read_all(path);
    TU_CHECK(rep && strstr(rep, "Masked loss") && strstr(rep, masks), "report.html names the masks");
    TU_CHECK(rep && strstr(rep, "EMA of the trained scales"), "report.html reports the EMA");
    TU_CHECK(rep && strstr(rep, "--train-blocks 0") && strstr(rep, "--train-layers attn,adaln"),
             "report.html reports which layers trained");
    TU_CHECK(rep && strstr(rep, "Time: 4 steps"), "report.html holds the timing summary");
    free(rep);

    // the checkpoint: EMA tensors beside the scales (every layer's scales; the frozen
    // layers' are the base's: tests/unit/test_train_selection.c)
    snprintf(path, sizeof path, "%s/run/checkpoint.safetensors", dir);
    sq_safetensors *st = NULL;
    TU_CHECK(sq_st_open(&st, path) == SQ_OK, "checkpoint opens: %s", sq_error_message());
    int ema = 0, scales = 0;
    for (int i = 0; st && i < sq_st_count(st); i++) {
        const char *name = sq_st_at(st, i)->name;
        if (!strncmp(name, SQ_CHECKPOINT_EMA_PREFIX, strlen(SQ_CHECKPOINT_EMA_PREFIX))) ema++;
        else scales++;
    }
    TU_CHECK(ema > 0 && scales > ema, "the checkpoint holds %d EMA tensors beside %d scale tensors", ema, scales);
    if (st) sq_st_close(st);

    // TensorBoard: the records parse and hold the run's tags
    char run[300], ev[600];
    snprintf(run, sizeof run, "%s/run", dir);
    find_prefixed(run, "events.out.tfevents.", ev, sizeof ev);
    TU_CHECK(ev[0], "an event file in OUT");
    tbr_file r;
    if (ev[0] && tbr_read(ev, &r)) {
        TU_CHECK(!r.bad, "event file parses: %s", r.why);
        TU_CHECK(has_tag(&r, "train/loss", false) && has_tag(&r, "val/loss", false) && has_tag(&r, "val/loss_ema", false),
                 "train/loss, val/loss and val/loss_ema are logged");
        TU_CHECK(has_tag(&r, "previews", true), "the preview grid is logged as an image");
        tbr_free(&r);
    }

    // sample and export with the EMA
    snprintf(cmd, sizeof cmd,
             "cd '%s' && '%s' sample --model demo/model --scales %s/run/checkpoint.safetensors --ema --prompt 'a vermilion "
             "circle' --steps 2 --width 64 --height 64 --t5-max-length 32 --device cpu --out %s/samples 2>&1",
             root, bin, dir, dir);
    rc = tu_run(cmd, &out);
    TU_CHECK(rc == 0, "sample --ema: %s", out ? out : "");
    free(out);
    snprintf(cmd, sizeof cmd,
             "cd '%s' && '%s' export --model demo/model --scales %s/run/checkpoint.safetensors --ema --format single "
             "--out %s/export 2>&1",
             root, bin, dir, dir);
    rc = tu_run(cmd, &out);
    TU_CHECK(rc == 0 && out && strstr(out, "EMA of the scales"), "export --ema: %s", out ? out : "");
    free(out);

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return tu_finish("test_demo_features");
}
