// tests/unit/test_options.c: app/options.c, the option machinery of every command:
//   - flags, aliases, --name=value, bare and --no- booleans, enums parsed into their
//     values, which rows were given;
//   - bad values, unknown flags and unknown enum words are one-line errors naming the
//     flag (and, for an enum or a restricted int, every allowed value);
//   - config files (TOML and JSON) read before the flags, keys by name or alias; a key
//     given twice (also as name and alias) is an error naming file and key;
//   - floats printed in their shortest round-trip form in --help and JSON;
//   - train's fingerprint of the defaults is the one earlier releases wrote into
//     run.json (hashed from %.9g floats), so their runs still resume.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/options.h"
#include "app/train_options.h"
#include "core/error.h"
#include "tests/test_util.h"

typedef enum { COLOUR_RED = 3, COLOUR_GREEN = 5, COLOUR_BLUE = 7 } colour;

typedef struct {
    char path[64];
    int batch_size, group_size;
    int64_t steps;
    uint64_t seed;
    float lr, dropout;
    bool flag, other;
    colour colour;
} toy;

static void toy_defaults(void *p) {
    toy *t = p;
    memset(t, 0, sizeof *t);
    snprintf(t->path, sizeof t->path, "out-dir");
    t->batch_size = 1;
    t->group_size = 64;
    t->steps = 10;
    t->lr = 1e-5f;
    t->dropout = 0.05f;
    t->flag = true;
    t->colour = COLOUR_GREEN;
}

static const sq_opt_choice colours[] = {{"red", COLOUR_RED}, {"green", COLOUR_GREEN}, {"blue", COLOUR_BLUE}, {NULL, 0}};

static const sq_option toy_options[] = {
    {"path", "output", SQ_OPT_STR, SQ_OPT_STRING(toy, path), NULL, false, "a path"},
    {"batch-size", "batch", SQ_OPT_INT, SQ_OPT_FIELD(toy, batch_size), NULL, true, "images per step"},
    {"group-size", NULL, SQ_OPT_INT, SQ_OPT_FIELD(toy, group_size), sq_opt_group_sizes, true, "group"},
    {"steps", NULL, SQ_OPT_I64, SQ_OPT_FIELD(toy, steps), NULL, false, "steps"},
    {"seed", NULL, SQ_OPT_U64, SQ_OPT_FIELD(toy, seed), NULL, true, "seed"},
    {"lr", NULL, SQ_OPT_FLOAT, SQ_OPT_FIELD(toy, lr), NULL, true, "learning rate"},
    {"caption-dropout", NULL, SQ_OPT_FLOAT, SQ_OPT_FIELD(toy, dropout), NULL, true, "dropout"},
    {"flag", NULL, SQ_OPT_BOOL, SQ_OPT_FIELD(toy, flag), NULL, false, "a flag on by default"},
    {"other", NULL, SQ_OPT_BOOL, SQ_OPT_FIELD(toy, other), NULL, false, "a flag off by default"},
    {"colour", "color", SQ_OPT_ENUM, SQ_OPT_ENUM_FIELD(toy, colour), colours, true, "a colour"},
};

static const sq_option_table toy_table = {
    .command = "toy",
    .usage = "usage: sd-qzo toy [options]\n",
    .options = toy_options,
    .count = (int)(sizeof toy_options / sizeof toy_options[0]),
    .struct_size = sizeof(toy),
    .defaults = toy_defaults,
    .config_file = true,
};

#define N_TOY ((int)(sizeof toy_options / sizeof toy_options[0]))

static int parse(toy *t, bool *given, const char *const *args, int n) {
    char *argv[32];
    argv[0] = "toy";
    for (int i = 0; i < n; i++) argv[i + 1] = (char *)args[i];
    bool help;
    toy_defaults(t);
    return sq_options_parse(&toy_table, t, n + 1, argv, &help, given);
}

static bool one_line(const char *msg) { return msg && msg[0] && !strchr(msg, '\n'); }

