// tests/e2e/test_cli_help.c: every command's --help comes from the one option
// machinery (app/options.h): exit 0, the command's usage line, an "options" list
// with each flag's alias and its default as written ([0.05], [0.01], not
// 0.0500000007), and the names shared across commands (--batch-size, --t5-max-length,
// --group-size, --device, --seed, --steps) spelled the same everywhere.
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "tests/test_util.h"

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: test_cli_help SD_QZO_BINARY\n"); return 1; }
    const struct {
        const char *command;
        const char *want[8];
    } cases[] = {
        {"train", {"--caption-dropout", "[0.05]", "[0.01]", "--batch-size, --batch", "--t5-max-length, --max-sequence-length",
                   "(constant, cosine or linear) [constant]", "(logit_normal, uniform or mode)", "(auto, cpu or cuda) [auto]"}},
        {"sample", {"--batch-size, --batch", "--t5-max-length, --max-sequence-length", "[sd-qzo-samples]", "--out, --output",
                    "--t5-int8", "--seed", "--steps", "(auto, cpu or cuda) [auto]"}},
        {"quantize", {"--group-size", "[64]", "--out, --output", "--config FILE", "(auto, cpu or cuda) [auto]"}},
        {"export", {"(diffusers, single, both or gguf) [diffusers]", "(auto, bf16, fp16 or fp32) [auto]", "[5]", "--verify"}},
        {"bench", {"--preset, --config", "(large, large-turbo or medium) [large]", "--batch-size, --batch", "--group-size",
                   "(mmdit, vae, text, all or quantize) [all]", "--quantize-blocks", "(auto, cpu or cuda) [auto]", "--steps"}},
        {"info", {"--path"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cmd[512], usage[64];
        int st = -1;
        snprintf(cmd, sizeof cmd, "'%s' %s --help", argv[1], cases[i].command);
        char *out = NULL;
        st = tu_run(cmd, &out);
        TU_CHECK(out && st == 0, "%s --help exits 0 (%d)", cases[i].command, st);
        if (!out) continue;
        snprintf(usage, sizeof usage, "usage: sd-qzo %s", cases[i].command);
        TU_CHECK(strncmp(out, usage, strlen(usage)) == 0, "%s --help starts with its usage line:\n%s", cases[i].command, out);
        TU_CHECK(strstr(out, "\noptions"), "%s --help lists its options", cases[i].command);
        for (int k = 0; k < 8 && cases[i].want[k]; k++)
            TU_CHECK(strstr(out, cases[i].want[k]), "%s --help lacks '%s':\n%s", cases[i].command, cases[i].want[k], out);
        TU_CHECK(!strstr(out, "0.0500000007") && !strstr(out, "9.99999975e-06") && !strstr(out, "0.00999999978"),
                 "%s --help: floats as written",
                 cases[i].command);
        // the sample defaults agree with train's where the meaning is the same
        // --ema and the choice of trained blocks / layer types (train), --ema (sample, export)
        if (!strcmp(cases[i].command, "train"))
            TU_CHECK(strstr(out, "--train-blocks") && strstr(out, "--train-layers") && strstr(out, "--ema ") &&
                         strstr(out, "[all]"),
                     "train --help lists --train-blocks, --train-layers and --ema");
        if (!strcmp(cases[i].command, "sample") || !strcmp(cases[i].command, "export"))
            TU_CHECK(strstr(out, "--ema ") && strstr(out, "EMA of the scales"), "%s --help lists --ema", cases[i].command);
        if (!strcmp(cases[i].command, "sample"))
            TU_CHECK(strstr(out, "--no-t5-int8 for bf16) [true]") && strstr(out, "--no-low-vram keeps them on the GPU) [true]"),
                     "sample: T5 int8 and --low-vram on by default, as train");
        free(out);
    }
    return tu_finish("test_cli_help");
}
