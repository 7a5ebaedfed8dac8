// app/train_log.c: see app/train_log.h.
#include "app/train_log.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/error.h"

#include <stddef.h>

// Every column after "step", in file order: one table for JSONL, CSV and reloading.
typedef struct {
    const char *key;
    size_t offset;
    double missing;   // the value a reloaded record gets when a key is absent (older logs)
} column;

#define COL(f, miss) {#f, offsetof(sd_step_record, f), miss}
#define RCOL(key, i) {key, offsetof(sd_step_record, rel_perturb) + (i) * sizeof(double), NAN}
static const column columns[] = {
    COL(loss, NAN), COL(loss_plus, NAN), COL(loss_minus, NAN), COL(d_raw, NAN), COL(d_clipped, NAN), COL(lr, NAN),
    COL(seconds, 0), COL(gpu_mem_gib, 0), COL(val_loss, NAN), COL(discarded, 0), COL(clipped_share, NAN),
    COL(zero_share, NAN), RCOL("rel_perturb_attn_qkv", 0), RCOL("rel_perturb_attn_out", 1), RCOL("rel_perturb_mlp_in", 2),
    RCOL("rel_perturb_mlp_out", 3), RCOL("rel_perturb_adaln", 4), COL(val_loss_ema, NAN),
};
#define N_COLUMNS ((int)(sizeof columns / sizeof columns[0]))

static double *col(sd_step_record *r, int i) { return (double *)((char *)r + columns[i].offset); }
static double col_value(const sd_step_record *r, int i) { return *(const double *)((const char *)r + columns[i].offset); }

sd_step_record sd_step_record_empty(int64_t step) {
    sd_step_record r;
    memset(&r, 0, sizeof r);
    r.step = step;
    for (int i = 0; i < N_COLUMNS; i++) *col(&r, i) = NAN;
    r.seconds = r.gpu_mem_gib = r.discarded = 0;
    return r;
}

static void write_csv_header(FILE *f) {
    fputs("step", f);
    for (int i = 0; i < N_COLUMNS; i++) fprintf(f, ",%s", columns[i].key);
    fputc('\n', f);
}

static int push(sd_train_log *log, const sd_step_record *r) {
    if (log->count == log->cap) {
        int cap = log->cap ? 2 * log->cap : 256;
        sd_step_record *n = realloc(log->rec, (size_t)cap * sizeof *n);
        if (!n) return sq_errorf("out of host memory for the training log");
        log->rec = n;
        log->cap = cap;
    }
    log->rec[log->count++] = *r;
    return SQ_OK;
}

// JSON has no inf or nan: a non-finite value (an all-zero layer type's relative
// perturbation, a diverged validation loss) is null, like an unmeasured one.
static void json_num(FILE *f, const char *key, double v, bool last) {
    if (!isfinite(v)) fprintf(f, "\"%s\": null%s", key, last ? "" : ", ");
    else fprintf(f, "\"%s\": %.17g%s", key, v, last ? "" : ", ");   // exact: a resume reloads these
}

static void write_json(FILE *f, const sd_step_record *r) {
    fprintf(f, "{\"step\": %lld, ", (long long)r->step);
    for (int i = 0; i < N_COLUMNS; i++) json_num(f, columns[i].key, col_value(r, i), i == N_COLUMNS - 1);
    fprintf(f, "}\n");
}

static void csv_num(FILE *f, double v, bool last) {
    if (!isnan(v)) fprintf(f, "%.9g", v);
    fputc(last ? '\n' : ',', f);
}

static void write_csv(FILE *f, const sd_step_record *r) {
    fprintf(f, "%lld,", (long long)r->step);
    for (int i = 0; i < N_COLUMNS; i++) csv_num(f, col_value(r, i), i == N_COLUMNS - 1);
}

static double num(const cJSON *o, const char *k, double def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

static int reload(sd_train_log *log, const char *path, int64_t resume_step) {
    FILE *f = fopen(path, "r");
    if (!f) return SQ_OK;   // a run resumed from a copied checkpoint may have no log
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        cJSON *o = cJSON_Parse(line);
        if (!o) continue;   // a line cut by a crash mid-write: that step runs again
        sd_step_record r = sd_step_record_empty((int64_t)num(o, "step", -1));
        for (int i = 0; i < N_COLUMNS; i++) *col(&r, i) = num(o, columns[i].key, columns[i].missing);
        cJSON_Delete(o);
        if (r.step >= 0 && r.step <= resume_step && push(log, &r) != SQ_OK) {
            fclose(f);
            return SQ_FAIL;
        }
    }
    fclose(f);
    return SQ_OK;
}

// Rewrites a file from the kept records through a temp file + rename, so a crash
// while resuming never leaves a log with neither the old nor the new contents.
static int rewrite(sd_train_log *log, const char *path, bool csv) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return sq_error_errno("cannot write %s", tmp);
    if (csv) write_csv_header(f);
    for (int i = 0; i < log->count; i++) csv ? write_csv(f, &log->rec[i]) : write_json(f, &log->rec[i]);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return sq_error_errno("cannot write %s", path);
    }
    return SQ_OK;
}

int sd_train_log_open(sd_train_log *log, const char *dir, int64_t resume_step) {
    memset(log, 0, sizeof *log);
    snprintf(log->dir, sizeof log->dir, "%s", dir);
    char pj[1100], pc[1100];
    snprintf(pj, sizeof pj, "%s/log.jsonl", dir);
    snprintf(pc, sizeof pc, "%s/log.csv", dir);
    if (resume_step >= 0 && reload(log, pj, resume_step) != SQ_OK) return SQ_FAIL;
    if (rewrite(log, pj, false) != SQ_OK || rewrite(log, pc, true) != SQ_OK) return SQ_FAIL;
    log->jsonl = fopen(pj, "a");
    log->csv = fopen(pc, "a");
    if (!log->jsonl || !log->csv) {
        sd_train_log_close(log);
        return sq_error_errno("cannot open the training log in %s", dir);
    }
    return SQ_OK;
}

int sd_train_log_append(sd_train_log *log, const sd_step_record *r) {
    if (push(log, r) != SQ_OK) return SQ_FAIL;
    write_json(log->jsonl, r);
    write_csv(log->csv, r);
    // flushed every step: the log is how a user sees a crashed run's last steps
    if (fflush(log->jsonl) != 0 || fflush(log->csv) != 0) return sq_error_errno("writing the training log in %s", log->dir);
    return SQ_OK;
}

void sd_train_log_close(sd_train_log *log) {
    if (log->jsonl) fclose(log->jsonl);
    if (log->csv) fclose(log->csv);
    free(log->rec);
    memset(log, 0, sizeof *log);
}