static void test_flags(void) {
    toy t;
    bool given[N_TOY];
    const char *a[] = {"--batch", "4", "--output=runs/x", "--color", "blue", "--no-flag", "--other", "--steps", "7",
                       "--seed", "18446744073709551615", "--lr", "2e-3", "--group_size", "128"};
    TU_CHECK(parse(&t, given, a, 15) == SQ_OK, "parse: %s", sq_error_message());
    TU_CHECK(t.batch_size == 4, "--batch is an alias of --batch-size: %d", t.batch_size);
    TU_CHECK(!strcmp(t.path, "runs/x"), "--output=VALUE through the alias: %s", t.path);
    TU_CHECK(t.colour == COLOUR_BLUE, "enum word parsed into its value: %d", (int)t.colour);
    TU_CHECK(!t.flag && t.other, "--no-flag turns off, bare --other turns on");
    TU_CHECK(t.steps == 7 && t.seed == UINT64_MAX && t.group_size == 128, "i64, u64 and underscore spelling");
    TU_CHECK(t.lr == 2e-3f, "float");
    TU_CHECK(sq_options_given(&toy_table, given, "batch-size") && sq_options_given(&toy_table, given, "colour") &&
             sq_options_given(&toy_table, given, "flag") && !sq_options_given(&toy_table, given, "caption-dropout"),
             "given[] says which rows came from the command line");
    const char *b[] = {"--other", "false", "--flag", "yes"};
    TU_CHECK(parse(&t, NULL, b, 4) == SQ_OK && !t.other && t.flag, "a bool takes an explicit true/false word");
    bool help;
    char *h[] = {"toy", "--colour", "nonsense", "--help"};
    TU_CHECK(sq_options_parse(&toy_table, &t, 4, h, &help, NULL) == SQ_OK && help, "--help wins over bad values");
}

