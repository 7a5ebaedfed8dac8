// qzo/checkpoint.c: save and load QZO checkpoints (see qzo/checkpoint.h). Floats in
// metadata are printed with %.9g, which round-trips every float exactly, and
// doubles with %.17g, so a resumed run sees bit-identical state.
#include "qzo/checkpoint.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
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

// "sd_qzo.train": which scales trained; "sd_qzo.ema": the EMA's settings and state.
// Numbers as strings, like the optimizer's.
static char *train_json(const sq_checkpoint_info *info) {
    cJSON *o = cJSON_CreateObject();
    char buf[32];
    cJSON_AddStringToObject(o, "blocks", info->train_blocks);
    cJSON_AddStringToObject(o, "layers", info->train_layers);
    snprintf(buf, sizeof buf, "%lld", (long long)info->trained_scales);
    cJSON_AddStringToObject(o, "trained_scales", buf);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static char *ema_json(const sq_checkpoint_info *info, int n_ema) {
    cJSON *o = cJSON_CreateObject();
    char buf[32];
    snprintf(buf, sizeof buf, "%.9g", (double)info->ema_beta);
    cJSON_AddStringToObject(o, "beta", buf);
    snprintf(buf, sizeof buf, "%lld", (long long)info->ema_updates);
    cJSON_AddStringToObject(o, "updates", buf);
    snprintf(buf, sizeof buf, "%d", n_ema);
    cJSON_AddStringToObject(o, "tensors", buf);
    cJSON_AddStringToObject(o, "bias_correction", "none");   // it starts at the scales: docs/QZO.md
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

int sq_checkpoint_save(const char *path, const sq_named_scales *layers, int n, const sq_checkpoint_info *info) {
    return sq_checkpoint_save_with_ema(path, layers, n, NULL, 0, info);
}

int sq_checkpoint_save_with_ema(const char *path, const sq_named_scales *layers, int n, const sq_named_scales *ema,
                                int n_ema, const sq_checkpoint_info *info) {
    size_t prefix = strlen(SQ_CHECKPOINT_EMA_PREFIX);
    for (int i = 0; i < n_ema; i++)
        SQ_CHECK(!strncmp(ema[i].name, SQ_CHECKPOINT_EMA_PREFIX, prefix), "checkpoint: EMA tensor '%s' lacks the '%s' prefix",
                 ema[i].name, SQ_CHECKPOINT_EMA_PREFIX);
    SQ_CHECK(n_ema == 0 || info->ema_beta > 0, "checkpoint: EMA tensors without an EMA rate");
    int total = n + n_ema;
    sq_st_tensor_desc *desc = calloc((size_t)total + 1, sizeof *desc);
    float **host = calloc((size_t)total + 1, sizeof *host);
    char *state = state_json(info), *losses = loss_json(info);
    char *train = info->train_blocks[0] ? train_json(info) : NULL, *emas = info->ema_beta > 0 ? ema_json(info, n_ema) : NULL;
    int rc = SQ_FAIL;
    if (!desc || !host || !state || !losses || (info->train_blocks[0] && !train) || (info->ema_beta > 0 && !emas)) {
        sq_errorf("out of host memory saving %s", path);
        goto done;
    }
    for (int i = 0; i < total; i++) {
        const sq_named_scales *ns = i < n ? &layers[i] : &ema[i - n];
        const sq_tensor *t = ns->scales;
        host[i] = malloc(sq_tensor_numel(t) * sizeof(float) + 1);
        if (!host[i]) { sq_errorf("out of host memory saving %s", path); goto done; }
        if (sq_tensor_to_host_f32(host[i], t) != SQ_OK) goto done;
        desc[i] = (sq_st_tensor_desc){.name = ns->name, .dtype = SQ_F32, .ndim = t->ndim, .data = host[i]};
        for (int d = 0; d < t->ndim; d++) desc[i].shape[d] = t->shape[d];
    }
    char group[16], step[32];
    snprintf(group, sizeof group, "%d", info->group_size);
    snprintf(step, sizeof step, "%lld", (long long)info->state.step);
    sq_st_kv meta[8] = {{"sd_qzo.format", "scales-v1"}, {"sd_qzo.base_sha256", info->base_sha256},
                        {"sd_qzo.group_size", group},  {"sd_qzo.step", step},
                        {"sd_qzo.optimizer", state},   {"sd_qzo.loss_history", losses}};
    int n_meta = 6;
    if (train) meta[n_meta++] = (sq_st_kv){"sd_qzo.train", train};
    if (emas) meta[n_meta++] = (sq_st_kv){"sd_qzo.ema", emas};
    rc = sq_st_write(path, desc, total, meta, n_meta);
done:
    for (int i = 0; host && i < total; i++) free(host[i]);
    free(host);
    free(desc);
    free(state);
    free(losses);
    free(train);
    free(emas);
    return rc;
}

static int get_str(cJSON *o, const char *key, const char *path, const char **out) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(v)) return sq_errorf("%s: optimizer state lacks '%s'", path, key);
    *out = v->valuestring;
    return SQ_OK;
}

