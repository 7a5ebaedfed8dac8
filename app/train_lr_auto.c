// app/train_lr_auto.c: see app/train_lr_auto.h.
#include "app/train_lr_auto.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/progress.h"

int sd_lr_auto(const sd_lr_auto_ops *ops, float center, int steps, sd_lr_auto_result *res) {
    memset(res, 0, sizeof *res);
    res->best = -1;
    double t0 = sq_time_now();
    for (int p = 0; p <= SD_LR_AUTO_POINTS; p++) res->at_step[p] = (int64_t)steps * p / SD_LR_AUTO_POINTS;
    if (ops->save_start(ops->ctx) != SQ_OK) return SQ_FAIL;
    double v0;
    if (ops->val_loss(ops->ctx, &v0) != SQ_OK) return SQ_FAIL;
    double best_score = INFINITY;
    for (int c = 0; c < SD_LR_AUTO_CANDIDATES; c++) {
        // half-decade steps: center x 10^(-1, -0.5, 0, 0.5, 1)
        res->lr[c] = center * powf(10.0f, 0.5f * (float)(c - SD_LR_AUTO_CANDIDATES / 2));
        if (ops->restore_start(ops->ctx) != SQ_OK) return SQ_FAIL;
        res->val[c][0] = v0;
        bool stopped = false;
        for (int p = 1; p <= SD_LR_AUTO_POINTS; p++) {
            res->val[c][p] = INFINITY;
            if (!stopped && ops->run(ops->ctx, res->lr[c], res->at_step[p - 1], res->at_step[p], &stopped) != SQ_OK)
                return SQ_FAIL;
            if (!stopped && ops->val_loss(ops->ctx, &res->val[c][p]) != SQ_OK) return SQ_FAIL;
        }
        double score = res->val[c][SD_LR_AUTO_POINTS];
        if (!isfinite(score)) score = INFINITY;
        sq_log_info("lr auto: candidate %d/%d, lr %.3g: validation loss %.6f -> %.6f%s", c + 1, SD_LR_AUTO_CANDIDATES,
                    (double)res->lr[c], v0, score, stopped ? " (stopped: repeated spikes)" : "");
        if (score < best_score) {
            best_score = score;
            res->best = c;
        }
    }
    if (ops->restore_start(ops->ctx) != SQ_OK) return SQ_FAIL;
    res->seconds = sq_time_now() - t0;
    if (res->best < 0)
        return sq_errorf("--lr auto: every candidate rate (%.3g to %.3g) failed; give --lr and a smaller --eps",
                         (double)res->lr[0], (double)res->lr[SD_LR_AUTO_CANDIDATES - 1]);
    if (best_score >= v0)
        sq_log_warn("--lr auto: no candidate lowered the validation loss in %d steps (best %.6f, before %.6f); "
                    "training with the best, %.3g", steps, best_score, v0, (double)res->lr[res->best]);
    sq_log_info("lr auto: chose lr %.3g (validation loss %.6f after %d steps; %.0f s)", (double)res->lr[res->best],
                best_score, steps, res->seconds);
    return SQ_OK;
}

int sd_lr_auto_write(const char *dir, const sd_lr_auto_result *res) {
    char path[1100], tmp[1200];
    snprintf(path, sizeof path, "%s/lr_auto.json", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return sq_error_errno("cannot write %s", tmp);
    fprintf(f, "{\"chosen_lr\": %.9g, \"seconds\": %.3f, \"at_step\": [", (double)res->lr[res->best], res->seconds);
    for (int p = 0; p <= SD_LR_AUTO_POINTS; p++) fprintf(f, p ? ", %lld" : "%lld", (long long)res->at_step[p]);
    fputs("], \"candidates\": [\n", f);
    for (int c = 0; c < SD_LR_AUTO_CANDIDATES; c++) {
        fprintf(f, "  {\"lr\": %.9g, \"val_loss\": [", (double)res->lr[c]);
        for (int p = 0; p <= SD_LR_AUTO_POINTS; p++) {
            double v = res->val[c][p];
            if (isfinite(v)) fprintf(f, p ? ", %.9g" : "%.9g", v);
            else fputs(p ? ", null" : "null", f);
        }
        fprintf(f, "]}%s\n", c + 1 < SD_LR_AUTO_CANDIDATES ? "," : "");
    }
    fputs("]}\n", f);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return sq_error_errno("cannot write %s", path);
    }
    return SQ_OK;
}

int sd_lr_auto_read(const char *dir, sd_lr_auto_result *res) {
    char path[1100], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/lr_auto.json", dir);
    memset(res, 0, sizeof *res);
    res->best = -1;
    if (sq_read_file(path, &text, &len) != SQ_OK) return SQ_FAIL;
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *chosen = cJSON_GetObjectItemCaseSensitive(root, "chosen_lr");
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(root, "at_step");
    const cJSON *cands = cJSON_GetObjectItemCaseSensitive(root, "candidates");
    const cJSON *secs = cJSON_GetObjectItemCaseSensitive(root, "seconds");
    bool ok = cJSON_IsNumber(chosen) && cJSON_IsArray(at) && cJSON_GetArraySize(at) == SD_LR_AUTO_POINTS + 1 &&
              cJSON_IsArray(cands) && cJSON_GetArraySize(cands) == SD_LR_AUTO_CANDIDATES;
    if (ok) {
        res->seconds = cJSON_IsNumber(secs) ? secs->valuedouble : 0;
        for (int p = 0; ok && p <= SD_LR_AUTO_POINTS; p++) {
            const cJSON *v = cJSON_GetArrayItem(at, p);
            // a step count: an exact non-negative integer (a cast of anything else is undefined)
            ok = cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 9007199254740992.0 &&
                 v->valuedouble == floor(v->valuedouble);
            if (ok) res->at_step[p] = (int64_t)v->valuedouble;
        }
        for (int c = 0; ok && c < SD_LR_AUTO_CANDIDATES; c++) {
            const cJSON *o = cJSON_GetArrayItem(cands, c);
            const cJSON *lr = cJSON_GetObjectItemCaseSensitive(o, "lr");
            const cJSON *val = cJSON_GetObjectItemCaseSensitive(o, "val_loss");
            ok = cJSON_IsNumber(lr) && cJSON_IsArray(val) && cJSON_GetArraySize(val) == SD_LR_AUTO_POINTS + 1;
            if (!ok) break;
            res->lr[c] = (float)lr->valuedouble;   // written with %.9g: the same float
            if (res->lr[c] == (float)chosen->valuedouble) res->best = c;
            for (int p = 0; ok && p <= SD_LR_AUTO_POINTS; p++) {
                const cJSON *v = cJSON_GetArrayItem(val, p);
                ok = cJSON_IsNumber(v) || cJSON_IsNull(v);
                res->val[c][p] = cJSON_IsNumber(v) ? v->valuedouble : INFINITY;
            }
        }
        ok = ok && res->best >= 0;
    }
    cJSON_Delete(root);
    if (!ok) {
        res->best = -1;
        return sq_errorf("%s: not an --lr auto result (%d candidates, %d points each, one of them the chosen rate)",
                         path, SD_LR_AUTO_CANDIDATES, SD_LR_AUTO_POINTS + 1);
    }
    return SQ_OK;
}
