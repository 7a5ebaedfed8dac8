// core/config.c: JSON configuration files through cJSON, with getters whose
// errors name the file and the key.
#include "core/config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"

#define MAX_CONFIG_BYTES (64u << 20)

struct sq_config {
    cJSON *root;
    char *path;
    char *first_error;   // the first wrong-typed key a *_or getter met (see sq_config_check)
};

int sq_read_file(const char *path, char **out, size_t *len) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return sq_error_errno("%s: cannot open", path);
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) { fclose(f); return sq_errorf("%s: not a regular file", path); }
    if ((uint64_t)sb.st_size > MAX_CONFIG_BYTES) { fclose(f); return sq_errorf("%s: %lld bytes is too large for a config file", path, (long long)sb.st_size); }
    char *buf = malloc((size_t)sb.st_size + 1);
    if (!buf) { fclose(f); return sq_errorf("out of host memory reading %s", path); }
    size_t n = fread(buf, 1, (size_t)sb.st_size, f);
    int err = ferror(f);
    fclose(f);
    if (err || n != (size_t)sb.st_size) { free(buf); return sq_errorf("%s: read error", path); }
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return SQ_OK;
}

int sq_config_parse(sq_config **out, const char *text, const char *origin) {
    *out = NULL;
    cJSON *root = cJSON_Parse(text);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long pos = at && at >= text ? (long)(at - text) : -1;
        return sq_errorf("%s: not valid JSON (near byte %ld)", origin, pos);
    }
    if (!cJSON_IsObject(root)) { cJSON_Delete(root); return sq_errorf("%s: expected a JSON object", origin); }
    sq_config *c = calloc(1, sizeof *c);
    if (!c) { cJSON_Delete(root); return sq_errorf("out of host memory"); }
    c->root = root;
    c->path = strdup(origin);
    *out = c;
    return SQ_OK;
}

int sq_config_load(sq_config **out, const char *path) {
    char *text;
    if (sq_read_file(path, &text, NULL) != SQ_OK) return SQ_FAIL;
    int rc = sq_config_parse(out, text, path);
    free(text);
    return rc;
}

void sq_config_free(sq_config *c) {
    if (!c) return;
    cJSON_Delete(c->root);
    free(c->path);
    free(c->first_error);
    free(c);
}

const char *sq_config_path(const sq_config *c) { return c->path; }
void *sq_config_json(const sq_config *c) { return c->root; }

static const cJSON *get(const sq_config *c, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->root, key);
    return cJSON_IsNull(v) ? NULL : v;
}

bool sq_config_has(const sq_config *c, const char *key) { return get(c, key) != NULL; }

static bool is_int(const cJSON *v) {
    return cJSON_IsNumber(v) && fabs(v->valuedouble) < 9007199254740992.0 && v->valuedouble == floor(v->valuedouble);
}

int sq_config_int(const sq_config *c, const char *key, int64_t *out) {
    const cJSON *v = get(c, key);
    if (!v) return sq_errorf("%s: missing key '%s'", c->path, key);
    if (!is_int(v)) return sq_errorf("%s: key '%s' is not an integer", c->path, key);
    *out = (int64_t)v->valuedouble;
    return SQ_OK;
}

// A *_or getter that meets a key of the wrong JSON type returns the default and keeps
// the first such error for sq_config_check (the getters' signatures have no status).
static void wrong_type(const sq_config *c, const char *key, const char *what) {
    sq_errorf("%s: key '%s' is not %s", c->path, key, what);
    if (!c->first_error) ((sq_config *)c)->first_error = strdup(sq_error_message());
}

int sq_config_check(const sq_config *c) {
    if (!c->first_error) return SQ_OK;
    return sq_errorf("%s", c->first_error);
}

int64_t sq_config_int_or(const sq_config *c, const char *key, int64_t def) {
    const cJSON *v = get(c, key);
    if (!v) return def;
    if (!is_int(v)) { wrong_type(c, key, "an integer"); return def; }
    return (int64_t)v->valuedouble;
}

int sq_config_int_range(const sq_config *c, const char *key, int64_t def, int64_t lo, int64_t hi, int *out) {
    const cJSON *v = get(c, key);
    int64_t x = def;
    if (v) {
        if (!is_int(v)) return sq_errorf("%s: key '%s' is not an integer", c->path, key);
        x = (int64_t)v->valuedouble;
    }
    if (x < lo || x > hi)
        return sq_errorf("%s: key '%s' is %lld, outside %lld..%lld", c->path, key, (long long)x, (long long)lo, (long long)hi);
    *out = (int)x;
    return SQ_OK;
}

int sq_config_double(const sq_config *c, const char *key, double *out) {
    const cJSON *v = get(c, key);
    if (!v) return sq_errorf("%s: missing key '%s'", c->path, key);
    if (!cJSON_IsNumber(v)) return sq_errorf("%s: key '%s' is not a number", c->path, key);
    *out = v->valuedouble;
    return SQ_OK;
}

double sq_config_double_or(const sq_config *c, const char *key, double def) {
    const cJSON *v = get(c, key);
    if (!v) return def;
    if (!cJSON_IsNumber(v)) { wrong_type(c, key, "a number"); return def; }
    return v->valuedouble;
}

bool sq_config_bool_or(const sq_config *c, const char *key, bool def) {
    const cJSON *v = get(c, key);
    if (!v) return def;
    if (!cJSON_IsBool(v)) { wrong_type(c, key, "true or false"); return def; }
    return cJSON_IsTrue(v);
}

const char *sq_config_string_or(const sq_config *c, const char *key, const char *def) {
    const cJSON *v = get(c, key);
    if (!v) return def;
    if (!cJSON_IsString(v)) { wrong_type(c, key, "a string"); return def; }
    return v->valuestring;
}

int sq_config_int_array(const sq_config *c, const char *key, int64_t *out, int max, int *n) {
    *n = 0;
    const cJSON *v = get(c, key);
    if (!v) return SQ_OK;
    if (!cJSON_IsArray(v)) return sq_errorf("%s: key '%s' is not an array", c->path, key);
    int count = cJSON_GetArraySize(v);
    if (count > max) return sq_errorf("%s: key '%s' has %d entries (at most %d)", c->path, key, count, max);
    for (int i = 0; i < count; i++) {
        const cJSON *e = cJSON_GetArrayItem(v, i);
        if (!is_int(e)) return sq_errorf("%s: key '%s' entry %d is not an integer", c->path, key, i);
        out[i] = (int64_t)e->valuedouble;
    }
    *n = count;
    return SQ_OK;
}
