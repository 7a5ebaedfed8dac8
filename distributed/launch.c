// distributed/launch.c: the ranks of one host as child processes (see distributed/launch.h).
#define _GNU_SOURCE
#include "distributed/launch.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"

static volatile sig_atomic_t g_signal = 0, g_count = 0;

static void on_signal(int sig) {
    g_signal = sig;
    g_count++;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// A listening socket on 127.0.0.1 at a port the kernel picks.
static int listen_local(int *port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return sq_error_errno("socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr = {htonl(INADDR_LOOPBACK)}};
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 128) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return sq_error_errno("cannot listen on 127.0.0.1 for the ranks");
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static void describe(char *buf, size_t size, int rank, pid_t pid, int status) {
    if (WIFSIGNALED(status))
        snprintf(buf, size, "rank %d (pid %d) was killed by signal %d (%s)", rank, (int)pid, WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, size, "rank %d (pid %d) exited with status %d", rank, (int)pid, WEXITSTATUS(status));
}

static void kill_all(const pid_t *pids, const bool *alive, int n, int sig) {
    for (int r = 0; r < n; r++)
        if (alive[r]) kill(pids[r], sig);
}

int sq_dist_launch_local(int count, int argc, char **argv, double grace_s) {
    int port = 0, lfd = listen_local(&port);
    if (lfd < 0) return SQ_FAIL;
    char **args = calloc((size_t)argc + 2, sizeof *args);
    pid_t *pids = calloc((size_t)count, sizeof *pids);
    bool *alive = calloc((size_t)count, sizeof *alive);
    if (!args || !pids || !alive) { close(lfd); free(args); free(pids); free(alive); return sq_errorf("out of host memory"); }
    args[0] = "sd-qzo";
    for (int i = 0; i < argc; i++) args[i + 1] = argv[i];
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    g_signal = g_count = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    pid_t parent = getpid();
    int rc = SQ_OK;
    fflush(NULL);
    for (int r = 0; r < count && rc == SQ_OK; r++) {
        pid_t pid = fork();
        if (pid < 0) { rc = sq_error_errno("fork"); break; }
        if (pid == 0) {
            setpgid(0, 0);                       // a terminal's Ctrl-C reaches the ranks through the launcher only
            prctl(PR_SET_PDEATHSIG, SIGTERM);    // the launcher dies: the ranks stop (and save)
            if (getppid() != parent) _exit(1);
            signal(SIGINT, SIG_DFL);
            signal(SIGTERM, SIG_DFL);
            char v[32];
            snprintf(v, sizeof v, "%d", r);
            setenv("RANK", v, 1);
            setenv("LOCAL_RANK", v, 1);
            snprintf(v, sizeof v, "%d", count);
            setenv("WORLD_SIZE", v, 1);
            setenv("LOCAL_WORLD_SIZE", v, 1);
            setenv("MASTER_ADDR", "127.0.0.1", 1);
            setenv("SQ_DIST_LAUNCHED", "1", 1);   // a rank: not a launcher again
            snprintf(v, sizeof v, "%d", port);
            setenv("MASTER_PORT", v, 1);
            if (r == 0) {
                fcntl(lfd, F_SETFD, 0);          // rank 0 keeps the listening socket across exec
                snprintf(v, sizeof v, "%d", lfd);
                setenv("SQ_DIST_LISTEN_FD", v, 1);
            } else {
                unsetenv("SQ_DIST_LISTEN_FD");
            }
            execv("/proc/self/exe", args);
            fprintf(stderr, "sd-qzo: rank %d: cannot run /proc/self/exe: %s\n", r, strerror(errno));
            _exit(127);
        }
        setpgid(pid, pid);
        pids[r] = pid;
        alive[r] = true;
    }
    close(lfd);
    int running = 0;
    for (int r = 0; r < count; r++) running += alive[r];
    if (rc == SQ_OK) sq_log_info("started %d ranks (pids %d..%d), rank 0 listening on 127.0.0.1:%d", count, (int)pids[0],
                                 (int)pids[count - 1], port);
    else kill_all(pids, alive, count, SIGTERM);
    char first[256] = "";
    int first_rank = -1, failed = 0;
    bool forwarded = false;
    int seen = 0;
    double t_fail = 0, t_term = 0;
    while (running > 0) {
        if (g_count > seen) {   // each signal once to each rank: a second Ctrl-C stops them at once
            seen = g_count;
            if (!forwarded)
                sq_log_info("stopping the %d ranks (signal %d): each finishes its step; rank 0 saves", running, (int)g_signal);
            kill_all(pids, alive, count, g_signal);
            forwarded = true;
        }
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid < 0 && errno != EINTR) break;
        if (pid <= 0) {
            double now = now_s();
            if (t_fail > 0 && !t_term && now - t_fail > grace_s) {
                sq_log_warn("%d rank(s) still running %.0f s after %s: terminating them", running, grace_s, first);
                kill_all(pids, alive, count, SIGTERM);
                t_term = now;
            } else if (t_term > 0 && now - t_term > 10) {
                kill_all(pids, alive, count, SIGKILL);
                t_term = now + 1e9;
            }
            usleep(20000);
            continue;
        }
        for (int r = 0; r < count; r++) {
            if (!alive[r] || pids[r] != pid) continue;
            alive[r] = false;
            running--;
            if (WIFEXITED(status) && WEXITSTATUS(status) == 0) break;
            failed++;
            if (first_rank < 0) {
                first_rank = r;
                describe(first, sizeof first, r, pid, status);
                t_fail = now_s();
                if (!forwarded) sq_log_error("%s; the other ranks stop", first);
            }
        }
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    free(args);
    free(pids);
    free(alive);
    if (rc != SQ_OK) return rc;
    if (forwarded && failed)
        return sq_errorf("interrupted: %d of %d ranks stopped (rank 0's message above says where its checkpoint is)", failed, count);
    if (failed) return sq_errorf("%s; %d of %d ranks failed (their messages are above)", first, failed, count);
    return SQ_OK;
}
