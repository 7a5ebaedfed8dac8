// app/options.c: flags, config files, --help and JSON for a command's option table
// (see app/options.h).
#include "app/options.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/error.h"
#include "core/sha256.h"
#include "kernels/backend.h"

const sq_opt_choice sq_opt_group_sizes[] = {{"32", 32}, {"64", 64}, {"128", 128}, {NULL, 0}};
const sq_opt_choice sq_opt_devices[] = {
    {"auto", SQ_DEVICE_AUTO}, {"cpu", SQ_DEVICE_CPU}, {"cuda", SQ_DEVICE_CUDA}, {NULL, 0}};

void sq_format_float(float v, char *buf, size_t size) {
    char g[64] = "", f[64] = "";
    for (int p = 1; p <= 9; p++) {   // 9 digits always round-trip a float
        snprintf(g, sizeof g, "%.*g", p, (double)v);
        if (strtof(g, NULL) == v) break;
    }
    // an integer reads better whole ("100", "433541120") unless that is longer ("1e+20")
    if (v == floorf(v) && fabsf(v) < 1e30f) snprintf(f, sizeof f, "%.0f", (double)v);
    snprintf(buf, size, "%s", f[0] && strlen(f) <= strlen(g) ? f : g);
}

const char *sq_options_choice_name(const sq_opt_choice *c, int value) {
    for (; c && c->name; c++)
        if (c->value == value) return c->name;
    return "?";
}

// "a, b or c" into buf.
static void choice_list(const sq_opt_choice *c, char *buf, size_t size) {
    int n = 0;
    while (c[n].name) n++;
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; i < n && len < size; i++)
        len += (size_t)snprintf(buf + len, size - len, "%s%s", i == 0 ? "" : i == n - 1 ? " or " : ", ", c[i].name);
}

static void *field_of(const sq_option *o, void *obj) { return (char *)obj + o->offset; }

const sq_option *sq_options_find(const sq_option_table *t, const char *key) {
    char norm[64];
    size_t n = strlen(key);
    if (n >= sizeof norm) return NULL;
    for (size_t i = 0; i <= n; i++) norm[i] = key[i] == '_' ? '-' : key[i];
    for (int i = 0; i < t->count; i++)
        if (!strcmp(t->options[i].name, norm) || (t->options[i].alias && !strcmp(t->options[i].alias, norm)))
            return &t->options[i];
    return NULL;
}

static int parse_bool(const char *v, bool *out) {
    if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes") || !strcmp(v, "on")) { *out = true; return SQ_OK; }
    if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no") || !strcmp(v, "off")) { *out = false; return SQ_OK; }
    return SQ_FAIL;
}

static int set_row(const sq_option *d, void *obj, const char *value) {
    char *field = field_of(d, obj), *end = NULL, allowed[256];
    errno = 0;
    switch (d->type) {
    case SQ_OPT_STR:
        if (strlen(value) >= d->size) return sq_errorf("--%s: value longer than %zu characters", d->name, d->size - 1);
        strcpy(field, value);
        return SQ_OK;
    case SQ_OPT_INT: {
        long v = strtol(value, &end, 10);
        bool ok = *value && !*end && !errno && v >= -2147483647L && v <= 2147483647L;
        if (ok && d->choices) {
            ok = false;
            for (const sq_opt_choice *c = d->choices; c->name; c++) ok |= c->value == v;
        }
        if (!ok && d->choices) {
            choice_list(d->choices, allowed, sizeof allowed);
            return sq_errorf("--%s must be %s, not '%s'", d->name, allowed, value);
        }
        if (!ok) return sq_errorf("--%s wants an integer, not '%s'", d->name, value);
        *(int *)field = (int)v;
        return SQ_OK;
    }
    case SQ_OPT_I64: {
        long long v = strtoll(value, &end, 10);
        if (!*value || *end || errno) return sq_errorf("--%s wants an integer, not '%s'", d->name, value);
        *(int64_t *)field = v;
        return SQ_OK;
    }
    case SQ_OPT_U64: {
        unsigned long long v = strtoull(value, &end, 10);
        if (!*value || *end || errno || value[0] == '-')
            return sq_errorf("--%s wants a non-negative integer, not '%s'", d->name, value);
        *(uint64_t *)field = v;
        return SQ_OK;
    }
    case SQ_OPT_FLOAT: {
        if (d->choices && d->choices[0].name && !strcmp(value, d->choices[0].name)) {
            *(float *)field = NAN;   // the row's one word ("auto"): decided at run time
            return SQ_OK;
        }
        float v = strtof(value, &end);
        if (!*value || *end || errno || !isfinite(v))
            return sq_errorf("--%s wants a number%s%s, not '%s'", d->name, d->choices ? " or " : "",
                             d->choices ? d->choices[0].name : "", value);
        *(float *)field = v;
        return SQ_OK;
    }
    case SQ_OPT_BOOL:
        if (parse_bool(value, (bool *)field) != SQ_OK) return sq_errorf("--%s wants true or false, not '%s'", d->name, value);
        return SQ_OK;
    case SQ_OPT_ENUM:
        for (const sq_opt_choice *c = d->choices; c->name; c++)
            if (!strcmp(c->name, value)) {
                *(int *)field = c->value;
                return SQ_OK;
            }
        choice_list(d->choices, allowed, sizeof allowed);
        return sq_errorf("--%s must be %s, not '%s'", d->name, allowed, value);
    }
    return SQ_FAIL;
}

