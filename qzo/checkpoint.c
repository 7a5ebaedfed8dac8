// qzo/checkpoint.c: save and load QZO checkpoints (see qzo/checkpoint.h). Floats in
// metadata are printed with %.9g, which round-trips every float exactly, and
// doubles with %.17g, so a resumed run sees bit-identical state.
#include "qzo/checkpoint.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/safetensors.h"

static char *state_json(const sq_checkpoint_info *info) {
    cJSON *o = cJSON_CreateObject();
    const sq_qzo_config *c = &info->config;
    char buf[64];
    // numbers as strings keep full precision independent of cJSON's printing
#define PUT_F(key, v) (snprintf(buf, sizeof buf, "%.9g", (double)(v)), cJSON_AddStringToObject(o, key, buf))
#define PUT_I(key, v) (snprintf(buf, sizeof buf, "%lld", (long long)(v)), cJSON_AddStringToObject(o, key, buf))
    PUT_F("lr", c->lr);
    PUT_F("eps", c->eps);
    PUT_F("clip", c->clip);
    PUT_F("adaptive_clip", c->adaptive_clip);
    PUT_I("queries", c->queries);
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)c->seed);
    cJSON_AddStringToObject(o, "seed", buf);
    PUT_I("schedule", c->schedule);
    PUT_I("warmup_steps", c->warmup_steps);
    PUT_I("total_steps", c->total_steps);
    PUT_I("step", info->state.step);
    PUT_I("history_count", info->state.history_count);
    PUT_I("history_pos", info->state.history_pos);
    cJSON *h = cJSON_AddArrayToObject(o, "abs_d_history");
    for (int i = 0; i < info->state.history_count; i++) {
        snprintf(buf, sizeof buf, "%.9g", (double)info->state.abs_d_history[i]);
        cJSON_AddItemToArray(h, cJSON_CreateString(buf));
    }
    // Since the relative mode, momentum and spike recovery (absent in older checkpoints).
    const sq_qzo_state *st = &info->state;
    PUT_I("relative", c->relative);
    PUT_F("momentum", c->momentum);
    PUT_F("spike_factor", c->spike_factor);
    PUT_I("max_bad_steps", c->max_bad_steps);
    PUT_F("lr_scale", st->lr_scale);
    PUT_I("bad_streak", st->bad_streak);
    PUT_I("bad_total", st->bad_total);
    PUT_I("clipped_total", st->clipped_total);
    PUT_I("queries_total", st->queries_total);
    PUT_I("loss_pos", st->loss_pos);
    PUT_I("term_pos", st->term_pos);
    PUT_I("last_new", st->last_new);
    cJSON *lh = cJSON_AddArrayToObject(o, "loss_window");
    for (int i = 0; i < st->loss_count; i++) {
        snprintf(buf, sizeof buf, "%.9g", (double)st->loss_history[i]);
        cJSON_AddItemToArray(lh, cJSON_CreateString(buf));
    }
    // terms: "counter step d last_coeff" of ring slot i at index i, for the slots in
    // use; all of them when those are not slots 0..term_count-1 (a step discarded
    // after the ring wrapped leaves a gap at term_pos), with term_count saying how
    // many are live.
    PUT_I("term_count", st->term_count);
    int n_slots = st->term_count < SQ_QZO_MOMENTUM_TERMS && st->term_pos == st->term_count ? st->term_count
                                                                                          : SQ_QZO_MOMENTUM_TERMS;
    cJSON *th = cJSON_AddArrayToObject(o, "terms");
    for (int i = 0; i < n_slots; i++) {
        const sq_qzo_term *t = &st->terms[i];
        snprintf(buf, sizeof buf, "%llu %lld %.9g %.9g", (unsigned long long)t->counter, (long long)t->step,
                 (double)t->d, (double)st->last_coeff[i]);
        cJSON_AddItemToArray(th, cJSON_CreateString(buf));
    }
