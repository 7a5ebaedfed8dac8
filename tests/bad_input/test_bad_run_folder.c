// tests/bad_input/test_bad_run_folder.c: `sd-qzo train`'s run folder OUT, on the
// tiny fixture (CPU):
//   1. two runs into one --output at once: while one runs (it holds an exclusive
//      flock on OUT/.lock), a second is refused with one line naming the lock file;
//      once the first is killed (SIGKILL), the lock is free again;
//   2. leftovers of a write killed midway ("<name>.tmp.<pid>", core/safetensors.h):
//      the next run in that OUT removes those whose process is gone, with an info
//      line, and keeps those of a live process.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/e2e/train_fixture.h"
#include "tests/test_util.h"

static const char *bin;
static char dir[64] = "/tmp/sq-bad-run-folder-XXXXXX";

static void train_cmd(char *cmd, size_t size, const char *out, int steps, const char *extra) {
    char flags[3000];
    snprintf(flags, sizeof flags, "--sample-every 0 %s", extra);
    e2e_train_cmd(cmd, size, bin, dir, out, steps, flags);
}

// Whether some process holds the flock on path.
static bool locked(const char *path) {
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return false;
    bool held = flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    close(fd);
    return held;
}

static void check_two_runs(void) {
    char cmd[4096], full[4300], lock[256], *out = NULL;
    train_cmd(cmd, sizeof cmd, "run", 100000, "");
    snprintf(lock, sizeof lock, "%s/run/.lock", dir);
    pid_t pid = fork();
    if (pid == 0) {
        snprintf(full, sizeof full, "exec %s > %s/first.out 2>&1", cmd, dir);
        execl("/bin/sh", "sh", "-c", full, (char *)NULL);
        _exit(127);
    }
    bool held = false;
    for (int i = 0; i < 3000 && !(held = locked(lock)); i++) {   // up to 30 s
        if (waitpid(pid, NULL, WNOHANG) == pid) { pid = -1; break; }
        usleep(10000);
    }
    TU_CHECK(held, "the first run holds %s", lock);
    // the second run: same OUT, even with --overwrite, is refused at once
    train_cmd(cmd, sizeof cmd, "run", 1, "--overwrite");
    int rc = tu_run(cmd, &out);
    const char *e = out ? strstr(out, "sd-qzo train: error: ") : NULL;
    const char *nl = e ? strchr(e, '\n') : NULL;
    TU_CHECK(rc == 1 && e && nl && nl[1] == 0 && strstr(e, lock) && strstr(e, "locked"),
             "a second run into the same OUT: one error line naming %s (exit %d):\n%s", lock, rc, out);
    if (e) printf("second run -> %s", e);
    free(out);
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    TU_CHECK(!locked(lock), "a killed run's lock is free");
}

static void check_stale_temps(void) {
    char cmd[4096], out_dir[256], dead[300], live[300], *out = NULL;
    snprintf(out_dir, sizeof out_dir, "%s/leftovers", dir);
    mkdir(out_dir, 0755);
    pid_t pid = fork();   // a pid that is certainly not running any more
    if (pid == 0) _exit(0);
    waitpid(pid, NULL, 0);
    snprintf(dead, sizeof dead, "%s/checkpoint.safetensors.tmp.%ld", out_dir, (long)pid);
    snprintf(live, sizeof live, "%s/run.json.tmp.%ld", out_dir, (long)getpid());
    FILE *f = fopen(dead, "w");
    fputs("half a checkpoint", f);
    fclose(f);
    f = fopen(live, "w");
    fclose(f);
    train_cmd(cmd, sizeof cmd, "leftovers", 1, "");
    int rc = tu_run(cmd, &out);
    TU_CHECK(rc == 0, "the run in an OUT with leftovers exits 0 (got %d):\n%s", rc, out);
    struct stat st;
    TU_CHECK(stat(dead, &st) != 0, "the dead process's %s is removed", dead);
    TU_CHECK(out && strstr(out, "removed") && strstr(out, dead), "an info line names the removed file:\n%s", out);
    TU_CHECK(stat(live, &st) == 0, "a live process's temp file stays");
    free(out);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: test_bad_run_folder SD_QZO_BINARY\n"); return 1; }
    bin = argv[1];
    SQ_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    e2e_make_dataset(dir);
    check_two_runs();
    check_stale_temps();
    char rm[128];
    snprintf(rm, sizeof rm, "rm -rf '%s'", dir);
    if (tu_failures == 0 && system(rm) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return tu_finish("bad_run_folder");
}
