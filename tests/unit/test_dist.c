// tests/unit/test_dist.c: distributed/exchange.h over its socket transport, with real
// processes (fork) on 127.0.0.1:
//   1. one process: every collective is a copy;
//   2. three ranks: all-gather in rank order, broadcast from rank 0, barrier, many
//      rounds in a row;
//   3. faults, each with a bound on how long the others take to notice: a rank that
//      exits (its connection closes), a rank that hangs (the timeout), a rank that
//      aborts with a message, and a rank at another collective; every surviving rank
//      fails with a message naming the rank at fault;
//   4. the watch kept on the sockets while NCCL carries a step (sq_dist_poll_peers):
//      a rank already at the next barrier is left alone, one that exits is named;
//   5. the launcher variables (RANK, WORLD_SIZE, ...) and their errors;
//   6. the scale hash against an independent FNV-1a over 64-bit words.
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "distributed/dist_internal.h"
#include "distributed/exchange.h"
#include "tests/test_util.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int listen_any(int *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr = {htonl(INADDR_LOOPBACK)}};
    socklen_t len = sizeof a;
    SQ_CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 16) == 0 &&
                 getsockname(fd, (struct sockaddr *)&a, &len) == 0, "listen: %s", strerror(errno));
    *port = ntohs(a.sin_port);
    return fd;
}

typedef enum { PLAIN, EXITS, HANGS, ABORTS, MISMATCH, WATCH } scenario;

typedef struct {
    int32_t rank;
    double value;
} record;

// One rank's program; its exit status is the test's verdict (0: as expected).
static int rank_main(int rank, int world, int port, int lfd, scenario sc, int culprit) {
    sq_dist_config c = {.rank = rank, .world_size = world, .local_rank = rank, .master_port = port,
                        .listen_fd = rank == 0 ? lfd : -1, .timeout_s = sc == HANGS ? 1.0 : 20.0};
    snprintf(c.master_addr, sizeof c.master_addr, "127.0.0.1");
    if (rank != 0) close(lfd);
    sq_dist *d;
    if (sq_dist_open(&d, &c) != SQ_OK) { fprintf(stderr, "rank %d: open: %s\n", rank, sq_error_message()); return 10; }
    if (sq_dist_rank(d) != rank || sq_dist_world(d) != world || sq_dist_is_root(d) != (rank == 0)) return 11;
    for (int round = 0; round < 5; round++) {
        record mine = {rank, rank * 1.5 + round}, all[8];
        memset(all, 0xff, sizeof all);   // poison
        if (sq_dist_allgather(d, &mine, sizeof mine, all, "gather") != SQ_OK) return 12;
        for (int r = 0; r < world; r++)
            if (all[r].rank != r || all[r].value != r * 1.5 + round) return 13;
    }
    char buf[100];
    for (int i = 0; i < 100; i++) buf[i] = rank == 0 ? (char)(i * 7) : 0;
    if (sq_dist_broadcast(d, buf, sizeof buf, "bcast") != SQ_OK) return 14;
    for (int i = 0; i < 100; i++)
        if (buf[i] != (char)(i * 7)) return 15;
    if (sq_dist_barrier(d, "barrier") != SQ_OK) return 16;
    if (sc == PLAIN) {
        sq_dist_close(d);
        return 0;
    }
    if (sc == WATCH) {
        // the watch kept while NCCL carries a step (distributed/nccl.c): a rank already at the
        // next barrier is not a fault, and its message is left for that barrier; a rank
        // that exits is named
        if (rank == 0) {
            usleep(300000);
            for (int i = 0; i < 10; i++)
                if (sq_dist_poll_peers(d) != SQ_OK) { fprintf(stderr, "watch: %s\n", sq_error_message()); return 30; }
        }
        if (sq_dist_barrier(d, "ahead") != SQ_OK) return 31;
        if (rank == culprit) _exit(0);
        if (rank == 0) {
            int rc = SQ_OK;
            for (int i = 0; i < 500 && rc == SQ_OK; i++, usleep(10000)) rc = sq_dist_poll_peers(d);
            char name[32];
            snprintf(name, sizeof name, "rank %d closed", culprit);
            bool ok = rc != SQ_OK && strstr(sq_error_message(), name);
            if (!ok) fprintf(stderr, "watch: rc %d '%s'\n", rc, sq_error_message());
            sq_dist_close(d);
            return ok ? 0 : 32;
        }
        record mine = {rank, 0}, all[8];
        int rc = sq_dist_allgather(d, &mine, sizeof mine, all, "after the exit");
        bool ok = rc != SQ_OK && strstr(sq_error_message(), "rank 2");
        if (!ok) fprintf(stderr, "watch rank %d: rc %d '%s'\n", rank, rc, sq_error_message());
        sq_dist_close(d);
        return ok ? 0 : 33;
    }
    // the fault, then one more collective: everyone but the culprit must fail naming it
    if (rank == culprit) {
        if (sc == EXITS) _exit(0);
        if (sc == HANGS) { sleep(30); _exit(0); }
        if (sc == ABORTS) { sq_dist_abort(d, "disk full"); sq_dist_close(d); return 0; }
        if (sc == MISMATCH) { sq_dist_barrier(d, "other"); sq_dist_close(d); return 0; }
    }
    record mine = {rank, 0}, all[8];
    double t0 = now_s();
    int rc = sq_dist_allgather(d, &mine, sizeof mine, all, "after the fault");
    double waited = now_s() - t0;
    const char *m = sq_error_message();
    char name[32];
    snprintf(name, sizeof name, "rank %d", culprit);
    const char *want = sc == EXITS ? "closed its connection" : sc == HANGS ? "timed out" : sc == ABORTS ? "disk full" : "no longer run the same";
    int ok = rc != SQ_OK && strstr(m, want) && (strstr(m, name) || (sc == MISMATCH && strstr(m, "rank"))) && waited < 10;
    if (!ok) fprintf(stderr, "rank %d after the fault (%.1f s): rc %d, '%s' (wanted '%s' naming %s)\n", rank, waited, rc, m, want, name);
    // after an error every call fails at once
    if (sq_dist_barrier(d, "again") == SQ_OK) ok = 0;
    sq_dist_close(d);
    return ok ? 0 : 20;
}

