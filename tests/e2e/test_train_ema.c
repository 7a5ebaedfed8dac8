// tests/e2e/test_train_ema.c: `sd-qzo train --ema` with --train-blocks /
// --train-layers on the CPU, the tiny SD3 pipeline of tests/fixtures/pipeline and
// the small generated data set, then `sample --ema` and `export --ema`:
//   1. a run training block 0's attention and adaLN layers with an EMA logs the
//      trainable-scale count and the EMA's memory, records the selection and the EMA
//      in run.json, logs the validation loss of both (equal at step 0), shows both in
//      report.html, and saves a checkpoint whose frozen layers keep the base's scales
//      bit for bit, whose trained layers moved, and whose EMA tensors (one per trained
//      layer) lie apart from both;
//   2. the same run stopped at step 2 and resumed to step 4 ends with the same
//      checkpoint bit for bit, EMA included;
//   3. a resume with another selection or another --ema is refused with one line,
//      leaving the checkpoint as it was;
//   4. `sample --ema` samples with the EMA; on a checkpoint without EMA it is one
//      clear line; `sample` of a subset checkpoint (its selection given in a TOML
//      config file) works;
//   5. `export --ema` writes W = EMA ⊙ codes for the trained layers (exactly, fp32) and
//      the plain export's weights for the frozen ones; without EMA it is refused and
//      writes nothing.
#include <dirent.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "tests/e2e/train_fixture.h"
#include "tests/test_util.h"

static const char *bin;
static char tmp[64] = "/tmp/sq-e2e-ema-XXXXXX";

static void train_cmd(char *cmd, size_t size, const char *out, int steps, const char *extra) {
    char flags[3000];
    snprintf(flags, sizeof flags,
             "--val-images %s/val --cache-dir %s/cache --save-every 4 --sample-every 0 --val-every 2 --lr 2e-3 --eps 2e-3 %s",
             tmp, tmp, extra);
    e2e_train_cmd(cmd, size, bin, tmp, out, steps, flags);
}

static int run(const char *cmd, char **out) {
    int rc = tu_run(cmd, out);
    if (!*out) *out = strdup("");
    return rc;
}

static bool trained_name(const char *name) {   // block 0, attention or adaLN
    return !strncmp(name, "transformer_blocks.0.", 21) && !strstr(name, ".ff.") && !strstr(name, ".ff_context.");
}

// The int4 base training quantised into the cache.
static void base_path(char *path, size_t size) {
    char dir[100];
    snprintf(dir, sizeof dir, "%s/cache", tmp);
    DIR *d = opendir(dir);
    struct dirent *e;
    path[0] = 0;
    while (d && (e = readdir(d)))
        if (!strncmp(e->d_name, "mmdit-int4-", 11) && strlen(dir) + strlen(e->d_name) + 2 <= size)
            snprintf(path, size, "%s/%.180s", dir, e->d_name);
    if (d) closedir(d);
}

static bool same_entry(const sq_st_entry *a, const sq_st_entry *b) {
    return a && b && a->nbytes == b->nbytes && !memcmp(a->data, b->data, a->nbytes);
}