#undef PUT_F
#undef PUT_I
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static char *loss_json(const sq_checkpoint_info *info) {
    size_t cap = 16 + (size_t)info->loss_count * 26;
    char *s = malloc(cap);
    if (!s) return NULL;
    size_t n = 0;
    s[n++] = '[';
    for (int i = 0; i < info->loss_count; i++)
        n += (size_t)snprintf(s + n, cap - n, i ? ",%.17g" : "%.17g", info->loss_history[i]);
    s[n++] = ']';
    s[n] = 0;
    return s;
}

int sq_checkpoint_save(const char *path, const sq_named_scales *layers, int n, const sq_checkpoint_info *info) {
    sq_st_tensor_desc *desc = calloc((size_t)n, sizeof *desc);
    float **host = calloc((size_t)n, sizeof *host);
    char *state = state_json(info), *losses = loss_json(info);
    int rc = SQ_FAIL;
    if (!desc || !host || !state || !losses) { sq_errorf("out of host memory saving %s", path); goto done; }
    for (int i = 0; i < n; i++) {
        const sq_tensor *t = layers[i].scales;
        host[i] = malloc(sq_tensor_numel(t) * sizeof(float) + 1);
        if (!host[i]) { sq_errorf("out of host memory saving %s", path); goto done; }
        if (sq_tensor_to_host_f32(host[i], t) != SQ_OK) goto done;
        desc[i] = (sq_st_tensor_desc){.name = layers[i].name, .dtype = SQ_F32, .ndim = t->ndim, .data = host[i]};
        for (int d = 0; d < t->ndim; d++) desc[i].shape[d] = t->shape[d];
    }
    char group[16], step[32];
    snprintf(group, sizeof group, "%d", info->group_size);
    snprintf(step, sizeof step, "%lld", (long long)info->state.step);
    sq_st_kv meta[] = {{"sd_qzo.format", "scales-v1"}, {"sd_qzo.base_sha256", info->base_sha256},
                       {"sd_qzo.group_size", group},  {"sd_qzo.step", step},
                       {"sd_qzo.optimizer", state},   {"sd_qzo.loss_history", losses}};
    rc = sq_st_write(path, desc, n, meta, (int)(sizeof meta / sizeof meta[0]));
done:
    for (int i = 0; host && i < n; i++) free(host[i]);
    free(host);
    free(desc);
    free(state);
    free(losses);
    return rc;
}

static int get_str(cJSON *o, const char *key, const char *path, const char **out) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(v)) return sq_errorf("%s: optimizer state lacks '%s'", path, key);
    *out = v->valuestring;
    return SQ_OK;
}

