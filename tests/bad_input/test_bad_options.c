// tests/bad_input/test_bad_options.c: wrong command lines get one clear line, for
// every command, from the one option machinery (app/options.h): a word that is not
// one of an option's values lists the allowed ones; a bad number or an unknown flag
// names the flag. And the one resolution check (datasets/buckets.h) refuses, before
// anything is encoded or written, sizes the model's position table cannot hold:
// with the tiny fixture (64 pixels a side) a 128 training resolution fails on its
// 4:1 bucket (256 x 64), and so do a 128-wide sample and a 128 bench. The QZO
// options (--momentum, --spike-factor, --max-bad-steps, --perturbation, --lr auto,
// --lr-auto-steps, --ema, --train-blocks, --train-layers) are refused with a line
// naming the flag. A failed bench leaves
// an existing --json FILE as it was; a --prompts file that is not UTF-8 is refused.
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/test_util.h"

// Runs `sd-qzo ARGS`: exit 1 and one line "sd-qzo CMD: error: ..." holding `want`
// (warnings and info lines may come before it; they do not say "error").
static void refused(const char *bin, const char *command, const char *args, const char *want, const char *want2) {
    char cmd[4096];
    int st;
    snprintf(cmd, sizeof cmd, "'%s' %s %s", bin, command, args);
    char *out = NULL;
    st = tu_run(cmd, &out);
    TU_CHECK(out && st == 1, "%s %s: exit 1 (got %d):\n%s", command, args, st, out ? out : "");
    if (!out) return;
    char prefix[64];
    snprintf(prefix, sizeof prefix, "sd-qzo %s: error: ", command);
    const char *e = strstr(out, prefix);
    const char *nl = e ? strchr(e, '\n') : NULL;
    TU_CHECK(e && nl && nl[1] == 0, "%s %s: the error is the last and only error line:\n%s", command, args, out);
    TU_CHECK(e && !strstr(e + strlen(prefix), "error:"), "%s %s: one error", command, args);
    TU_CHECK(e && strstr(e, want), "%s %s: '%s' not in:\n%s", command, args, want, out);
    if (want2) TU_CHECK(e && strstr(e, want2), "%s %s: '%s' not in:\n%s", command, args, want2, out);
    free(out);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: test_bad_options SD_QZO_BINARY\n"); return 1; }
    const char *bin = argv[1];
    char tiny[1024], tmp[64] = "/tmp/sq-bad-options-XXXXXX", args[4096], path[256];
    snprintf(tiny, sizeof tiny, "%s/pipeline/tiny", tu_fixtures_dir());
    TU_CHECK(mkdtemp(tmp) != NULL, "mkdtemp");

    // enumerations: the allowed words, once
    refused(bin, "train", "--lr-schedule cosin", "--lr-schedule must be constant, cosine or linear, not 'cosin'", NULL);
    refused(bin, "train", "--timestep-sampling normal", "--timestep-sampling must be logit_normal, uniform or mode", NULL);
    refused(bin, "train", "--device tpu", "--device must be auto, cpu or cuda, not 'tpu'", NULL);
    refused(bin, "train", "--group-size 48", "--group-size must be 32, 64 or 128, not '48'", NULL);
    refused(bin, "sample", "--device gpu --model x --prompt y", "--device must be auto, cpu or cuda, not 'gpu'", NULL);
    refused(bin, "quantize", "--model x --out y --group-size 16", "--group-size must be 32, 64 or 128, not '16'", NULL);
    refused(bin, "export", "--format zip", "--format must be diffusers, single, both or gguf, not 'zip'", NULL);
    refused(bin, "export", "--dtype fp8", "--dtype must be auto, bf16, fp16 or fp32, not 'fp8'", NULL);
    refused(bin, "bench", "--what gpu", "--what must be mmdit, vae, text, all or quantize, not 'gpu'", NULL);
    refused(bin, "quantize", "--model x --out y --device tpu", "--device must be auto, cpu or cuda, not 'tpu'", NULL);
    refused(bin, "bench", "--what quantize --quantize-blocks -1", "--quantize-blocks must be >= 0", NULL);
    refused(bin, "bench", "--config huge", "--preset must be large, large-turbo or medium, not 'huge'", NULL);
    // numbers and names
    refused(bin, "train", "--lr fast", "--lr wants a number or auto, not 'fast'", NULL);
    refused(bin, "sample", "--model x --prompt y --steps many", "--steps wants an integer, not 'many'", NULL);
    refused(bin, "sample", "--model x --prompt y --batch 0", "--batch-size must be in [1, 1024]", NULL);
    refused(bin, "bench", "--batch-size two", "--batch-size wants an integer, not 'two'", NULL);
    refused(bin, "bench", "--warmup abc", "--warmup wants an integer, not 'abc'", NULL);
    refused(bin, "bench", "--what bogus", "--what must be mmdit, vae, text, all or quantize, not 'bogus'", NULL);
    refused(bin, "sample", "--bogus 1", "unknown option '--bogus'", "sd-qzo sample --help");
    refused(bin, "export", "--no-format", "unknown option '--no-format'", NULL);
    refused(bin, "info", "a b", "unexpected argument 'b'", NULL);
    refused(bin, "sample", "--model x --prompt y --ema", "--ema needs --scales", NULL);
    refused(bin, "quantize", "--model", "--model needs a value", NULL);

    // the resolution limit, before any work: nothing encoded, no output written
    snprintf(args, sizeof args, "--model '%s' --images %s/no-images --output %s/run --resolution 128 --device cpu", tiny, tmp,
             tmp);
    refused(bin, "train", args, "--resolution 128 with buckets: the 4:1 bucket is 256 pixels long",
            "transformer/config.json has pos_embed_max_size 16");
    snprintf(args, sizeof args, "--model '%s' --images %s/no-images --output %s/run --resolution 128 --no-buckets --device cpu",
             tiny, tmp, tmp);
    refused(bin, "train", args, "--resolution 128 is too large for", "transformer/config.json: 32 patches per side, its pos_embed_max_size is 16");
    snprintf(path, sizeof path, "%s/run", tmp);
    struct stat st;
    TU_CHECK(stat(path, &st) != 0, "a refused run wrote nothing into its output folder");
    snprintf(args, sizeof args, "--model '%s' --prompt x --width 128 --height 64 --device cpu --out %s/samples", tiny, tmp);
    refused(bin, "sample", args, "--width 128 / --height 64", "transformer/config.json has pos_embed_max_size 16");
    snprintf(path, sizeof path, "%s/samples", tmp);
    TU_CHECK(stat(path, &st) != 0, "a refused sample run created no output folder");
    snprintf(args, sizeof args, "--weights '%s' --resolution 128 --device cpu --steps 1", tiny);
    refused(bin, "bench", args, "--resolution 128 is too large for", "transformer/config.json");

    // the QZO options of `train`, checked before anything is read or written
    static const struct { const char *args, *want, *want2; } qzo_opts[] = {
        {"--momentum 1", "--momentum must be in [0, 1)", NULL},
        {"--momentum -0.5", "--momentum must be in [0, 1)", NULL},
        {"--spike-factor -1", "--spike-factor must be >= 0", NULL},
        {"--max-bad-steps 0", "--max-bad-steps must be at least 1", NULL},
        {"--perturbation sideways", "--perturbation must be absolute or relative, not 'sideways'", NULL},
        {"--lr auto --lr-auto-steps 0 --val-images VAL", "--lr-auto-steps must be at least 1", NULL},
        {"--lr auto", "--lr auto needs --val-images", NULL},
        {"--threads -1", "--threads must be >= 0", NULL},
        {"--ema 1", "--ema must be in [0, 1)", NULL},
        {"--ema -0.1", "--ema must be in [0, 1)", NULL},
        {"--train-blocks 0-", "--train-blocks '0-': '0-' is not a range", NULL},
        {"--train-blocks 3-1", "--train-blocks '3-1': the range '3-1' runs backwards", NULL},
        {"--train-layers attn,ffn", "--train-layers 'attn,ffn': 'ffn' is not a layer type", "attn, mlp, adaln"},
    };
    for (size_t i = 0; i < sizeof qzo_opts / sizeof qzo_opts[0]; i++) {
        char extra[256];
        const char *val = strstr(qzo_opts[i].args, "VAL");
        if (val) snprintf(extra, sizeof extra, "%.*s%s/val", (int)(val - qzo_opts[i].args), qzo_opts[i].args, tmp);
        else snprintf(extra, sizeof extra, "%s", qzo_opts[i].args);
        snprintf(args, sizeof args, "--model '%s' --images %s/no-images --output %s/run --device cpu %s", tiny, tmp, tmp,
                 extra);
        refused(bin, "train", args, qzo_opts[i].want, qzo_opts[i].want2);
    }
    snprintf(path, sizeof path, "%s/run", tmp);
    TU_CHECK(stat(path, &st) != 0, "refused QZO options wrote nothing into the output folder");

    // sample --prompts FILE: not UTF-8 is refused naming FILE:LINE, as caption files are
    snprintf(path, sizeof path, "%s/prompts.txt", tmp);
    FILE *pf = fopen(path, "w");
    fputs("a red square\na caf\xe9 in latin-1\n", pf);
    fclose(pf);
    snprintf(args, sizeof args, "--model '%s' --prompts %s --device cpu --out %s/samples", tiny, path, tmp);
    refused(bin, "sample", args, "prompts.txt:2: not valid UTF-8", NULL);
    unlink(path);
    snprintf(path, sizeof path, "%s/samples", tmp);
    TU_CHECK(stat(path, &st) != 0, "a refused sample run created no output folder");

    // bench --json FILE: a run that fails (here: the VAE's weights are junk, found after the
    // config passed) leaves an existing FILE as it was and no temporary file beside it
    {
        char p[512], q[2200], json[512];
        snprintf(p, sizeof p, "%s/pipe", tmp);
        mkdir(p, 0755);
        snprintf(p, sizeof p, "%s/pipe/vae", tmp);
        mkdir(p, 0755);
        snprintf(q, sizeof q, "cp '%s/vae/config.json' '%s/config.json'", tiny, p);
        TU_CHECK(system(q) == 0, "copy the VAE config");
        snprintf(q, sizeof q, "%s/diffusion_pytorch_model.safetensors", p);
        FILE *f = fopen(q, "w");
        fputs("junk", f);
        fclose(f);
        snprintf(json, sizeof json, "%s/bench.json", tmp);
        f = fopen(json, "w");
        fputs("keep", f);
        fclose(f);
        snprintf(args, sizeof args, "--weights %s/pipe --what vae --resolution 64 --steps 1 --warmup 0 --device cpu "
                 "--json %s", tmp, json);
        refused(bin, "bench", args, "diffusion_pytorch_model.safetensors", NULL);
        char buf[16] = {0};
        f = fopen(json, "r");
        TU_CHECK(f && fread(buf, 1, sizeof buf - 1, f) == 4 && !strcmp(buf, "keep"), "a failed bench left --json's file as it was");
        if (f) fclose(f);
        snprintf(q, sizeof q, "ls %s | grep -q tmp", tmp);
        TU_CHECK(system(q) != 0, "no temporary JSON file left");
        unlink(json);
        snprintf(q, sizeof q, "%s/diffusion_pytorch_model.safetensors", p);
        unlink(q);
        snprintf(q, sizeof q, "%s/config.json", p);
        unlink(q);
        rmdir(p);
        snprintf(p, sizeof p, "%s/pipe", tmp);
        rmdir(p);
    }

    rmdir(tmp);
    return tu_finish("test_bad_options");
}