static void check_run(void) {
    char cmd[4096], path[300], *out = NULL;
    train_cmd(cmd, sizeof cmd, "ema1", 4, "--ema 0.9 --train-blocks 0 --train-layers attn,adaln");
    int rc = run(cmd, &out);
    TU_CHECK(rc == 0, "train --ema --train-blocks exits 0 (got %d):\n%s", rc, out);
    TU_CHECK(strstr(out, "trainable scales: ") && strstr(out, "int4 layers (--train-blocks 0, --train-layers attn,adaln)") &&
                 strstr(out, "no perturbation, no update"),
             "the trainable-scale count is printed:\n%s", out);
    TU_CHECK(strstr(out, "EMA of the ") && strstr(out, "MiB (fp32, --ema 0.9)"), "the memory line states the EMA's cost:\n%s", out);
    TU_CHECK(strstr(out, "EMA of the scales: "), "the run ends with the EMA's validation loss:\n%s", out);
    free(out);

    snprintf(path, sizeof path, "%s/ema1/run.json", tmp);
    char *rj = e2e_read_all(path);
    TU_CHECK(rj && strstr(rj, "\"train-blocks\":\t\"0\"") && strstr(rj, "\"train-layers\":\t\"attn,adaln\"") &&
                 strstr(rj, "\"ema\":\t0.9"),
             "run.json records the selection and the EMA:\n%s", rj);
    free(rj);

    snprintf(path, sizeof path, "%s/ema1/log.jsonl", tmp);
    char *log = e2e_read_all(path);
    int ema_vals = 0;
    for (char *p = log; p && (p = strstr(p, "\"val_loss_ema\": ")); p += 16) ema_vals += p[16] != 'n';
    TU_CHECK(ema_vals == 3, "the EMA's validation loss at steps 0, 2, 4: %d values", ema_vals);
    double v0 = NAN, e0 = NAN;
    char *first = log ? strstr(log, "\"val_loss\": ") : NULL, *first_e = log ? strstr(log, "\"val_loss_ema\": ") : NULL;
    if (first && first_e) { v0 = strtod(first + 12, NULL); e0 = strtod(first_e + 16, NULL); }
    TU_CHECK(isfinite(v0) && v0 == e0, "at step 0 the EMA is the scales: val %.17g, EMA %.17g", v0, e0);
    free(log);

    snprintf(path, sizeof path, "%s/ema1/report.html", tmp);
    char *html = e2e_read_all(path);
    TU_CHECK(html && strstr(html, "EMA of the scales") && strstr(html, "Trained ") && strstr(html, "--train-blocks 0") &&
                 strstr(html, "--train-layers attn,adaln") && strstr(html, "beta 0.9"),
             "report.html shows the EMA's validation loss and what trained");
    free(html);

    char base[300];
    base_path(base, sizeof base);
    snprintf(path, sizeof path, "%s/ema1/checkpoint.safetensors", tmp);
    sq_safetensors *ck = NULL, *bs = NULL;
    if (!base[0] || sq_st_open(&ck, path) != SQ_OK || sq_st_open(&bs, base) != SQ_OK) {
        TU_CHECK(false, "open the checkpoint and the int4 base (%s): %s", base, sq_error_message());
        return;
    }
    const char *ema_meta = sq_st_metadata(ck, "sd_qzo.ema"), *train_meta = sq_st_metadata(ck, "sd_qzo.train");
    TU_CHECK(ema_meta && strstr(ema_meta, "\"updates\":\"4\"") && train_meta && strstr(train_meta, "\"blocks\":\"0\""),
             "the checkpoint's metadata: sd_qzo.ema %s, sd_qzo.train %s", ema_meta, train_meta);
    int frozen = 0, frozen_same = 0, trained = 0, trained_moved = 0, emas = 0, ema_apart = 0;
    for (int i = 0; i < sq_st_count(ck); i++) {
        const sq_st_entry *e = sq_st_at(ck, i);
        if (!strncmp(e->name, "ema.", 4)) {
            const char *name = e->name + 4;
            emas += trained_name(name);
            TU_CHECK(trained_name(name), "an EMA only for trained layers: %s", e->name);
            ema_apart += !same_entry(e, sq_st_find(ck, name)) && !same_entry(e, sq_st_find(bs, name));
            continue;
        }
        const sq_st_entry *b = sq_st_find(bs, e->name);
        if (trained_name(e->name)) {
            trained++;
            trained_moved += !same_entry(e, b);
        } else {
            frozen++;
            frozen_same += same_entry(e, b);
        }
    }
    printf("checkpoint: %d trained layers (%d moved), %d frozen (%d as the base), %d EMA tensors (%d apart from scales and base)\n",
           trained, trained_moved, frozen, frozen_same, emas, ema_apart);
    TU_CHECK(trained == 10 && trained_moved == trained, "every trained layer moved: %d of %d", trained_moved, trained);
    TU_CHECK(frozen > 0 && frozen_same == frozen, "frozen layers keep the base's scales bit for bit: %d of %d", frozen_same, frozen);
    TU_CHECK(emas == trained && ema_apart == emas, "one EMA per trained layer, apart from its scales and the base: %d, %d",
             emas, ema_apart);
    sq_st_close(ck);
    sq_st_close(bs);
}