static void mark_given(const sq_option_table *t, const sq_option *d, bool *given) {
    if (given) given[d - t->options] = true;
}

int sq_options_set(const sq_option_table *t, void *obj, const char *key, const char *value) {
    const sq_option *d = sq_options_find(t, key);
    if (!d) return sq_errorf("unknown option '%s' (sd-qzo %s --help lists them)", key, t->command);
    return set_row(d, obj, value);
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { sq_error_errno("cannot open %s", path); return NULL; }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 && n < (64 << 20) ? malloc((size_t)n + 1) : NULL;
    if (!s || fread(s, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(s);
        sq_errorf("cannot read %s", path);
        return NULL;
    }
    fclose(f);
    s[n] = 0;
    return s;
}

// seen: per option row, whether this file already set it (a key given twice, or a
// key and its alias or its _/- spelling, is an error rather than the last one winning).
// literal_bool: the value was written as a boolean (TOML bare true/false, JSON
// true/false). A file states a switch that way only: "yes", 1 or "true" in quotes are
// type errors there, though the command line takes --flag yes.
static int set_from_file(const sq_option_table *t, void *obj, const char *key, const char *value, bool literal_bool,
                         bool *given, bool *seen) {
    const sq_option *d = sq_options_find(t, key);
    if (!d) return sq_errorf("unknown option '%s' (sd-qzo %s --help lists them)", key, t->command);
    if (seen[d - t->options]) return sq_errorf("duplicate key '%s' (option --%s is already set in this file)", key, d->name);
    if (d->type == SQ_OPT_BOOL && !literal_bool)
        return sq_errorf("'%s' wants a boolean, true or false (unquoted), not '%s'", key, value);
    seen[d - t->options] = true;
    if (set_row(d, obj, value) != SQ_OK) return SQ_FAIL;
    mark_given(t, d, given);
    return SQ_OK;
}

static int load_json(const sq_option_table *t, void *obj, const char *path, const char *text, bool *given,
                     bool *seen) {
    cJSON *root = cJSON_Parse(text);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sq_errorf("%s: not a JSON object", path);
    }
    int rc = SQ_OK;
    cJSON *it;
    cJSON_ArrayForEach(it, root) {
        char buf[4200];
        if (cJSON_IsString(it)) snprintf(buf, sizeof buf, "%s", it->valuestring);
        else if (cJSON_IsBool(it)) snprintf(buf, sizeof buf, "%s", cJSON_IsTrue(it) ? "true" : "false");
        else if (cJSON_IsNumber(it)) {
            double v = it->valuedouble;
            if (v == floor(v) && fabs(v) < 9e15) snprintf(buf, sizeof buf, "%lld", (long long)v);
            else snprintf(buf, sizeof buf, "%.17g", v);
        } else {
            rc = sq_errorf("%s: value of '%s' must be a string, number or boolean", path, it->string);
            break;
        }
        if (set_from_file(t, obj, it->string, buf, cJSON_IsBool(it), given, seen) != SQ_OK) {
            rc = sq_error_context("%s", path);
            break;
        }
    }
    cJSON_Delete(root);
    return rc;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

// Flat TOML: `key = value` lines, "# comments", quoted or bare values. Tables and
// arrays are refused by name rather than misread.
static int load_toml(const sq_option_table *t, void *obj, const char *path, char *text, bool *given, bool *seen) {
    int line_no = 0;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        line_no++;
        char *l = trim(line);
        if (!*l || *l == '#') continue;
        if (*l == '[') return sq_errorf("%s:%d: TOML tables are not used by sd-qzo; write flat key = value lines", path, line_no);
        char *eq = strchr(l, '=');
        if (!eq) return sq_errorf("%s:%d: expected key = value", path, line_no);
        *eq = 0;
        char *key = trim(l), *val = trim(eq + 1);
        bool quoted = *val == '"' || *val == '\'';
        if (quoted) {
            char q = *val++;
            char *close = strchr(val, q);
            if (!close) return sq_errorf("%s:%d: unterminated string", path, line_no);
            *close = 0;
        } else {
            char *hash = strchr(val, '#');
            if (hash) *hash = 0;
            val = trim(val);
            if (*val == '[') return sq_errorf("%s:%d: arrays are not used by sd-qzo options", path, line_no);
        }
        bool literal_bool = !quoted && (!strcmp(val, "true") || !strcmp(val, "false"));
        if (set_from_file(t, obj, key, val, literal_bool, given, seen) != SQ_OK)
            return sq_error_context("%s:%d", path, line_no);
    }
    return SQ_OK;
}

