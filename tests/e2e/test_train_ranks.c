// tests/e2e/test_train_ranks.c: `sd-qzo train` in several CPU processes, the
// multi-GPU code path without GPUs (the socket exchange of distributed/exchange.h), on the
// tiny pipeline and data set of train_fixture.h (batch 4, 4 queries):
//   1. --processes 2 and 4 with --split queries end with scales bit-identical to one
//      process's (the same queries, evaluated elsewhere, applied in the same order);
//      with --split batch within 1e-5 of them (the losses are shard-weighted means:
//      only the order of additions differs). The ranks compare scale hashes (rank 0
//      logs that they agree), rank 0 alone writes OUT, run.json records the world
//      size and split;
//   2. two ranks started the way torchrun/srun start them (RANK, WORLD_SIZE,
//      MASTER_ADDR, MASTER_PORT in the environment): rank 1 killed with SIGKILL makes
//      rank 0 stop within seconds naming rank 1, its last checkpoint intact; rank 1
//      stopped with SIGSTOP (a hang) makes rank 0 stop after --rank-timeout naming it;
//   3. SIGINT to the launcher stops every rank after the same step and rank 0 saves
//      once; --resume with 4 processes instead of 2 finishes the run with the scales
//      of an uninterrupted one-process run, bit for bit;
//   4. refusals, one line each: --gpus 2 in a build without CUDA/NCCL/GPUs, a batch
//      smaller than the processes with --split batch, --processes under a launcher.
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/path.h"
#include "core/safetensors.h"
#include "distributed/exchange.h"
#include "kernels/backend.h"
#include "qzo/checkpoint.h"
#include "tests/e2e/train_fixture.h"
#include "tests/test_util.h"

static const char *bin;
static char tmp[64] = "/tmp/sq-e2e-ranks-XXXXXX";

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void cmd_for(char *cmd, size_t size, const char *out, int steps, const char *extra) {
    char flags[2000];
    snprintf(flags, sizeof flags, "--batch-size 4 --queries 4 --cache-dir %s/cache --sample-every 0 --val-every 0 "
             "--save-every 2 --lr 2e-3 --eps 2e-3 %s", tmp, extra);
    e2e_train_cmd(cmd, size, bin, tmp, out, steps, flags);
}

static bool run_ok(const char *out, int steps, const char *extra, char **log) {
    char cmd[4096];
    cmd_for(cmd, sizeof cmd, out, steps, extra);
    int rc = tu_run(cmd, log);
    TU_CHECK(rc == 0, "%s (%s) exits 0 (got %d):\n%s", out, extra, rc, *log ? *log : "");
    return rc == 0;
}

// Largest |a - b| / max|b| over every scale of two checkpoints (0: bit-identical);
// +inf when they cannot be compared.
static double ckpt_diff(const char *out_a, const char *out_b, bool *bitwise) {
    char a[256], b[256];
    snprintf(a, sizeof a, "%s/%s/checkpoint.safetensors", tmp, out_a);
    snprintf(b, sizeof b, "%s/%s/checkpoint.safetensors", tmp, out_b);
    sq_safetensors *sa = NULL, *sb = NULL;
    *bitwise = false;
    if (sq_st_open(&sa, a) != SQ_OK || sq_st_open(&sb, b) != SQ_OK) {
        if (sa) sq_st_close(sa);
        return INFINITY;
    }
    double maxd = 0, maxref = 0;
    int n = sq_st_count(sa), same = 0;
    bool ok = n > 0 && n == sq_st_count(sb);
    for (int i = 0; ok && i < n; i++) {
        const sq_st_entry *x = sq_st_at(sa, i), *y = sq_st_at(sb, i);
        if (x->nbytes != y->nbytes || strcmp(x->name, y->name) || x->dtype != SQ_F32) { ok = false; break; }
        same += !memcmp(x->data, y->data, x->nbytes);
        const float *fx = x->data, *fy = y->data;
        for (size_t k = 0; k < x->nbytes / 4; k++) {
            if (!isfinite(fx[k]) || !isfinite(fy[k])) { ok = false; break; }
            double d = fabs((double)fx[k] - fy[k]);
            if (d > maxd) maxd = d;
            if (fabs(fy[k]) > maxref) maxref = fabs(fy[k]);
        }
    }
    *bitwise = ok && same == n;
    sq_st_close(sa);
    sq_st_close(sb);
    return ok && maxref > 0 ? maxd / maxref : INFINITY;
}

