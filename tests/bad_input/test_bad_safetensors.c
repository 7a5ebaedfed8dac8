// tests/bad_input/test_bad_safetensors.c: malformed safetensors files and sharded
// indexes must be refused with a clear one-line error naming the file, never a
// crash or an out-of-bounds read (this suite also runs under ASan + UBSan). When
// given the sd-qzo binary as argv[1], also checks that `sd-qzo info` on a bad file
// exits non-zero with one error line on stderr.
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "tests/test_util.h"

static char dir[256];

// Writes an 8-byte length (as given) + header text + data bytes.
static void write_raw(const char *name, uint64_t hlen, const char *header, size_t data_bytes, char *out_path) {
    sprintf(out_path, "%s/%s", dir, name);
    FILE *f = fopen(out_path, "wb");
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)(hlen >> (8 * i));
    fwrite(len8, 1, 8, f);
    if (header) fwrite(header, 1, strlen(header), f);
    for (size_t i = 0; i < data_bytes; i++) fputc((int)(i * 37 & 0xff), f);
    fclose(f);
}

static void write_bytes(const char *name, const void *bytes, size_t n, char *out_path) {
    sprintf(out_path, "%s/%s", dir, name);
    FILE *f = fopen(out_path, "wb");
    if (n) fwrite(bytes, 1, n, f);
    fclose(f);
}

static void expect_refused(const char *what, const char *path, const char *must_contain) {
    sq_safetensors *st = NULL;
    sq_error_clear();
    int rc = sq_st_open(&st, path);
    const char *msg = sq_error_message();
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    TU_CHECK(rc == SQ_FAIL && st == NULL, "%s: accepted", what);
    TU_CHECK(strstr(msg, base) != NULL, "%s: message does not name the file: %s", what, msg);
    TU_CHECK(!must_contain || strstr(msg, must_contain), "%s: message lacks '%s': %s", what, must_contain, msg);
    TU_CHECK(strchr(msg, '\n') == NULL, "%s: message is not one line", what);
    printf("%-34s -> %s\n", what, msg);
    if (st) sq_st_close(st);
}

static char bad_file_for_cli[512];