// The keys added with the relative mode, momentum and spike recovery: optional (a
// checkpoint from before has none, and gets the defaults), validated when present.
static int parse_state_v2(cJSON *o, const char *path, sq_checkpoint_info *info) {
    sq_qzo_config *c = &info->config;
    sq_qzo_state *st = &info->state;
    const char *v;
    if (!cJSON_GetObjectItemCaseSensitive(o, "lr_scale")) {
        c->relative = 0;
        c->momentum = 0.0f;
        return SQ_OK;
    }
    static const char *keys[] = {"relative", "momentum", "spike_factor", "max_bad_steps", "lr_scale", "bad_streak",
                                 "bad_total", "loss_pos", "term_pos", "last_new", "clipped_total", "queries_total"};
    const char *s[12];
    for (int i = 0; i < 12; i++)
        if (get_str(o, keys[i], path, &s[i]) != SQ_OK) return SQ_FAIL;
    c->relative = atoi(s[0]);
    c->momentum = strtof(s[1], NULL);
    c->spike_factor = strtof(s[2], NULL);
    c->max_bad_steps = atoi(s[3]);
    st->lr_scale = strtof(s[4], NULL);
    st->bad_streak = atoi(s[5]);
    st->bad_total = strtoll(s[6], NULL, 10);
    st->loss_pos = atoi(s[7]);
    st->term_pos = atoi(s[8]);
    st->last_new = atoi(s[9]);
    st->clipped_total = strtoll(s[10], NULL, 10);
    st->queries_total = strtoll(s[11], NULL, 10);
    cJSON *lh = cJSON_GetObjectItemCaseSensitive(o, "loss_window");
    cJSON *th = cJSON_GetObjectItemCaseSensitive(o, "terms");
    cJSON *tc = cJSON_GetObjectItemCaseSensitive(o, "term_count");   // absent: every saved slot is live
    int n_slots = cJSON_GetArraySize(th);
    st->term_count = cJSON_IsString(tc) ? atoi(tc->valuestring) : n_slots;
    if ((c->relative != 0 && c->relative != 1) || !(c->momentum >= 0 && c->momentum < 1) ||
        !(st->lr_scale > 0 && st->lr_scale <= 1) || st->bad_streak < 0 || st->bad_total < 0 || st->clipped_total < 0 ||
        st->queries_total < st->clipped_total || !cJSON_IsArray(lh) ||
        !cJSON_IsArray(th) || cJSON_GetArraySize(lh) > SQ_QZO_LOSS_WINDOW ||
        cJSON_GetArraySize(th) > SQ_QZO_MOMENTUM_TERMS || st->loss_pos < 0 || st->loss_pos >= SQ_QZO_LOSS_WINDOW ||
        st->term_pos < 0 || st->term_pos >= SQ_QZO_MOMENTUM_TERMS || st->term_count < 0 || st->term_count > n_slots ||
        st->last_new < 0 || st->last_new > st->term_count)
        return sq_errorf("%s: optimizer state has invalid spike-recovery or momentum fields", path);
    st->loss_count = cJSON_GetArraySize(lh);
    for (int i = 0; i < st->loss_count; i++) {
        cJSON *e = cJSON_GetArrayItem(lh, i);
        if (!cJSON_IsString(e)) return sq_errorf("%s: loss window entry %d is not a number string", path, i);
        st->loss_history[i] = strtof(e->valuestring, NULL);
    }
    for (int i = 0; i < n_slots; i++) {
        cJSON *e = cJSON_GetArrayItem(th, i);
        unsigned long long counter;
        long long step;
        float d, coeff;
        v = cJSON_IsString(e) ? e->valuestring : "";
        if (sscanf(v, "%llu %lld %g %g", &counter, &step, &d, &coeff) != 4)
            return sq_errorf("%s: momentum term %d is not 'counter step d coeff'", path, i);
        st->terms[i] = (sq_qzo_term){.counter = counter, .step = step, .d = d};
        st->last_coeff[i] = coeff;
    }
    return SQ_OK;
}

static int parse_state(const char *text, const char *path, sq_checkpoint_info *info) {
    cJSON *o = cJSON_Parse(text);
    if (!cJSON_IsObject(o)) { cJSON_Delete(o); return sq_errorf("%s: sd_qzo.optimizer is not a JSON object", path); }
    static const char *keys[] = {"lr", "eps", "clip", "adaptive_clip", "queries", "seed", "schedule",
                                 "warmup_steps", "total_steps", "step", "history_count", "history_pos"};
    const char *v[12];
    int rc = SQ_FAIL;
    for (int i = 0; i < 12; i++)
        if (get_str(o, keys[i], path, &v[i]) != SQ_OK) goto done;
    sq_qzo_config *c = &info->config;
    sq_qzo_config_defaults(c);
    sq_qzo_state_init(&info->state);
    c->lr = strtof(v[0], NULL);
    c->eps = strtof(v[1], NULL);
    c->clip = strtof(v[2], NULL);
    c->adaptive_clip = strtof(v[3], NULL);
    c->queries = atoi(v[4]);
    c->seed = strtoull(v[5], NULL, 10);
    c->schedule = (sq_lr_schedule)atoi(v[6]);
    c->warmup_steps = atoi(v[7]);
    c->total_steps = atoi(v[8]);
    info->state.step = strtoll(v[9], NULL, 10);
    info->state.history_count = atoi(v[10]);
    info->state.history_pos = atoi(v[11]);
    cJSON *h = cJSON_GetObjectItemCaseSensitive(o, "abs_d_history");
    if (info->state.history_count < 0 || info->state.history_count > SQ_QZO_CLIP_WINDOW ||
        info->state.history_pos < 0 || info->state.history_pos >= SQ_QZO_CLIP_WINDOW ||
        !cJSON_IsArray(h) || cJSON_GetArraySize(h) != info->state.history_count) {
        sq_errorf("%s: optimizer state has an invalid clip history", path);
        goto done;
    }
    for (int i = 0; i < info->state.history_count; i++) {
        cJSON *v = cJSON_GetArrayItem(h, i);
        if (!cJSON_IsString(v)) { sq_errorf("%s: clip history entry %d is not a number string", path, i); goto done; }
        info->state.abs_d_history[i] = strtof(v->valuestring, NULL);
    }
    if (parse_state_v2(o, path, info) != SQ_OK) goto done;
    rc = SQ_OK;
done:
    cJSON_Delete(o);
    return rc;
}