static void check_splits(void) {
    char *log = NULL;
    run_ok("ref", 4, "", &log);
    free(log);
    // the reference must have moved: a comparison of untrained scales would prove nothing
    static const struct { const char *out, *flags; int world; bool exact; } runs[] = {
        {"q2", "--processes 2 --split queries", 2, true},
        {"q4", "--processes 4 --split queries", 4, true},
        {"b2", "--processes 2 --split batch", 2, false},
        {"b4", "--processes 4 --split batch", 4, false},
    };
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        if (!run_ok(runs[i].out, 4, runs[i].flags, &log)) { free(log); continue; }
        char agree[96];
        snprintf(agree, sizeof agree, "step 4: the scales of the %d processes are identical", runs[i].world);
        TU_CHECK(log && strstr(log, agree), "%s: rank 0 reports the ranks' scale hashes agree:\n%s", runs[i].out, log ? log : "");
        TU_CHECK(log && !strstr(log, "sd-qzo[rank 1]: info:"), "%s: ranks other than 0 do not log the run", runs[i].out);
        free(log);
        bool bitwise;
        double d = ckpt_diff(runs[i].out, "ref", &bitwise);
        if (runs[i].exact)
            TU_CHECK(bitwise, "%s: scales bit-identical to one process's (max rel diff %.3g)", runs[i].out, d);
        else
            TU_CHECK(d <= 1e-5, "%s: scales within 1e-5 of one process's (max rel diff %.3g)", runs[i].out, d);
        char path[256];
        snprintf(path, sizeof path, "%s/%s/run.json", tmp, runs[i].out);
        char *rj = e2e_read_all(path), want[64];
        snprintf(want, sizeof want, "\"world_size\":\t%d", runs[i].world);
        TU_CHECK(rj && strstr(rj, want) && strstr(rj, runs[i].exact ? "\"split\":\t\"queries\"" : "\"split\":\t\"batch\""),
                 "%s: run.json records the world size and split:\n%s", runs[i].out, rj ? rj : "(none)");
        free(rj);
        snprintf(path, sizeof path, "%s/%s/log.jsonl", tmp, runs[i].out);
        TU_CHECK(e2e_count_lines(path) == 5, "%s: one log, written once per step (%d lines)", runs[i].out, e2e_count_lines(path));
    }
    bool bitwise;
    printf("batch split vs one process: max rel diff %.3g (queries split: bit-identical)\n", ckpt_diff("b4", "ref", &bitwise));
}

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr = {htonl(INADDR_LOOPBACK)}};
    socklen_t len = sizeof a;
    int port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

// Starts `cmd` as rank r of 2 the way an outside launcher does; output to OUTFILE.
static pid_t start_rank(const char *cmd, int r, int port, const char *outfile) {
    pid_t pid = fork();
    if (pid == 0) {
        char v[16], full[8192];
        snprintf(v, sizeof v, "%d", r);
        setenv("RANK", v, 1);
        setenv("LOCAL_RANK", v, 1);
        setenv("WORLD_SIZE", "2", 1);
        setenv("MASTER_ADDR", "127.0.0.1", 1);
        snprintf(v, sizeof v, "%d", port);
        setenv("MASTER_PORT", v, 1);
        snprintf(full, sizeof full, "exec %s > %s 2>&1", cmd, outfile);
        execl("/bin/sh", "sh", "-c", full, (char *)NULL);
        _exit(127);
    }
    return pid;
}

// Waits for pid up to `limit` seconds; *status its wait status. false: still running.
static bool wait_for(pid_t pid, double limit, int *status) {
    double t0 = now_s();
    while (now_s() - t0 < limit) {
        if (waitpid(pid, status, WNOHANG) == pid) return true;
        usleep(20000);
    }
    return false;
}

// sig SIGKILL: rank 1 dies; SIGSTOP: rank 1 hangs (--rank-timeout 3).
static void check_fault(int sig, const char *out) {
    char cmd[4096], path[256], outs[2][256];
    cmd_for(cmd, sizeof cmd, out, 40, sig == SIGSTOP ? "--rank-timeout 3" : "");
    int port = free_port();
    pid_t p[2];
    for (int r = 0; r < 2; r++) {
        snprintf(outs[r], sizeof outs[r], "%s/%s.rank%d.out", tmp, out, r);
        p[r] = start_rank(cmd, r, port, outs[r]);
    }
    snprintf(path, sizeof path, "%s/%s/log.jsonl", tmp, out);
    int st0 = 0, st1 = 0;
    bool early = false;
    for (int i = 0; i < 12000 && e2e_count_lines(path) < 4; i++) {   // steps 0..3 logged: a checkpoint at 2
        if (waitpid(p[0], &st0, WNOHANG) == p[0]) { early = true; break; }
        usleep(10000);
    }
    TU_CHECK(!early, "%s: rank 0 runs until the fault:\n%s", out, e2e_read_all(outs[0]));
    kill(p[1], sig);
    double t0 = now_s();
    bool stopped = early || wait_for(p[0], sig == SIGSTOP ? 60 : 30, &st0);
    double took = now_s() - t0;
    kill(p[1], SIGKILL);
    waitpid(p[1], &st1, 0);
    if (!stopped) { kill(p[0], SIGKILL); waitpid(p[0], &st0, 0); }
    char *o = e2e_read_all(outs[0]);
    const char *want = sig == SIGSTOP ? "timed out" : "closed its connection";
    TU_CHECK(stopped && WIFEXITED(st0) && WEXITSTATUS(st0) != 0 && o && strstr(o, want) && strstr(o, "rank 1"),
             "%s: rank 0 stops (%.1f s after the fault) with an error naming rank 1 ('%s'):\n%s", out, took, want, o);
    printf("%s: rank 0 stopped %.1f s after rank 1 was %s\n", out, took, sig == SIGSTOP ? "stopped" : "killed");
    free(o);
    snprintf(path, sizeof path, "%s/%s/checkpoint.safetensors", tmp, out);
    int64_t step = -1;
    TU_CHECK(sq_checkpoint_read_step(path, &step) == SQ_OK && step >= 2 && step % 2 == 0,
             "%s: the last checkpoint is intact (step %lld): %s", out, (long long)step, sq_error_message());
}

