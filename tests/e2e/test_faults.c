// tests/e2e/test_faults.c: `sd-qzo train` meeting faults mid-run, on the CPU with the
// tiny SD3 pipeline of tests/fixtures/pipeline (the data set of test_train.c):
//   1. disk full while writing a checkpoint: the resumed run gets EFBIG from
//      setrlimit(RLIMIT_FSIZE) in the child, with SIGXFSZ ignored (met as a full
//      disk's ENOSPC would be): one error line naming the checkpoint and the cause, the
//      previous checkpoint byte for byte as it was, no temporary file left;
//   2. SIGKILL during a checkpoint write (the test hook SD_QZO_FAULT=kill@write:NAME
//      of core/safetensors_write.c kills the process for real, after the first data
//      chunk): the previous checkpoint intact, the leftover checkpoint.safetensors.tmp.PID
//      removed by the next run, which resumes and finishes;
//   3. out of GPU memory at step 3 (the test hook SD_QZO_FAULT=alloc@step:3 of
//      app/train_oom.c fails the step as a device allocation failure does): one
//      error line naming the flags that need less memory, the checkpoint of step 2
//      saved, and --resume from it finishes the run.
// Two runs on one --output are tests/bad_input/test_bad_run_folder.c's.
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "tests/e2e/train_fixture.h"
#include "tests/test_util.h"

static const char *bin;
static char tmp[64] = "/tmp/sq-e2e-faults-XXXXXX";

// tu_run with a file size limit of fsize bytes (0: none) set in the child, and SIGXFSZ
// ignored, so that a write past it fails with EFBIG as a full disk fails with ENOSPC.
static int run_limited(const char *cmd, rlim_t fsize, char **out) {
    int fd[2];
    SQ_CHECK(pipe(fd) == 0, "pipe");
    pid_t pid = fork();
    SQ_CHECK(pid >= 0, "fork");
    if (pid == 0) {
        struct rlimit rl = {fsize, fsize};
        signal(SIGXFSZ, SIG_IGN);
        if (fsize && setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(126);
        dup2(fd[1], 1);
        dup2(fd[1], 2);
        close(fd[0]);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    size_t cap = 1 << 20, n = 0;
    char *buf = calloc(cap, 1);
    for (ssize_t r; buf && n + 1 < cap && (r = read(fd[0], buf + n, cap - 1 - n)) > 0;) n += (size_t)r;
    close(fd[0]);
    int st;
    SQ_CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1;
}

// `sd-qzo train` into tmp/out with the shared cache, no previews, a checkpoint every
// step; prefix (a shell prefix: env, ulimit) and extra flags around it.
static int train_limited(const char *prefix, rlim_t fsize, const char *out, int steps, const char *extra, char **log) {
    char flags[2048], cmd[4096], full[8000];
    snprintf(flags, sizeof flags, "--cache-dir %s/cache --save-every 1 --sample-every 0 %s", tmp, extra);
    e2e_train_cmd(cmd, sizeof cmd, bin, tmp, out, steps, flags);
    snprintf(full, sizeof full, "%s exec %s", prefix, cmd);
    return run_limited(full, fsize, log);
}

static int train(const char *prefix, const char *out, int steps, const char *extra, char **log) {
    return train_limited(prefix, 0, out, steps, extra, log);
}

// The single "sd-qzo train: error: " line of out, and that it is the last line.
static const char *error_line(const char *out, char *buf, size_t size) {
    const char *e = out ? strstr(out, "sd-qzo train: error: ") : NULL;
    buf[0] = 0;
    if (e) snprintf(buf, size, "%.*s", (int)strcspn(e, "\n"), e);
    return e ? buf : NULL;
}

static int64_t checkpoint_step(const char *path) {
    sq_safetensors *st;
    if (sq_st_open(&st, path) != SQ_OK) return -1;
    const char *s = sq_st_metadata(st, "sd_qzo.step");
    int64_t step = s ? atoll(s) : -1;
    sq_st_close(st);
    return step;
}

static int count_temps(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return n;
}

static char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)len + 1);
    *n = b ? fread(b, 1, (size_t)len, f) : 0;
    fclose(f);
    return b;
}

