// app/train_ranks.c: what the MMDiT phase's processes exchange (app/train.h,
// app/train_loop_state.h): every step's losses, so that all of them take the same
// step (and stop after the same one), and now and then a hash of their scales, which
// must be the same bits everywhere.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/train_loop_state.h"
#include "core/error.h"
#include "core/log.h"

// sq_qzo_combine_fn: the step's losses from every process's share, summed in rank
// order so the bits are the same everywhere.
int sd_train_combine_losses(void *ctx, int64_t step, double *lp, double *lm, int queries) {
    combine_ctx *cc = ctx;
    loop *L = cc->L;
    step_record mine;
    memset(&mine, 0, sizeof mine);
    mine.step = step;
    mine.samples = cc->samples;
    mine.stop = *L->t->stop != 0;
    for (int j = 0; j < queries; j++) { mine.lp[j] = lp[j]; mine.lm[j] = lm[j]; }
    char what[48];
    snprintf(what, sizeof what, "step %lld losses", (long long)step + 1);
    if (sq_dist_allgather(L->t->dist, &mine, sizeof mine, cc->all, what) != SQ_OK) return SQ_FAIL;
    int total = 0;
    for (int r = 0; r < L->world; r++) {
        const step_record *o = &cc->all[r];
        if (o->step != step)
            return sq_errorf("rank %d is at step %lld and rank %d at step %lld: the processes no longer run the same steps",
                             r, (long long)o->step + 1, L->rank, (long long)step + 1);
        if (o->stop) L->stop_all = true;
        total += o->samples;
    }
    if (L->t->opt.split == SD_SPLIT_BATCH) {
        for (int j = 0; j < queries; j++) {
            double p = 0, m = 0;
            for (int r = 0; r < L->world; r++) {
                if (!cc->all[r].samples) continue;   // an idle process's losses are not numbers
                p += (double)cc->all[r].samples * cc->all[r].lp[j];
                m += (double)cc->all[r].samples * cc->all[r].lm[j];
            }
            lp[j] = p / total;
            lm[j] = m / total;
        }
    } else {
        for (int r = 0; r < L->world; r++) {
            int lo, hi;
            sd_train_share(queries, r, L->world, &lo, &hi);
            for (int j = lo; j < hi; j++) { lp[j] = cc->all[r].lp[j]; lm[j] = cc->all[r].lm[j]; }
        }
    }
    return SQ_OK;
}

// The processes compare a hash of their scales (after step `step`): a difference
// means they no longer train the same model, and the run stops naming the ranks.
int sd_train_check_scales_same(loop *L, int64_t step) {
    if (L->world == 1) return SQ_OK;
    uint64_t h = SQ_DIST_HASH_INIT;
    for (int i = 0; i < L->sl.count; i++) {
        size_t n = (size_t)sq_tensor_numel(L->sl.scales[i]);
        if (n > L->hash_cap) {
            free(L->hash_buf);
            L->hash_cap = 0;
            if (!(L->hash_buf = malloc(n * sizeof(float)))) return sq_errorf("out of host memory");
            L->hash_cap = n;
        }
        if (sq_tensor_to_host_f32(L->hash_buf, L->sl.scales[i]) != SQ_OK) return SQ_FAIL;
        h = sq_dist_hash(h, L->hash_buf, n * sizeof(float));
    }
    uint64_t *all = calloc((size_t)L->world, sizeof *all);
    if (!all) return sq_errorf("out of host memory");
    char what[48];
    snprintf(what, sizeof what, "step %lld scales", (long long)step);
    int rc = sq_dist_allgather(L->t->dist, &h, sizeof h, all, what);
    for (int r = 1; rc == SQ_OK && r < L->world; r++)
        if (all[r] != all[0])
            rc = sq_errorf("after step %lld the scales differ between processes: rank 0 holds %016llx, rank %d %016llx "
                           "(the processes must run the same build on the same kind of device)",
                           (long long)step, (unsigned long long)all[0], r, (unsigned long long)all[r]);
    if (rc == SQ_OK) sq_log_info("step %lld: the scales of the %d processes are identical (hash %016llx)", (long long)step,
                                 L->world, (unsigned long long)all[0]);
    free(all);
    return rc;
}