static void check_interrupt_resume(void) {
    char cmd[4096], path[256], *log = NULL;
    run_ok("ref8", 8, "", &log);
    free(log);
    cmd_for(cmd, sizeof cmd, "int", 8, "--processes 2 --split queries");
    char outfile[256];
    snprintf(outfile, sizeof outfile, "%s/int.out", tmp);
    pid_t pid = fork();
    if (pid == 0) {
        char full[4400];
        snprintf(full, sizeof full, "exec %s > %s 2>&1", cmd, outfile);
        execl("/bin/sh", "sh", "-c", full, (char *)NULL);
        _exit(127);
    }
    snprintf(path, sizeof path, "%s/int/log.jsonl", tmp);
    int st = 0;
    bool finished = false;
    for (int i = 0; i < 12000 && e2e_count_lines(path) < 3; i++) {
        if (waitpid(pid, &st, WNOHANG) == pid) { finished = true; break; }
        usleep(10000);
    }
    if (!finished) {
        kill(pid, SIGINT);   // the launcher: it forwards to the ranks
        TU_CHECK(wait_for(pid, 60, &st), "the launcher ends after SIGINT");
    }
    char *o = e2e_read_all(outfile);
    TU_CHECK(finished || (o && strstr(o, "interrupted: checkpoint saved at step") && strstr(o, "rank 1")),
             "SIGINT: rank 0 saves, rank 1 stops after the same step:\n%s", o);
    int lines = e2e_count_lines(path);
    snprintf(path, sizeof path, "%s/int/checkpoint.safetensors", tmp);
    int64_t step = -1;
    TU_CHECK(sq_checkpoint_read_step(path, &step) == SQ_OK && step == lines - 1,
             "the checkpoint is at the last logged step (%lld, %d log lines)", (long long)step, lines);
    printf("interrupted at step %lld (%s)\n", (long long)step, finished ? "the run had already finished" : "SIGINT");
    free(o);
    char extra[512];
    snprintf(extra, sizeof extra, "--processes 4 --split queries --resume %s", path);
    if (run_ok("int", 8, extra, &log)) {
        bool bitwise;
        double d = ckpt_diff("int", "ref8", &bitwise);
        TU_CHECK(bitwise, "resumed with 4 processes instead of 2: scales equal an uninterrupted one-process run (max rel "
                 "diff %.3g)", d);
        snprintf(path, sizeof path, "%s/int/run.json", tmp);
        char *rj = e2e_read_all(path);
        TU_CHECK(rj && strstr(rj, "\"world_size\":\t4"), "run.json says the resumed run had 4 processes");
        free(rj);
    }
    free(log);
}

// Fails with exactly one line of output containing `want`.
static void check_refused(const char *extra, const char *env, const char *want) {
    char cmd[4096], full[4400], *out = NULL;
    cmd_for(cmd, sizeof cmd, "refused", 4, extra);
    snprintf(full, sizeof full, "%s %s", env, cmd);
    int rc = tu_run(full, &out);
    int lines = 0;
    for (char *p = out; p && *p; p++) lines += *p == '\n';
    TU_CHECK(rc != 0 && out && strstr(out, want) && lines == 1, "'%s' is refused with one line naming '%s':\n%s", extra,
             want, out);
    free(out);
    snprintf(full, sizeof full, "%s/refused", tmp);
    TU_CHECK(!sq_is_dir(full), "a refused run leaves no OUT");
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: test_train_ranks SD_QZO_BINARY\n"); return 1; }
    bin = argv[1];
    signal(SIGPIPE, SIG_IGN);
    if (!mkdtemp(tmp)) return 1;
    e2e_make_dataset(tmp);
    if (sq_cuda_compiled() && sq_dist_nccl_compiled() && sq_cuda_device_count() >= 2)
        printf("--gpus 2 is possible here: its refusal is not checked (scripts/gpu/multi-gpu.sh runs it)\n");
    else
        check_refused("--gpus 2", "", "--gpus 2");
    check_refused("--processes 4 --split batch --batch-size 2", "", "--split batch");
    check_refused("--processes 2", "WORLD_SIZE=2 RANK=0 MASTER_PORT=1", "WORLD_SIZE is set");
    check_splits();
    check_fault(SIGKILL, "killed");
    check_fault(SIGSTOP, "hung");
    check_interrupt_resume();
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (!tu_failures && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    return tu_finish("e2e train ranks");
}