static void run_world(int world, scenario sc, int culprit, const char *label) {
    int port, lfd = listen_any(&port);
    pid_t pids[8];
    fflush(NULL);
    for (int r = 0; r < world; r++) {
        pids[r] = fork();
        if (pids[r] == 0) _exit(rank_main(r, world, port, lfd, sc, culprit));
    }
    close(lfd);
    double t0 = now_s();
    int bad = 0;
    for (int r = 0; r < world; r++) {
        int st;
        // a hanging culprit is not waited for
        if (sc == HANGS && r == culprit) continue;
        waitpid(pids[r], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            bad++;
            fprintf(stderr, "%s: rank %d status %d\n", label, r, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        }
    }
    if (sc == HANGS) {
        kill(pids[culprit], SIGKILL);
        waitpid(pids[culprit], NULL, 0);
    }
    TU_CHECK(bad == 0, "%s: every rank behaves (%d did not)", label, bad);
    TU_CHECK(now_s() - t0 < 20, "%s: over within a bounded time (%.1f s)", label, now_s() - t0);
}

static void check_single(void) {
    sq_dist_config c = {.world_size = 1, .listen_fd = -1, .timeout_s = 1};
    sq_dist *d;
    TU_CHECK(sq_dist_open(&d, &c) == SQ_OK, "world 1 opens: %s", sq_error_message());
    double x = 3.25, all = NAN;
    TU_CHECK(sq_dist_allgather(d, &x, sizeof x, &all, "g") == SQ_OK && all == 3.25, "world 1: all-gather copies");
    TU_CHECK(sq_dist_barrier(d, "b") == SQ_OK && sq_dist_broadcast(d, &x, sizeof x, "c") == SQ_OK && x == 3.25,
             "world 1: barrier and broadcast");
    TU_CHECK(!strcmp(sq_dist_transport(d), "single") && sq_dist_is_root(d), "world 1: single, root");
    sq_dist_abort(d, "nothing to tell");
    sq_dist_close(d);
}

static void check_env(void) {
    sq_dist_config c;
    bool present;
    unsetenv("WORLD_SIZE");
    TU_CHECK(sq_dist_config_from_env(&c, &present) == SQ_OK && !present && c.world_size == 1, "no WORLD_SIZE: one process");
    setenv("WORLD_SIZE", "4", 1);
    setenv("RANK", "2", 1);
    setenv("LOCAL_RANK", "1", 1);
    setenv("MASTER_ADDR", "node7", 1);
    setenv("MASTER_PORT", "29500", 1);
    TU_CHECK(sq_dist_config_from_env(&c, &present) == SQ_OK && present && c.world_size == 4 && c.rank == 2 &&
                 c.local_rank == 1 && !strcmp(c.master_addr, "node7") && c.master_port == 29500,
             "torchrun's variables: %s", sq_error_message());
    setenv("RANK", "4", 1);
    TU_CHECK(sq_dist_config_from_env(&c, &present) != SQ_OK && strstr(sq_error_message(), "RANK=4"), "RANK out of range: %s",
             sq_error_message());
    setenv("RANK", "1", 1);
    setenv("MASTER_PORT", "http", 1);
    TU_CHECK(sq_dist_config_from_env(&c, &present) != SQ_OK && strstr(sq_error_message(), "MASTER_PORT"), "bad MASTER_PORT: %s",
             sq_error_message());
    unsetenv("MASTER_PORT");
    TU_CHECK(sq_dist_config_from_env(&c, &present) != SQ_OK && strstr(sq_error_message(), "MASTER_PORT"), "missing MASTER_PORT: %s",
             sq_error_message());
    unsetenv("RANK");
    setenv("MASTER_PORT", "29500", 1);
    TU_CHECK(sq_dist_config_from_env(&c, &present) != SQ_OK && strstr(sq_error_message(), "RANK"), "missing RANK: %s",
             sq_error_message());
    unsetenv("WORLD_SIZE");
    unsetenv("LOCAL_RANK");
    unsetenv("MASTER_ADDR");
    unsetenv("MASTER_PORT");
}

static void check_hash(void) {
    unsigned char buf[1003];
    uint64_t s = 42;
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)tu_next(&s);
    // independent: FNV-1a, each 8-byte little-endian word as one unit, then the tail bytes
    uint64_t ref = 0xcbf29ce484222325ull;
    size_t i = 0;
    for (; i + 8 <= sizeof buf; i += 8) {
        uint64_t w = 0;
        for (int b = 7; b >= 0; b--) w = (w << 8) | buf[i + (size_t)b];
        ref = (ref ^ w) * 1099511628211ull;
    }
    for (; i < sizeof buf; i++) ref = (ref ^ buf[i]) * 1099511628211ull;
    TU_CHECK(sq_dist_hash(SQ_DIST_HASH_INIT, buf, sizeof buf) == ref, "hash = FNV-1a over words");
    uint64_t h1 = sq_dist_hash(SQ_DIST_HASH_INIT, buf, 1000);
    buf[999] ^= 1;
    TU_CHECK(sq_dist_hash(SQ_DIST_HASH_INIT, buf, 1000) != h1, "one flipped bit changes the hash");
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    check_single();
    check_env();
    check_hash();
    run_world(3, PLAIN, -1, "three ranks");
    run_world(2, PLAIN, -1, "two ranks");
    run_world(3, EXITS, 2, "rank 2 exits");
    run_world(3, EXITS, 0, "rank 0 exits");
    run_world(3, HANGS, 1, "rank 1 hangs");
    run_world(3, ABORTS, 1, "rank 1 aborts");
    run_world(3, MISMATCH, 2, "rank 2 at another collective");
    run_world(3, WATCH, 2, "the watch beside NCCL");
    return tu_finish("dist");
}