static void test_errors(void) {
    toy t;
    struct {
        const char *args[3];
        int n;
        const char *want[3];
    } cases[] = {
        {{"--colour", "purple"}, 2, {"--colour must be red, green or blue, not 'purple'"}},
        {{"--color", "purple"}, 2, {"--colour must be red, green or blue"}},   // the alias names the option
        {{"--group-size", "48"}, 2, {"--group-size must be 32, 64 or 128, not '48'"}},
        {{"--batch-size", "four"}, 2, {"--batch-size wants an integer, not 'four'"}},
        {{"--batch-size", "99999999999"}, 2, {"--batch-size wants an integer"}},
        {{"--lr", "1e-5x"}, 2, {"--lr wants a number, not '1e-5x'"}},
        {{"--lr", "inf"}, 2, {"--lr wants a number"}},
        {{"--seed", "-1"}, 2, {"--seed wants a non-negative integer"}},
        {{"--flag=maybe"}, 1, {"--flag wants true or false, not 'maybe'"}},
        {{"--no-flag=1"}, 1, {"--no-flag takes no value"}},
        {{"--no-colour"}, 1, {"unknown option '--no-colour'", "sd-qzo toy --help"}},
        {{"--bogus", "1"}, 2, {"unknown option '--bogus'"}},
        {{"stray"}, 1, {"unexpected argument 'stray'"}},
        {{"--steps"}, 1, {"--steps needs a value"}},
        {{"--config"}, 1, {"--config needs a file"}},
        {{"--path", "0123456789012345678901234567890123456789012345678901234567890123456789"}, 2,
         {"--path: value longer than 63 characters"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = parse(&t, NULL, cases[i].args, cases[i].n);
        const char *m = sq_error_message();
        TU_CHECK(rc == SQ_FAIL, "case %zu (%s) accepted", i, cases[i].args[0]);
        TU_CHECK(one_line(m), "case %zu: one line: %s", i, m);
        for (int k = 0; k < 3 && cases[i].want[k]; k++)
            TU_CHECK(strstr(m, cases[i].want[k]), "case %zu: '%s' lacks '%s'", i, m, cases[i].want[k]);
    }
}

static void test_config_files(void) {
    char dir[64] = "/tmp/sq-options-XXXXXX", toml[128], json[128], bad[128];
    TU_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(toml, sizeof toml, "%s/run.toml", dir);
    snprintf(json, sizeof json, "%s/run.json", dir);
    snprintf(bad, sizeof bad, "%s/bad.toml", dir);
    FILE *f = fopen(toml, "w");
    fputs("# a comment\n\nbatch = 3            # alias key\ncaption_dropout = 0.2\ncolour = \"red\"\nflag = false\n"
          "output = 'from-toml'\n", f);
    fclose(f);
    f = fopen(json, "w");
    fputs("{\"batch-size\": 5, \"lr\": 3e-4, \"color\": \"blue\", \"other\": true, \"seed\": 12}", f);
    fclose(f);
    f = fopen(bad, "w");
    fputs("steps = 3\n\ncolour = mauve\n", f);
    fclose(f);
    toy t;
    bool given[N_TOY];
    const char *a[] = {"--steps", "9", "--config", toml, "--colour", "blue"};
    TU_CHECK(parse(&t, given, a, 6) == SQ_OK, "toml: %s", sq_error_message());
    TU_CHECK(t.batch_size == 3 && t.dropout == 0.2f && !t.flag && !strcmp(t.path, "from-toml"), "TOML keys and aliases");
    TU_CHECK(t.colour == COLOUR_BLUE && t.steps == 9, "flags override the file wherever --config stands");
    TU_CHECK(sq_options_given(&toy_table, given, "caption-dropout"), "a config-file key counts as given");
    const char *b[] = {"--config", json};
    TU_CHECK(parse(&t, NULL, b, 2) == SQ_OK, "json: %s", sq_error_message());
    TU_CHECK(t.batch_size == 5 && t.lr == 3e-4f && t.colour == COLOUR_BLUE && t.other && t.seed == 12, "JSON keys");
    const char *c[] = {"--config", bad};
    TU_CHECK(parse(&t, NULL, c, 2) == SQ_FAIL, "a bad enum in a config file is refused");
    const char *m = sq_error_message();
    TU_CHECK(one_line(m) && strstr(m, "bad.toml:3") && strstr(m, "must be red, green or blue, not 'mauve'"),
             "the error names file, line and the allowed words: %s", m);
    // a key given twice (or once as itself and once by its alias or _/- spelling) is
    // an error naming the file (TOML: and line) and the key, not "the last one wins"
    const struct { const char *text, *want1, *want2; } dups[] = {
        {"steps = 3\nseed = 1\nsteps = 4\n", "bad.toml:3", "duplicate key 'steps'"},
        {"batch = 3\nbatch_size = 4\n", "bad.toml:2", "duplicate key 'batch_size' (option --batch-size"},
        {"{\"lr\": 1e-4, \"seed\": 2, \"lr\": 2e-4}", "bad.toml: ", "duplicate key 'lr'"},
        {"{\"batch-size\": 1, \"batch_size\": 2}", "bad.toml: ", "duplicate key 'batch_size'"},
    };
    // a switch in a file is a boolean literal: "yes", yes, 1 or "true" are type errors (issue 21: flip = "yes")
    const struct { const char *text, *want1, *want2; } bools[] = {
        {"steps = 3\nflag = \"yes\"\n", "bad.toml:2", "'flag' wants a boolean, true or false (unquoted), not 'yes'"},
        {"flag = yes\n", "bad.toml:1", "not 'yes'"},
        {"flag = \"true\"\n", "bad.toml:1", "not 'true'"},
        {"flag = 1\n", "bad.toml:1", "not '1'"},
        {"{\"flag\": \"yes\"}", "bad.toml: ", "'flag' wants a boolean"},
        {"{\"flag\": 1}", "bad.toml: ", "'flag' wants a boolean"},
    };
    for (size_t i = 0; i < sizeof bools / sizeof bools[0]; i++) {
        f = fopen(bad, "w");
        fputs(bools[i].text, f);
        fclose(f);
        TU_CHECK(parse(&t, NULL, c, 2) == SQ_FAIL, "boolean %zu accepted: %s", i, bools[i].text);
        m = sq_error_message();
        TU_CHECK(one_line(m) && strstr(m, bools[i].want1) && strstr(m, bools[i].want2), "boolean %zu: %s", i, m);
    }
    for (size_t i = 0; i < sizeof dups / sizeof dups[0]; i++) {
        f = fopen(bad, "w");
        fputs(dups[i].text, f);
        fclose(f);
        TU_CHECK(parse(&t, NULL, c, 2) == SQ_FAIL, "duplicate key %zu accepted", i);
        m = sq_error_message();
        TU_CHECK(one_line(m) && strstr(m, dups[i].want1) && strstr(m, dups[i].want2), "duplicate key %zu: %s", i, m);
    }
    unlink(toml);
    unlink(json);
    unlink(bad);
    rmdir(dir);
}

static void test_floats(void) {
    const struct {
        float v;
        const char *want;
    } cases[] = {{0.05f, "0.05"}, {1e-5f, "1e-05"}, {1.29f, "1.29"}, {4.5f, "4.5"}, {100.0f, "100"}, {0.0f, "0"},
                 {1e-3f, "0.001"}, {2e-3f, "0.002"}, {-0.2f, "-0.2"}, {0.1f, "0.1"}, {3.14159274f, "3.1415927"}, {433541120.0f, "433541120"}, {1e20f, "1e+20"}};
    char buf[64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sq_format_float(cases[i].v, buf, sizeof buf);
        TU_CHECK(!strcmp(buf, cases[i].want), "%.9g printed as '%s', want '%s'", (double)cases[i].v, buf, cases[i].want);
    }
    // any float: reads back exactly, and no longer than %.9g
    uint64_t s = 42;
    int bad = 0;
    for (int i = 0; i < 100000; i++) {
        uint32_t bits = (uint32_t)(tu_next(&s) >> 32);
        float v;
        memcpy(&v, &bits, sizeof v);
        if (!isfinite(v)) continue;
        char ref[64];
        sq_format_float(v, buf, sizeof buf);
        snprintf(ref, sizeof ref, "%.9g", (double)v);
        bad += strtof(buf, NULL) != v || strlen(buf) > strlen(ref);
    }
    TU_CHECK(bad == 0, "%d random floats did not round-trip in their shortest form", bad);
}

static char *capture_usage(const sq_option_table *t) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    sq_options_usage(t, f);
    fclose(f);
    return buf;
}

static void test_usage_and_json(void) {
    char *u = capture_usage(&toy_table);
    TU_CHECK(u != NULL, "usage into memory");
    if (!u) return;
    TU_CHECK(strstr(u, "usage: sd-qzo toy"), "usage line first");
    TU_CHECK(u && strstr(u, "--batch-size, --batch"), "aliases are shown:\n%s", u);
    TU_CHECK(u && strstr(u, "[1e-05]") && strstr(u, "[0.05]"), "floats as written:\n%s", u);
    TU_CHECK(u && strstr(u, "(red, green or blue) [green]"), "an enum lists its words and default:\n%s", u);
    TU_CHECK(u && strstr(u, "[out-dir]") && strstr(u, "[true]"), "string and bool defaults");
    TU_CHECK(u && strstr(u, "--config FILE"), "a config-file table says so");
    free(u);
    toy t;
    toy_defaults(&t);
    t.colour = COLOUR_RED;
    t.seed = UINT64_MAX;
    char *j = sq_options_json(&toy_table, &t);
    TU_CHECK(j != NULL, "json");
    if (!j) return;
    TU_CHECK(j && strstr(j, "\"lr\":\t1e-05") && strstr(j, "\"caption-dropout\":\t0.05"), "JSON floats as written:\n%s", j);
    TU_CHECK(j && strstr(j, "\"colour\":\t\"red\""), "JSON enums as their words");
    TU_CHECK(j && strstr(j, "\"seed\":\t\"18446744073709551615\""), "JSON u64 as a string");
    free(j);

    u = capture_usage(&sd_train_option_table);
    // --eps defaults to 0.01 and --lr to 0.03 (qzo/qzo.c), not the floats 0.00999999978 and 0.0299999993
    TU_CHECK(u && strstr(u, "--caption-dropout") && strstr(u, "[0.05]") && strstr(u, "[0.01]") && !strstr(u, "0.0500000007") &&
             !strstr(u, "0.00999999978"), "train --help shows floats as written");
    TU_CHECK(u && strstr(u, "(constant, cosine or linear) [constant]") && strstr(u, "(auto, cpu or cuda) [auto]"),
             "train's enums in --help");
    free(u);
    sd_train_options o;
    sd_train_options_defaults(&o);
    j = sd_train_options_json(&o);
    TU_CHECK(j && strstr(j, "\"lr\":\t0.03") && !strstr(j, "0.0299999993") && strstr(j, "\"lr-schedule\":\t\"constant\"") &&
             strstr(j, "\"device\":\t\"auto\""),
             "train's run.json settings as written:\n%s", j);
    free(j);
}

static void test_train_fingerprint(void) {
    sd_train_options o;
    sd_train_options_defaults(&o);
    char hex[65];
    sd_train_options_fingerprint(&o, hex);
    // the rows that change the result change the fingerprint; the others do not
    sd_train_options o2 = o;
    char hex2[65];
    o2.save_every = o.save_every + 1;
    o2.val_every = o.val_every + 1;
    sd_train_options_fingerprint(&o2, hex2);
    TU_CHECK(!strcmp(hex, hex2), "monitoring settings leave the fingerprint alone");
    o2 = o;
    o2.momentum = 0.5f;
    sd_train_options_fingerprint(&o2, hex2);
    TU_CHECK(strcmp(hex, hex2) != 0, "--momentum changes the fingerprint");
    o2 = o;
    o2.lr = NAN;   // --lr auto
    sd_train_options_fingerprint(&o2, hex2);
    TU_CHECK(strcmp(hex, hex2) != 0, "--lr auto changes the fingerprint");
    char *argv[] = {"train", "--lr-schedule", "cosine"};
    bool help;
    TU_CHECK(sd_train_options_parse(&o, 3, argv, &help) == SQ_OK && o.lr_schedule == SQ_LR_COSINE, "train enum");
    sd_train_options_fingerprint(&o, hex2);
    TU_CHECK(strcmp(hex, hex2) != 0, "the schedule is part of the fingerprint");
}

int main(void) {
    test_flags();
    test_errors();
    test_config_files();
    test_floats();
    test_usage_and_json();
    test_train_fingerprint();
    return tu_finish("test_options");
}