static void check_resume(void) {
    char cmd[4096], *out = NULL;
    const char *flags = "--ema 0.9 --train-blocks 0 --train-layers attn,adaln";
    train_cmd(cmd, sizeof cmd, "ema2", 2, flags);
    int rc = run(cmd, &out);
    TU_CHECK(rc == 0, "first half exits 0:\n%s", out);
    free(out);
    char extra[600];
    snprintf(extra, sizeof extra, "%s --resume %s/ema2/checkpoint.safetensors", flags, tmp);
    train_cmd(cmd, sizeof cmd, "ema2", 4, extra);
    rc = run(cmd, &out);
    TU_CHECK(rc == 0 && strstr(out, "resuming at step 2"), "resume exits 0:\n%s", out);
    free(out);
    char a[300], b[300];
    snprintf(a, sizeof a, "%s/ema1/checkpoint.safetensors", tmp);
    snprintf(b, sizeof b, "%s/ema2/checkpoint.safetensors", tmp);
    sq_safetensors *sa = NULL, *sb = NULL;
    if (sq_st_open(&sa, a) != SQ_OK || sq_st_open(&sb, b) != SQ_OK) {
        TU_CHECK(false, "open checkpoints: %s", sq_error_message());
        return;
    }
    int n = sq_st_count(sa), same = 0, emas = 0;
    for (int i = 0; i < n && n == sq_st_count(sb); i++) {
        const sq_st_entry *x = sq_st_at(sa, i);
        same += same_entry(x, sq_st_find(sb, x->name));
        emas += !strncmp(x->name, "ema.", 4);
    }
    TU_CHECK(n == sq_st_count(sb) && same == n && emas == 10,
             "resumed checkpoint equals the uninterrupted one bit for bit, EMA included: %d of %d tensors (%d EMA)", same, n, emas);
    TU_CHECK(!strcmp(sq_st_metadata(sa, "sd_qzo.ema"), sq_st_metadata(sb, "sd_qzo.ema")), "same EMA metadata: %s / %s",
             sq_st_metadata(sa, "sd_qzo.ema"), sq_st_metadata(sb, "sd_qzo.ema"));
    sq_st_close(sa);
    sq_st_close(sb);

    // refusals: the checkpoint is left as it was
    char *before = e2e_read_all(b);
    struct {
        const char *flags, *needle;
    } bad[] = {
        {"--ema 0.9 --train-blocks 1 --train-layers attn,adaln", "must train the same scales"},
        {"--ema 0.9 --train-blocks 0 --train-layers attn", "must train the same scales"},
        {"--ema 0.5 --train-blocks 0 --train-layers attn,adaln", "resume with --ema 0.9"},
        {"--train-blocks 0 --train-layers attn,adaln", "this run asks for --ema 0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(extra, sizeof extra, "%s --resume %s", bad[i].flags, b);
        train_cmd(cmd, sizeof cmd, "ema2", 6, extra);
        rc = run(cmd, &out);
        TU_CHECK(rc != 0 && strstr(out, bad[i].needle) && strstr(out, "--resume"), "resume with %s is refused (%s):\n%s",
                 bad[i].flags, bad[i].needle, out);
        free(out);
    }
    char *after = e2e_read_all(b);
    TU_CHECK(before && after && !strcmp(before, after), "a refused resume leaves the checkpoint as it was");
    free(before);
    free(after);
}

static void check_sample(void) {
    char cmd[4096], *out = NULL;
    const char *common = "--prompt 'a red square' --steps 2 --width 64 --height 64 --cfg 1 --device cpu --t5-max-length 32";
    snprintf(cmd, sizeof cmd, "'%s' sample --model '%s/pipeline/tiny' --scales %s/ema1/checkpoint.safetensors --ema %s --out %s/s_ema",
             bin, tu_fixtures_dir(), tmp, common, tmp);
    int rc = run(cmd, &out);
    TU_CHECK(rc == 0 && strstr(out, "applied the EMA (beta 0.9, 4 steps)") && strstr(out, "to 10 of 25 int4 layers"),
             "sample --ema exits 0 and applies the EMA to the trained layers:\n%s", out);
    free(out);
    // a subset checkpoint without EMA: sample works, sample --ema is one clear line
    // the selection from a config file (TOML keys spelled like the flags)
    char tr[4096], toml[300];
    snprintf(toml, sizeof toml, "%s/select.toml", tmp);
    FILE *f = fopen(toml, "w");
    fputs("train-blocks = \"1\"\ntrain_layers = \"mlp\"   # underscores read as dashes\nema = 0\n", f);
    fclose(f);
    char flags[400];
    snprintf(flags, sizeof flags, "--config %s", toml);
    train_cmd(tr, sizeof tr, "plain", 1, flags);
    rc = run(tr, &out);
    TU_CHECK(rc == 0 && strstr(out, "(--train-blocks 1, --train-layers mlp)"),
             "a run without --ema, its selection from a config file, exits 0:\n%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' sample --model '%s/pipeline/tiny' --scales %s/plain/checkpoint.safetensors %s --out %s/s_plain",
             bin, tu_fixtures_dir(), tmp, common, tmp);
    rc = run(cmd, &out);
    TU_CHECK(rc == 0 && strstr(out, "applied the scales of"), "sample of a subset checkpoint exits 0:\n%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' sample --model '%s/pipeline/tiny' --scales %s/plain/checkpoint.safetensors --ema %s --out %s/s_bad",
             bin, tu_fixtures_dir(), tmp, common, tmp);
    rc = run(cmd, &out);
    TU_CHECK(rc != 0 && strstr(out, "holds no EMA of the scales") && strstr(out, "plain/checkpoint.safetensors"),
             "sample --ema on a checkpoint without EMA is refused:\n%s", out);
    free(out);
    char path[300];
    snprintf(path, sizeof path, "%s/s_bad", tmp);
    struct stat st;
    TU_CHECK(stat(path, &st) != 0, "the refused sample wrote nothing");
}

static const float *f32_of(const sq_st_entry *e) { return e && e->dtype == SQ_F32 ? e->data : NULL; }

static void check_export(void) {
    char cmd[4096], *out = NULL;
    const char *which[2] = {"x_ema", "x_plain"};
    for (int k = 0; k < 2; k++) {
        snprintf(cmd, sizeof cmd, "'%s' export --model '%s/pipeline/tiny' --scales %s/ema1/checkpoint.safetensors --out %s/%s "
                 "--dtype fp32 %s", bin, tu_fixtures_dir(), tmp, tmp, which[k], k == 0 ? "--ema" : "");
        int rc = run(cmd, &out);
        TU_CHECK(rc == 0, "export %s exits 0:\n%s", k == 0 ? "--ema" : "", out);
        if (k == 0) TU_CHECK(strstr(out, "EMA of the scales"), "export --ema says it used the EMA:\n%s", out);
        free(out);
    }
    char pe[300], pp[300], base[300], ckp[300];
    snprintf(pe, sizeof pe, "%s/x_ema/transformer", tmp);
    snprintf(pp, sizeof pp, "%s/x_plain/transformer", tmp);
    snprintf(ckp, sizeof ckp, "%s/ema1/checkpoint.safetensors", tmp);
    base_path(base, sizeof base);
    sq_safetensors *xe = NULL, *xp = NULL, *bs = NULL, *ck = NULL;
    if (sq_st_open(&xe, pe) != SQ_OK || sq_st_open(&xp, pp) != SQ_OK || sq_st_open(&bs, base) != SQ_OK ||
        sq_st_open(&ck, ckp) != SQ_OK) {
        TU_CHECK(false, "open the exports, base and checkpoint: %s", sq_error_message());
        return;
    }
    TU_CHECK(sq_st_metadata(xe, "sd_qzo.exported_scales") && !strcmp(sq_st_metadata(xe, "sd_qzo.exported_scales"), "ema"),
             "the --ema export says so in its metadata");
    // a trained layer: W = EMA ⊙ codes exactly; the plain export differs there
    const char *layer = "transformer_blocks.0.attn.to_q";
    char wname[200], cname[200], ename[200];
    snprintf(wname, sizeof wname, "%s.weight", layer);
    snprintf(cname, sizeof cname, "%s.weight.q4", layer);
    snprintf(ename, sizeof ename, "ema.%s.weight.scales", layer);
    const sq_st_entry *w = sq_st_find(xe, wname), *codes = sq_st_find(bs, cname), *ema = sq_st_find(ck, ename);
    const float *wv = f32_of(w), *ev = f32_of(ema);
    if (!wv || !ev || !codes || w->ndim != 2) {
        TU_CHECK(false, "find %s (fp32), %s and %s", wname, cname, ename);
    } else {
        int64_t rows = w->shape[0], k = w->shape[1], exact = 0;
        const uint8_t *c = codes->data;
        for (int64_t i = 0; i < rows * k; i++) {
            int q = (i & 1) ? (c[i >> 1] >> 4) : (c[i >> 1] & 0xf);
            if (q >= 8) q -= 16;
            float want = ev[(i / k) * (k / 32) + (i % k) / 32] * (float)q;
            exact += wv[i] == want;
        }
        TU_CHECK(exact == rows * k, "export --ema: %s = EMA x codes exactly in %lld of %lld weights", wname, (long long)exact,
                 (long long)(rows * k));
        TU_CHECK(!same_entry(w, sq_st_find(xp, wname)), "the plain export of a trained layer differs from the EMA's");
    }
    const char *frozen = "transformer_blocks.1.attn.to_q.weight";
    TU_CHECK(same_entry(sq_st_find(xe, frozen), sq_st_find(xp, frozen)), "a frozen layer exports the same either way");
    sq_st_close(xe);
    sq_st_close(xp);
    sq_st_close(bs);
    sq_st_close(ck);

    snprintf(cmd, sizeof cmd, "'%s' export --model '%s/pipeline/tiny' --scales %s/plain/checkpoint.safetensors --out %s/x_bad --ema",
             bin, tu_fixtures_dir(), tmp, tmp);
    int rc = run(cmd, &out);
    TU_CHECK(rc != 0 && strstr(out, "holds no EMA of the scales") && strstr(out, "plain/checkpoint.safetensors"),
             "export --ema of a checkpoint without EMA is refused:\n%s", out);
    free(out);
    char path[300];
    snprintf(path, sizeof path, "%s/x_bad", tmp);
    struct stat st;
    TU_CHECK(stat(path, &st) != 0, "the refused export wrote nothing");
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    bin = argv[1];
    if (!mkdtemp(tmp)) return 1;
    e2e_make_dataset(tmp);
    check_run();
    check_resume();
    check_sample();
    check_export();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (tu_finish("test_train_ema") == 0) {
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
        return 0;
    }
    fprintf(stderr, "left %s for inspection\n", tmp);
    return 1;
}