static void disk_full(void) {
    char *out = NULL, line[2048], ck[300], dir[256];
    snprintf(dir, sizeof dir, "%s/full", tmp);
    snprintf(ck, sizeof ck, "%s/checkpoint.safetensors", dir);
    int rc = train("", "full", 3, "", &out);  // one epoch: every latent and caption cached
    TU_CHECK(rc == 0, "disk full: the first run (exit %d):\n%s", rc, out ? out : "");
    free(out);
    size_t n0, n1;
    char *before = read_file(ck, &n0);
    TU_CHECK(before && n0 > 4096, "disk full: a checkpoint of %zu bytes to start from", n0);
    // a file size limit the log rows and run.json stay under, and the checkpoint not
    char resume[512];
    snprintf(resume, sizeof resume, "--resume %s", ck);
    rc = train_limited("", (rlim_t)n0 * 3 / 4, "full", 5, resume, &out);
    const char *e = error_line(out, line, sizeof line);
    printf("  disk full:      exit %d: %s\n", rc, line);
    TU_CHECK(rc == 1 && e, "disk full: exit 1 with an error (got %d):\n%s", rc, out ? out : "");
    TU_CHECK(e && strstr(e, "saving the checkpoint of step 4") && strstr(e, "previous one is kept") && strstr(e, "File too large"),
             "disk full: the error names the checkpoint and the cause: %s", line);
    char *after = read_file(ck, &n1);
    TU_CHECK(after && n1 == n0 && !memcmp(before, after, n0), "disk full: the previous checkpoint is intact");
    TU_CHECK(checkpoint_step(ck) == 3, "disk full: the checkpoint still holds step 3");
    TU_CHECK(count_temps(dir) == 0, "disk full: no temporary file left in %s", dir);
    free(before);
    free(after);
    free(out);
}

static void killed(void) {
    char *out = NULL, ck[300], dir[256], resume[512];
    snprintf(dir, sizeof dir, "%s/kill", tmp);
    snprintf(ck, sizeof ck, "%s/checkpoint.safetensors", dir);
    snprintf(resume, sizeof resume, "--resume %s", ck);
    int rc = train("", "kill", 2, "", &out);
    TU_CHECK(rc == 0, "kill: the first run (exit %d):\n%s", rc, out ? out : "");
    free(out);
    size_t n0, n1;
    char *before = read_file(ck, &n0);
    rc = train("SD_QZO_FAULT=kill@write:checkpoint.safetensors", "kill", 4, resume, &out);
    printf("  killed:         exit %d, %d temporary file(s) left\n", rc, count_temps(dir));
    TU_CHECK(rc == 128 + SIGKILL, "kill: the run died of SIGKILL (got %d):\n%s", rc, out ? out : "");
    free(out);
    char *after = read_file(ck, &n1);
    TU_CHECK(before && after && n1 == n0 && !memcmp(before, after, n0), "kill: the previous checkpoint is intact");
    TU_CHECK(count_temps(dir) == 1, "kill: the killed write left its temporary file (%d)", count_temps(dir));
    rc = train("", "kill", 4, resume, &out);
    TU_CHECK(rc == 0, "kill: the next run resumes (exit %d):\n%s", rc, out ? out : "");
    TU_CHECK(count_temps(dir) == 0, "kill: the next run removed the leftover (%d left)", count_temps(dir));
    TU_CHECK(checkpoint_step(ck) == 4, "kill: the resumed run reached step 4 (%lld)", (long long)checkpoint_step(ck));
    free(before);
    free(after);
    free(out);
}

static void out_of_memory(void) {
    char *out = NULL, line[2048], ck[300], resume[512];
    snprintf(ck, sizeof ck, "%s/oom/checkpoint.safetensors", tmp);
    int rc = train("SD_QZO_FAULT=alloc@step:3", "oom", 5, "", &out);
    const char *e = error_line(out, line, sizeof line);
    printf("  out of memory:  exit %d: %s\n", rc, line);
    TU_CHECK(rc == 1 && e, "oom: exit 1 with an error (got %d):\n%s", rc, out ? out : "");
    TU_CHECK(e && strstr(e, "out of memory at step 3") && strstr(e, "--batch-size") && strstr(e, "--resolution") &&
             strstr(e, "--low-vram") && strstr(e, "checkpoint saved at step 2") && strstr(e, "--resume"),
             "oom: the error names the step, the flags that need less memory and the saved checkpoint: %s", line);
    TU_CHECK(checkpoint_step(ck) == 2, "oom: the checkpoint holds step 2 (%lld)", (long long)checkpoint_step(ck));
    free(out);
    snprintf(resume, sizeof resume, "--resume %s", ck);
    rc = train("", "oom", 5, resume, &out);
    TU_CHECK(rc == 0 && checkpoint_step(ck) == 5, "oom: --resume finishes the run (exit %d):\n%s", rc, out ? out : "");
    free(out);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: test_faults SD_QZO_BINARY\n"); return 1; }
    bin = argv[1];
    SQ_CHECK(mkdtemp(tmp), "mkdtemp");
    e2e_make_dataset(tmp);
    disk_full();
    killed();
    out_of_memory();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    TU_CHECK(system(cmd) == 0, "cleanup");
    return tu_finish("faults");
}