static int parse_losses(const char *text, const char *path, sq_checkpoint_info *info) {
    cJSON *a = cJSON_Parse(text);
    if (!cJSON_IsArray(a)) { cJSON_Delete(a); return sq_errorf("%s: sd_qzo.loss_history is not a JSON array", path); }
    int n = cJSON_GetArraySize(a);
    info->loss_history = malloc(((size_t)n + 1) * sizeof(double));
    if (!info->loss_history) { cJSON_Delete(a); return sq_errorf("out of host memory"); }
    info->loss_count = n;
    int i = 0;
    for (cJSON *v = a->child; v; v = v->next) info->loss_history[i++] = v->valuedouble;
    cJSON_Delete(a);
    return SQ_OK;
}

int sq_checkpoint_read_info(const sq_safetensors *st, const char *path, const char *expect_sha256,
                            sq_checkpoint_info *info) {
    memset(info, 0, sizeof *info);
    const char *fmt = sq_st_metadata(st, "sd_qzo.format");
    const char *base = sq_st_metadata(st, "sd_qzo.base_sha256");
    const char *group = sq_st_metadata(st, "sd_qzo.group_size");
    const char *state = sq_st_metadata(st, "sd_qzo.optimizer");
    const char *losses = sq_st_metadata(st, "sd_qzo.loss_history");
    if (!fmt || strcmp(fmt, "scales-v1") || !base || !group || !state || !losses)
        return sq_errorf("%s: not an sd-qzo scales checkpoint (sd_qzo.* metadata missing)", path);
    if (expect_sha256 && strcmp(expect_sha256, base))
        return sq_errorf("%s: these scales were trained on another base model (hash %.12s…, this model %.12s…)", path, base,
                         expect_sha256);
    snprintf(info->base_sha256, sizeof info->base_sha256, "%s", base);
    info->group_size = atoi(group);
    if (parse_state(state, path, info) != SQ_OK || parse_losses(losses, path, info) != SQ_OK) {
        free(info->loss_history);
        info->loss_history = NULL;
        return SQ_FAIL;
    }
    return SQ_OK;
}

int sq_checkpoint_read_step(const char *path, int64_t *step) {
    sq_safetensors *st = NULL;
    if (sq_st_open(&st, path) != SQ_OK) return SQ_FAIL;
    sq_checkpoint_info info;
    int rc = sq_checkpoint_read_info(st, path, NULL, &info);
    sq_st_close(st);
    if (rc != SQ_OK) return SQ_FAIL;
    free(info.loss_history);
    *step = info.state.step;
    return SQ_OK;
}

int sq_checkpoint_load(const char *path, const sq_named_scales *layers, int n, const char *expect_sha256,
                       sq_checkpoint_info *info) {
    memset(info, 0, sizeof *info);
    sq_safetensors *st = NULL;
    if (sq_st_open(&st, path) != SQ_OK) return SQ_FAIL;
    int rc = SQ_FAIL;
    if (sq_checkpoint_read_info(st, path, expect_sha256, info) != SQ_OK) goto done;
    if (sq_st_count(st) != n) {
        sq_errorf("%s: holds %d scale tensors, the model has %d quantised layers", path, sq_st_count(st), n);
        goto done;
    }
    for (int i = 0; i < n; i++)
        if (sq_st_load(st, layers[i].name, layers[i].scales) != SQ_OK) {
            sq_error_context("%s", path);
            goto done;
        }
    rc = SQ_OK;
done:
    if (rc != SQ_OK) { free(info->loss_history); info->loss_history = NULL; }
    sq_st_close(st);
    return rc;
}