static void cases(void) {
    char p[512];
    write_bytes("empty.safetensors", "", 0, p);
    expect_refused("empty file", p, "too short");
    write_bytes("five.safetensors", "\x05\x00\x00\x00\x00", 5, p);
    expect_refused("5-byte file", p, "too short");
    write_raw("past_end.safetensors", 1000, "{}", 0, p);
    expect_refused("header longer than file", p, "past the end");
    write_raw("huge_len.safetensors", 1ull << 63, "{}", 0, p);
    expect_refused("header length 2^63", p, "limit");
    write_raw("200mb.safetensors", 200ull << 20, "{}", 0, p);
    expect_refused("header of 200 MB claimed", p, "limit");
    const char *garbage = "this is not json at all";
    write_raw("garbage.safetensors", strlen(garbage), garbage, 0, p);
    expect_refused("non-JSON header", p, "JSON");
    strcpy(bad_file_for_cli, p);
    write_raw("array.safetensors", 2, "[]", 0, p);
    expect_refused("JSON array header", p, "object");
#define CASE(fname, what, header, data, needle)                  \
    do {                                                         \
        write_raw(fname, strlen(header), header, data, p);       \
        expect_refused(what, p, needle);                         \
    } while (0)
    CASE("dtype.safetensors", "unknown dtype", "{\"t\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,16]}}", 16, "F128");
    CASE("negshape.safetensors", "negative shape", "{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape");
    CASE("fracshape.safetensors", "fractional shape", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "shape");
    CASE("strshape.safetensors", "string shape", "{\"t\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8, "shape");
    CASE("overflow.safetensors", "shape product overflow",
         "{\"t\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,4]}}", 4, "overflow");
    CASE("elemoverflow.safetensors", "bytes overflow",
         "{\"t\":{\"dtype\":\"F64\",\"shape\":[4503599627370496,1024],\"data_offsets\":[0,8]}}", 8, "bytes");
    CASE("range.safetensors", "offsets out of range", "{\"t\":{\"dtype\":\"F32\",\"shape\":[100],\"data_offsets\":[0,400]}}", 16, "exceed");
    CASE("backwards.safetensors", "begin > end", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 16, "backwards");
    CASE("size.safetensors", "size does not match shape", "{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 16, "bytes");
    CASE("overlap.safetensors", "overlapping tensors",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 16, "overlap");
    CASE("dup.safetensors", "duplicate names",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "twice");
    CASE("meta.safetensors", "metadata not strings", "{\"__metadata__\":{\"k\":3}}", 0, "not a string");
    CASE("noobj.safetensors", "tensor entry not an object", "{\"t\":5}", 0, "not a JSON object");
    CASE("nooffsets.safetensors", "missing data_offsets", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "data_offsets");
    CASE("toomanydims.safetensors", "9 dimensions",
         "{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "dimensions");
    // truncated data block: a valid file cut short
    {
        const char *h = "{\"t\":{\"dtype\":\"F32\",\"shape\":[64],\"data_offsets\":[0,256]}}";
        write_raw("truncated.safetensors", strlen(h), h, 100, p);
        expect_refused("truncated data block", p, "exceed");
    }
    // sharded: index naming a missing shard, malformed index, tensor not in its shard
    {
        char idx[512], shard[512];
        const char *h = "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
        write_raw("good-00001.safetensors", strlen(h), h, 4, shard);
        sprintf(idx, "%s/missing.safetensors.index.json", dir);
        FILE *f = fopen(idx, "w");
        fputs("{\"weight_map\": {\"x\": \"good-00001.safetensors\", \"y\": \"gone-00002.safetensors\"}}", f);
        fclose(f);
        expect_refused("index naming a missing shard", idx, "gone-00002");
        sprintf(idx, "%s/malformed.safetensors.index.json", dir);
        f = fopen(idx, "w");
        fputs("{\"weight_map\": {\"x\": ", f);
        fclose(f);
        expect_refused("malformed index JSON", idx, "JSON");
        sprintf(idx, "%s/absent.safetensors.index.json", dir);
        f = fopen(idx, "w");
        fputs("{\"weight_map\": {\"z\": \"good-00001.safetensors\"}}", f);
        fclose(f);
        expect_refused("index tensor absent from shard", idx, "'z'");
        sprintf(idx, "%s/escape.safetensors.index.json", dir);
        f = fopen(idx, "w");
        fputs("{\"weight_map\": {\"x\": \"../../etc/passwd\"}}", f);
        fclose(f);
        expect_refused("index escaping its folder", idx, "same folder");
    }
    // a directory without safetensors
    {
        char empty[512];
        sprintf(empty, "%s/emptydir", dir);
        mkdir(empty, 0755);
        expect_refused("directory without safetensors", empty, "no .safetensors");
    }
    expect_refused("missing path", "/nonexistent/model.safetensors", "No such file");
}

// Runs `sd-qzo info FILE`: expects exit status != 0 and exactly one stderr line.
static void check_cli(const char *binary) {
    char cmd[1200], errpath[600];
    sprintf(errpath, "%s/stderr.txt", dir);
    sprintf(cmd, "'%s' info '%s' > /dev/null 2> '%s'", binary, bad_file_for_cli, errpath);
    int status = system(cmd);
    TU_CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) != 0, "sd-qzo info on a bad file must fail");
    FILE *f = fopen(errpath, "r");
    char line[2048];
    int lines = 0;
    while (f && fgets(line, sizeof line, f)) {
        lines++;
        printf("sd-qzo info stderr: %s", line);
        TU_CHECK(strstr(line, "garbage.safetensors") && strstr(line, "error"), "stderr names file and says error");
    }
    if (f) fclose(f);
    TU_CHECK(lines == 1, "exactly one stderr line, got %d", lines);
    sprintf(cmd, "'%s' info /nonexistent/dir > /dev/null 2> '%s'", binary, errpath);
    status = system(cmd);
    TU_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1, "missing path exits 1");
}

int main(int argc, char **argv) {
    snprintf(dir, sizeof dir, "/tmp/sq-bad-st-XXXXXX");
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    cases();
    if (argc > 1) check_cli(argv[1]);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return tu_finish("test_bad_safetensors");
}