static int load_file(const sq_option_table *t, void *obj, const char *path, bool *given) {
    char *text = read_text(path);
    if (!text) return SQ_FAIL;
    const char *p = text;
    while (isspace((unsigned char)*p)) p++;
    bool *seen = calloc((size_t)t->count + 1, sizeof *seen);
    if (!seen) { free(text); return sq_errorf("out of host memory reading %s", path); }
    int rc = *p == '{' ? load_json(t, obj, path, text, given, seen) : load_toml(t, obj, path, text, given, seen);
    free(seen);
    free(text);
    return rc;
}

int sq_options_load_file(const sq_option_table *t, void *obj, const char *path) {
    return load_file(t, obj, path, NULL);
}

int sq_options_parse(const sq_option_table *t, void *obj, int argc, char **argv, bool *help, bool *given) {
    *help = false;
    if (given) memset(given, 0, sizeof(bool) * (size_t)t->count);
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { *help = true; return SQ_OK; }
    // the config file first, wherever it appears: flags override it
    for (int i = 1; t->config_file && i < argc; i++) {
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) return sq_errorf("--config needs a file");
            if (load_file(t, obj, argv[++i], given) != SQ_OK) return SQ_FAIL;
        } else if (!strncmp(argv[i], "--config=", 9) && load_file(t, obj, argv[i] + 9, given) != SQ_OK) {
            return SQ_FAIL;
        }
    }
    bool positional_done = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (t->config_file && !strcmp(a, "--config")) { i++; continue; }
        if (t->config_file && !strncmp(a, "--config=", 9)) continue;
        if (strncmp(a, "--", 2) && t->positional && !positional_done) {
            if (sq_options_set(t, obj, t->positional, a) != SQ_OK) return SQ_FAIL;
            mark_given(t, sq_options_find(t, t->positional), given);
            positional_done = true;
            continue;
        }
        if (strncmp(a, "--", 2)) return sq_errorf("unexpected argument '%s' (options start with --)", a);
        const char *name = a + 2, *eqv = strchr(name, '=');
        char key[64];
        size_t klen = eqv ? (size_t)(eqv - name) : strlen(name);
        if (klen >= sizeof key) return sq_errorf("unknown option '%s' (sd-qzo %s --help lists them)", a, t->command);
        memcpy(key, name, klen);
        key[klen] = 0;
        const sq_option *d = sq_options_find(t, key), *negated = NULL;
        if (!d && !strncmp(key, "no-", 3) && (negated = sq_options_find(t, key + 3)) && negated->type == SQ_OPT_BOOL) {
            if (eqv) return sq_errorf("--%s takes no value", key);
            *(bool *)field_of(negated, obj) = false;
            mark_given(t, negated, given);
            continue;
        }
        if (!d) return sq_errorf("unknown option '%s' (sd-qzo %s --help lists them)", a, t->command);
        const char *value;
        bool ignored;
        if (eqv) value = eqv + 1;
        else if (d->type == SQ_OPT_BOOL && (i + 1 >= argc || parse_bool(argv[i + 1], &ignored) != SQ_OK)) value = "true";
        else if (i + 1 < argc) value = argv[++i];
        else return sq_errorf("--%s needs a value (sd-qzo %s --help)", key, t->command);
        if (set_row(d, obj, value) != SQ_OK) return SQ_FAIL;
        mark_given(t, d, given);
    }
    return SQ_OK;
}

bool sq_options_given(const sq_option_table *t, const bool *given, const char *name) {
    const sq_option *d = sq_options_find(t, name);
    return given && d && given[d - t->options];
}

