// core/config.h: JSON config files (diffusers config.json, tokenizer configs,
// training configs) through cJSON, with typed getters that report the file and key.
#ifndef SQ_CONFIG_H
#define SQ_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sq_config sq_config;   // a parsed JSON document + the path it came from

int sq_config_load(sq_config **out, const char *path);          // file must be a JSON object
int sq_config_parse(sq_config **out, const char *text, const char *origin);
void sq_config_free(sq_config *c);
const char *sq_config_path(const sq_config *c);

bool sq_config_has(const sq_config *c, const char *key);
// Getters for top-level keys. The *_or forms return the default when the key is
// absent (or null); the plain forms fail with "FILE: missing key 'k'" or
// "FILE: key 'k' is not an integer". A key of the wrong JSON type is an error for
// the *_or forms too: they return the default and sq_config_check then fails with
// the first such "FILE: key 'k' is not ..." (call it after reading a file's keys).
int sq_config_int(const sq_config *c, const char *key, int64_t *out);
int64_t sq_config_int_or(const sq_config *c, const char *key, int64_t def);
// An integer key (def when absent) that must lie in lo..hi: "FILE: key 'k' is V, outside lo..hi".
int sq_config_int_range(const sq_config *c, const char *key, int64_t def, int64_t lo, int64_t hi, int *out);
int sq_config_check(const sq_config *c);
int sq_config_double(const sq_config *c, const char *key, double *out);
double sq_config_double_or(const sq_config *c, const char *key, double def);
bool sq_config_bool_or(const sq_config *c, const char *key, bool def);
const char *sq_config_string_or(const sq_config *c, const char *key, const char *def);
// Integer array: fills up to max entries, sets *n. Absent key -> *n = 0, SQ_OK.
int sq_config_int_array(const sq_config *c, const char *key, int64_t *out, int max, int *n);
// The raw cJSON object, for modules that need nested access (cast to cJSON *).
void *sq_config_json(const sq_config *c);

// Reads a whole (small) file into a NUL-terminated malloc'ed buffer.
int sq_read_file(const char *path, char **out, size_t *len);

#ifdef __cplusplus
}
#endif

#endif