// Strict number parsing for every metadata field, in this one place: the whole
// string must be the number (no trailing text), inside [lo, hi] / finite.
static int bad_field(const char *path, const char *key, const char *text, const char *want) {
    return sq_errorf("%s: checkpoint field '%s' is '%.40s', not %s", path, key, text, want);
}

static int parse_ll(const char *path, const char *key, const char *text, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (end == text || *end || errno || isspace((unsigned char)text[0]) || v < lo || v > hi) {
        char want[96];
        snprintf(want, sizeof want, "an integer in [%lld, %lld]", lo, hi);
        return bad_field(path, key, text, want);
    }
    *out = v;
    return SQ_OK;
}

static int parse_int(const char *path, const char *key, const char *text, int lo, int hi, int *out) {
    long long v = 0;
    if (parse_ll(path, key, text, lo, hi, &v) != SQ_OK) return SQ_FAIL;
    *out = (int)v;
    return SQ_OK;
}

static int parse_u64(const char *path, const char *key, const char *text, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (end == text || *end || errno || text[0] == '-' || isspace((unsigned char)text[0]))
        return bad_field(path, key, text, "an unsigned integer");
    *out = v;
    return SQ_OK;
}

// A finite float (strtof, as before: bit-identical state on resume), also > 0 when
// positive.
static int parse_float(const char *path, const char *key, const char *text, bool positive, float *out) {
    char *end;
    float v = strtof(text, &end);
    if (end == text || *end || isspace((unsigned char)text[0]) || !isfinite(v) || (positive && !(v > 0)))
        return bad_field(path, key, text, positive ? "a finite number > 0" : "a finite number");
    *out = v;
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
    long long ll = 0;
#define I(k, lo, hi, dst) (parse_ll(path, keys[k], s[k], lo, hi, &ll) == SQ_OK ? ((dst) = ll, 0) : 1)
    if (I(0, 0, 1, c->relative) || parse_float(path, keys[1], s[1], false, &c->momentum) ||
        parse_float(path, keys[2], s[2], false, &c->spike_factor) || I(3, 1, INT32_MAX, c->max_bad_steps) ||
        parse_float(path, keys[4], s[4], true, &st->lr_scale) || I(5, 0, INT32_MAX, st->bad_streak) ||
        I(6, 0, INT64_MAX, st->bad_total) || I(7, 0, SQ_QZO_LOSS_WINDOW - 1, st->loss_pos) ||
        I(8, 0, SQ_QZO_MOMENTUM_TERMS - 1, st->term_pos) || I(9, 0, SQ_QZO_MOMENTUM_TERMS, st->last_new) ||
        I(10, 0, INT64_MAX, st->clipped_total) || I(11, 0, INT64_MAX, st->queries_total))
        return SQ_FAIL;
#undef I
    cJSON *lh = cJSON_GetObjectItemCaseSensitive(o, "loss_window");
    cJSON *th = cJSON_GetObjectItemCaseSensitive(o, "terms");
    cJSON *tc = cJSON_GetObjectItemCaseSensitive(o, "term_count");   // absent: every saved slot is live
    int n_slots = cJSON_GetArraySize(th);
    st->term_count = n_slots;
    if (cJSON_IsString(tc) &&
        parse_int(path, "term_count", tc->valuestring, 0, SQ_QZO_MOMENTUM_TERMS, &st->term_count) != SQ_OK)
        return SQ_FAIL;
    if (!(c->momentum >= 0 && c->momentum < 1) ||
        !(st->lr_scale > 0 && st->lr_scale <= 1) ||
        st->queries_total < st->clipped_total || !cJSON_IsArray(lh) ||
        !cJSON_IsArray(th) || cJSON_GetArraySize(lh) > SQ_QZO_LOSS_WINDOW ||
        cJSON_GetArraySize(th) > SQ_QZO_MOMENTUM_TERMS || st->term_count > n_slots ||
        st->last_new > st->term_count)
        return sq_errorf("%s: optimizer state has invalid spike-recovery or momentum fields", path);
    st->loss_count = cJSON_GetArraySize(lh);
    for (int i = 0; i < st->loss_count; i++) {
        cJSON *e = cJSON_GetArrayItem(lh, i);
        if (!cJSON_IsString(e) || parse_float(path, "loss_window", e->valuestring, false, &st->loss_history[i]) != SQ_OK)
            return sq_errorf("%s: loss window entry %d is not a finite number string", path, i);
    }
    for (int i = 0; i < n_slots; i++) {
        cJSON *e = cJSON_GetArrayItem(th, i);
        unsigned long long counter;
        long long step;
        float d, coeff;
        int used = 0;
        v = cJSON_IsString(e) ? e->valuestring : "";
        if (sscanf(v, "%llu %lld %g %g%n", &counter, &step, &d, &coeff, &used) != 4 || v[used] || v[0] == '-' ||
            step < 0 || !isfinite(d) || !isfinite(coeff))
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
    long long sched = 0, step = 0;
    if (parse_float(path, keys[0], v[0], false, &c->lr) || !(c->lr >= 0) ||
        parse_float(path, keys[1], v[1], true, &c->eps) || parse_float(path, keys[2], v[2], false, &c->clip) ||
        parse_float(path, keys[3], v[3], false, &c->adaptive_clip) ||
        parse_int(path, keys[4], v[4], 1, 64, &c->queries) || parse_u64(path, keys[5], v[5], &c->seed) ||
        parse_ll(path, keys[6], v[6], SQ_LR_CONSTANT, SQ_LR_LINEAR, &sched) ||
        parse_int(path, keys[7], v[7], 0, INT32_MAX, &c->warmup_steps) ||
        parse_int(path, keys[8], v[8], 0, INT32_MAX, &c->total_steps) || parse_ll(path, keys[9], v[9], 0, INT64_MAX, &step) ||
        parse_int(path, keys[10], v[10], 0, SQ_QZO_CLIP_WINDOW, &info->state.history_count) ||
        parse_int(path, keys[11], v[11], 0, SQ_QZO_CLIP_WINDOW - 1, &info->state.history_pos)) {
        if (c->lr < 0) bad_field(path, keys[0], v[0], "a finite number >= 0");
        goto done;
    }
    c->schedule = (sq_lr_schedule)sched;
    info->state.step = step;
    cJSON *h = cJSON_GetObjectItemCaseSensitive(o, "abs_d_history");
    if (info->state.history_count < 0 || info->state.history_count > SQ_QZO_CLIP_WINDOW ||
        info->state.history_pos < 0 || info->state.history_pos >= SQ_QZO_CLIP_WINDOW ||
        !cJSON_IsArray(h) || cJSON_GetArraySize(h) != info->state.history_count) {
        sq_errorf("%s: optimizer state has an invalid clip history", path);
        goto done;
    }
    for (int i = 0; i < info->state.history_count; i++) {
        cJSON *v = cJSON_GetArrayItem(h, i);
        if (!cJSON_IsString(v) || parse_float(path, "abs_d_history", v->valuestring, false, &info->state.abs_d_history[i])) {
            sq_errorf("%s: clip history entry %d is not a finite number string", path, i);
            goto done;
        }
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
    for (cJSON *v = a->child; v; v = v->next) {
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
            cJSON_Delete(a);
            return sq_errorf("%s: sd_qzo.loss_history entry %d is not a finite number", path, i);
        }
        info->loss_history[i++] = v->valuedouble;
    }
    cJSON_Delete(a);
    return SQ_OK;
}

// Every scale a checkpoint holds is finite (negative ones are valid: a Q4_0 GGUF base
// brings them, and the update keeps each scale on its side of 0): a NaN or infinite
// one is refused, naming the tensor, before anything uses it (sample, export and
// --resume all read the metadata through here first).
static int check_scale_values(const sq_safetensors *st, const char *path) {
    for (int i = 0; i < sq_st_count(st); i++) {
        const sq_st_entry *e = sq_st_at(st, i);
        if (e->dtype != SQ_F32) return sq_errorf("%s: tensor '%s' is not F32 scales", path, e->name);
        const float *x = e->data;
        int64_t n = (int64_t)(e->nbytes / sizeof(float));
        for (int64_t j = 0; j < n; j++) {
            float v;
            memcpy(&v, x + j, sizeof v);
            if (!isfinite(v))
                return sq_errorf("%s: tensor '%s' holds an invalid scale (%g at index %lld; scales are finite)",
                                 path, e->name, (double)v, (long long)j);
        }
    }
    return SQ_OK;
}

static bool is_ema_name(const char *name) {
    return !strncmp(name, SQ_CHECKPOINT_EMA_PREFIX, strlen(SQ_CHECKPOINT_EMA_PREFIX));
}

// "sd_qzo.train" (optional): the selection as strings; the caller, which knows the
// model, parses them (qzo/train_selection.h).
static int parse_train(const sq_safetensors *st, const char *path, sq_checkpoint_info *info) {
    const char *text = sq_st_metadata(st, "sd_qzo.train");
    if (!text) return SQ_OK;
    cJSON *o = cJSON_Parse(text);
    const char *blocks = "", *layers = "", *count = "";
    long long n = 0;
    int rc = SQ_FAIL;
    if (!cJSON_IsObject(o)) sq_errorf("%s: sd_qzo.train is not a JSON object", path);
    else if (get_str(o, "blocks", path, &blocks) == SQ_OK && get_str(o, "layers", path, &layers) == SQ_OK &&
             get_str(o, "trained_scales", path, &count) == SQ_OK &&
             parse_ll(path, "trained_scales", count, 1, INT64_MAX, &n) == SQ_OK) {
        if (!blocks[0] || strlen(blocks) >= sizeof info->train_blocks || !layers[0] ||
            strlen(layers) >= sizeof info->train_layers)
            sq_errorf("%s: sd_qzo.train has an empty or overlong 'blocks' or 'layers'", path);
        else {
            snprintf(info->train_blocks, sizeof info->train_blocks, "%s", blocks);
            snprintf(info->train_layers, sizeof info->train_layers, "%s", layers);
            info->trained_scales = n;
            rc = SQ_OK;
        }
    }
    cJSON_Delete(o);
    return rc;
}

// "sd_qzo.ema" (optional) and the "ema.*" tensors: both or neither; each EMA tensor
// the shape of the scales it averages.
static int parse_ema(const sq_safetensors *st, const char *path, sq_checkpoint_info *info) {
    int n_ema = 0;
    for (int i = 0; i < sq_st_count(st); i++) {
        const sq_st_entry *e = sq_st_at(st, i);
        if (!is_ema_name(e->name)) continue;
        n_ema++;
        const sq_st_entry *s = sq_st_find(st, e->name + strlen(SQ_CHECKPOINT_EMA_PREFIX));
        bool same = s && s->ndim == e->ndim;
        for (int d = 0; same && d < e->ndim; d++) same = s->shape[d] == e->shape[d];
        if (!same) return sq_errorf("%s: EMA tensor '%s' has no scales of its shape beside it", path, e->name);
    }
    const char *text = sq_st_metadata(st, "sd_qzo.ema");
    if (!text) {
        if (n_ema) return sq_errorf("%s: holds %d EMA tensors but no sd_qzo.ema metadata", path, n_ema);
        return SQ_OK;
    }
    cJSON *o = cJSON_Parse(text);
    const char *beta = "", *updates = "", *tensors = "";
    long long u = 0, t = 0;
    int rc = SQ_FAIL;
    if (!cJSON_IsObject(o)) sq_errorf("%s: sd_qzo.ema is not a JSON object", path);
    else if (get_str(o, "beta", path, &beta) == SQ_OK && get_str(o, "updates", path, &updates) == SQ_OK &&
             get_str(o, "tensors", path, &tensors) == SQ_OK &&
             parse_float(path, "beta", beta, true, &info->ema_beta) == SQ_OK &&
             parse_ll(path, "updates", updates, 0, INT64_MAX, &u) == SQ_OK &&
             parse_ll(path, "tensors", tensors, 1, INT32_MAX, &t) == SQ_OK) {
        if (!(info->ema_beta < 1)) bad_field(path, "beta", beta, "a number in (0, 1)");
        else if (t != n_ema) sq_errorf("%s: sd_qzo.ema counts %lld EMA tensors, the file holds %d", path, t, n_ema);
        else {
            info->ema_updates = u;
            info->ema_tensors = n_ema;
            rc = SQ_OK;
        }
    }
    if (rc != SQ_OK) info->ema_beta = 0;
    cJSON_Delete(o);
    return rc;
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
    if (parse_int(path, "sd_qzo.group_size", group, 32, 128, &info->group_size) != SQ_OK ||
        (info->group_size != 32 && info->group_size != 64 && info->group_size != 128))
        return sq_errorf("%s: checkpoint field 'sd_qzo.group_size' is '%.40s', not 32, 64 or 128", path, group);
    const char *step = sq_st_metadata(st, "sd_qzo.step");
    long long step_v;
    if (step && parse_ll(path, "sd_qzo.step", step, 0, INT64_MAX, &step_v) != SQ_OK) return SQ_FAIL;
    if (check_scale_values(st, path) != SQ_OK) return SQ_FAIL;
    if (parse_train(st, path, info) != SQ_OK || parse_ema(st, path, info) != SQ_OK) return SQ_FAIL;
    if (parse_state(state, path, info) != SQ_OK || parse_losses(losses, path, info) != SQ_OK) {
        free(info->loss_history);
        info->loss_history = NULL;
        return SQ_FAIL;
    }
    return SQ_OK;
}

int sq_checkpoint_read_file(const char *path, sq_checkpoint_info *info) {
    sq_safetensors *st = NULL;
    if (sq_st_open(&st, path) != SQ_OK) return SQ_FAIL;
    int rc = sq_checkpoint_read_info(st, path, NULL, info);
    sq_st_close(st);
    if (rc != SQ_OK) return SQ_FAIL;
    free(info->loss_history);
    info->loss_history = NULL;
    info->loss_count = 0;
    return SQ_OK;
}

int sq_checkpoint_read_step(const char *path, int64_t *step) {
    sq_checkpoint_info info;
    if (sq_checkpoint_read_file(path, &info) != SQ_OK) return SQ_FAIL;
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
    if (sq_st_count(st) - info->ema_tensors != n) {
        sq_errorf("%s: holds %d scale tensors, the model has %d quantised layers", path, sq_st_count(st) - info->ema_tensors,
                  n);
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

int sq_checkpoint_load_ema(const char *path, const sq_named_scales *layers, int n, bool *loaded) {
    sq_safetensors *st = NULL;
    if (sq_st_open(&st, path) != SQ_OK) return SQ_FAIL;
    int rc = SQ_FAIL;
    if (!sq_st_metadata(st, "sd_qzo.ema")) {
        sq_errorf("%s holds no EMA of the scales (it was trained without --ema)", path);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        char name[300];
        snprintf(name, sizeof name, "%s%s", SQ_CHECKPOINT_EMA_PREFIX, layers[i].name);
        bool here = sq_st_find(st, name) != NULL;
        if (loaded) loaded[i] = here;
        if (here && sq_st_load(st, name, layers[i].scales) != SQ_OK) {
            sq_error_context("%s", path);
            goto done;
        }
    }
    rc = SQ_OK;
done:
    sq_st_close(st);
    return rc;
}