void sq_options_format(const sq_option *d, const void *obj, char *buf, size_t size) {
    const char *field = (const char *)obj + d->offset;
    switch (d->type) {
    case SQ_OPT_STR: snprintf(buf, size, "%s", field); break;
    case SQ_OPT_INT: snprintf(buf, size, "%d", *(const int *)field); break;
    case SQ_OPT_I64: snprintf(buf, size, "%lld", (long long)*(const int64_t *)field); break;
    case SQ_OPT_U64: snprintf(buf, size, "%llu", (unsigned long long)*(const uint64_t *)field); break;
    case SQ_OPT_FLOAT:
        if (d->choices && isnan(*(const float *)field)) snprintf(buf, size, "%s", d->choices[0].name);
        else sq_format_float(*(const float *)field, buf, size);
        break;
    case SQ_OPT_BOOL: snprintf(buf, size, "%s", *(const bool *)field ? "true" : "false"); break;
    case SQ_OPT_ENUM: snprintf(buf, size, "%s", sq_options_choice_name(d->choices, *(const int *)field)); break;
    }
}

void sq_options_usage(const sq_option_table *t, FILE *f) {
    void *def = calloc(1, t->struct_size);
    if (!def) return;
    t->defaults(def);
    fputs(t->usage, f);
    fprintf(f, "\noptions%s:\n", t->config_file ? " (config-file keys are the same names; --config FILE reads them)" : "");
    for (int i = 0; i < t->count; i++) {
        const sq_option *d = &t->options[i];
        char def_s[128], flag[80], allowed[256] = "";
        sq_options_format(d, def, def_s, sizeof def_s);
        if (d->alias) snprintf(flag, sizeof flag, "--%s, --%s", d->name, d->alias);
        else snprintf(flag, sizeof flag, "--%s", d->name);
        if (d->type == SQ_OPT_ENUM) choice_list(d->choices, allowed, sizeof allowed);
        fprintf(f, "  %-22s %s", flag, d->help);
        if (allowed[0]) fprintf(f, " (%s)", allowed);
        if (def_s[0]) fprintf(f, " [%s]", def_s);
        fputc('\n', f);
    }
    if (t->epilog) fprintf(f, "\n%s", t->epilog);
    free(def);
}

char *sq_options_json(const sq_option_table *t, const void *obj) {
    cJSON *root = cJSON_CreateObject();
    for (int i = 0; i < t->count; i++) {
        const sq_option *d = &t->options[i];
        const char *field = (const char *)obj + d->offset;
        char buf[64];
        switch (d->type) {
        case SQ_OPT_STR: cJSON_AddStringToObject(root, d->name, field); break;
        case SQ_OPT_INT: cJSON_AddNumberToObject(root, d->name, *(const int *)field); break;
        case SQ_OPT_I64: cJSON_AddNumberToObject(root, d->name, (double)*(const int64_t *)field); break;
        case SQ_OPT_U64:
            sq_options_format(d, obj, buf, sizeof buf);
            cJSON_AddStringToObject(root, d->name, buf);
            break;
        case SQ_OPT_FLOAT:
            // as written: cJSON would print the float's double (9.99999974737875e-06)
            sq_options_format(d, obj, buf, sizeof buf);
            if (isnan(*(const float *)field)) cJSON_AddStringToObject(root, d->name, buf);   // "auto"
            else cJSON_AddRawToObject(root, d->name, buf);
            break;
        case SQ_OPT_BOOL: cJSON_AddBoolToObject(root, d->name, *(const bool *)field); break;
        case SQ_OPT_ENUM: cJSON_AddStringToObject(root, d->name, sq_options_choice_name(d->choices, *(const int *)field)); break;
        }
    }
    char *s = cJSON_Print(root);
    cJSON_Delete(root);
    return s;
}

void sq_options_fingerprint(const sq_option_table *t, const void *obj, char hex[65]) {
    sq_sha256 h;
    sq_sha256_init(&h);
    for (int i = 0; i < t->count; i++) {
        const sq_option *d = &t->options[i];
        if (!d->fingerprint) continue;
        char buf[4200];
        // Floats hash as %.9g, the form earlier releases hashed, so the run.json
        // fingerprints of existing runs stay valid for --resume.
        if (d->type == SQ_OPT_FLOAT) snprintf(buf, sizeof buf, "%.9g", (double)*(const float *)((const char *)obj + d->offset));
        else sq_options_format(d, obj, buf, sizeof buf);
        sq_sha256_update(&h, d->name, strlen(d->name) + 1);
        sq_sha256_update(&h, buf, strlen(buf) + 1);
    }
    uint8_t digest[32];
    sq_sha256_final(&h, digest);
    sq_sha256_hex(digest, hex);
}
