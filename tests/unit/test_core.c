// tests/unit/test_core.c: core/ building blocks: dtype conversions against values
// computed independently (bit patterns from IEEE-754), tensor views and copies,
// the arena's alignment / high-water / exhaustion behaviour, and error chaining.
#include <math.h>
#include <string.h>

#include "core/arena.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/sha256.h"
#include "core/tensor.h"
#include "tests/test_util.h"

static void test_bf16(void) {
    // exact values survive
    float exact[] = {0.0f, 1.0f, -2.5f, 65536.0f, 0.15625f};
    for (int i = 0; i < 5; i++)
        TU_CHECK(sq_bf16_to_f32(sq_f32_to_bf16(exact[i])) == exact[i], "bf16 exact %g", exact[i]);
    // round to nearest even: 1 + 2^-8 is halfway between 1 and 1+2^-7 -> 1 (even)
    TU_CHECK(sq_f32_to_bf16(1.0f + 0x1p-8f) == 0x3f80, "bf16 tie to even down");
    // 1 + 3*2^-8 is halfway between 1+2^-7 and 1+2^-6 -> 1+2^-6 (even mantissa)
    TU_CHECK(sq_f32_to_bf16(1.0f + 3 * 0x1p-8f) == 0x3f82, "bf16 tie to even up");
    TU_CHECK(isnan(sq_bf16_to_f32(sq_f32_to_bf16(NAN))), "bf16 NaN stays NaN");
    TU_CHECK(isinf(sq_bf16_to_f32(sq_f32_to_bf16(INFINITY))), "bf16 inf");
    // random values: within half an ulp (2^-8 relative: 7 explicit mantissa bits)
    uint64_t s = 42;
    for (int i = 0; i < 10000; i++) {
        float x = tu_uniform(&s, -1000, 1000);
        float y = sq_bf16_to_f32(sq_f32_to_bf16(x));
        if (fabsf(y - x) > fabsf(x) * 0x1p-8f) { TU_CHECK(0, "bf16 rounding error too large at %g -> %g", x, y); break; }
    }
}

static void test_f16(void) {
    TU_CHECK(sq_f32_to_f16(1.0f) == 0x3c00, "f16 1.0");
    TU_CHECK(sq_f32_to_f16(-2.0f) == 0xc000, "f16 -2.0");
    TU_CHECK(sq_f32_to_f16(65504.0f) == 0x7bff, "f16 max");
    TU_CHECK(sq_f32_to_f16(70000.0f) == 0x7c00, "f16 overflow -> inf");
    TU_CHECK(sq_f32_to_f16(0x1p-24f) == 0x0001, "f16 smallest subnormal");
    TU_CHECK(sq_f32_to_f16(0x1p-14f) == 0x0400, "f16 smallest normal");
    TU_CHECK(sq_f16_to_f32(0x0001) == 0x1p-24f, "f16 subnormal decode");
    TU_CHECK(sq_f16_to_f32(0x3555) == 0x1.554p-2f, "f16 decode 0x3555");
    TU_CHECK(isnan(sq_f16_to_f32(sq_f32_to_f16(NAN))), "f16 NaN");
    // every finite f16 round-trips exactly through f32
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00) continue;
        if (sq_f32_to_f16(sq_f16_to_f32((uint16_t)h)) != h) bad++;
    }
    TU_CHECK(bad == 0, "%d f16 values do not round-trip", bad);
    // tie to even: 1 + 2^-11 is halfway between 1 and 1+2^-10 -> 1
    TU_CHECK(sq_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00, "f16 tie to even");
}

static void test_tensor(void) {
    sq_tensor t;
    TU_CHECK(sq_tensor_alloc(&t, SQ_F32, SQ_CPU, 3, SQ_SHAPE(2, 3, 5)) == SQ_OK, "alloc");
    TU_CHECK(sq_tensor_numel(&t) == 30 && sq_tensor_nbytes(&t) == 120, "numel/nbytes");
    float src[30], back[30];
    uint64_t s = 7;
    tu_fill_uniform(src, 30, &s, -3, 3);
    TU_CHECK(sq_tensor_from_host_f32(&t, src) == SQ_OK, "upload");
    sq_tensor r = sq_tensor_reshape(&t, 2, SQ_SHAPE(6, 5));
    TU_CHECK(r.data == t.data && !r.owned && r.shape[0] == 6, "reshape is a view");
    sq_tensor h;
    TU_CHECK(sq_tensor_alloc(&h, SQ_BF16, SQ_CPU, 2, SQ_SHAPE(5, 6)) == SQ_OK, "alloc bf16");
    TU_CHECK(sq_tensor_copy(&h, &t) == SQ_OK, "copy with conversion");
    tu_poison(back, 30);
    TU_CHECK(sq_tensor_to_host_f32(back, &h) == SQ_OK, "download");
    TU_CHECK(tu_rel_err(back, src, 30) < 0x1p-8, "bf16 copy error %g", tu_rel_err(back, src, 30));
    char buf[64];
    TU_CHECK(!strcmp(sq_tensor_describe(&t, buf, sizeof buf), "f32[2,3,5]@cpu"), "describe: %s", buf);
    sq_tensor q = sq_tensor_view(NULL, SQ_Q4, SQ_CPU, 2, SQ_SHAPE(3, 5));
    TU_CHECK(sq_tensor_nbytes(&q) == 8, "q4 bytes for 15 elements");
    sq_tensor bad_copy;
    TU_CHECK(sq_tensor_alloc(&bad_copy, SQ_F32, SQ_CPU, 1, SQ_SHAPE(7)) == SQ_OK, "alloc small");
    TU_CHECK(sq_tensor_copy(&bad_copy, &t) == SQ_FAIL && strstr(sq_error_message(), "elements"), "numel mismatch reported");
    sq_tensor cu;
    if (!sq_get_device_hooks())
        TU_CHECK(sq_tensor_alloc(&cu, SQ_F32, SQ_CUDA, 1, SQ_SHAPE(4)) == SQ_FAIL, "CUDA alloc without backend fails cleanly");
    sq_tensor_free(&bad_copy);
    sq_tensor_free(&h);
    sq_tensor_free(&t);
    TU_CHECK(t.data == NULL, "free zeroes");
}

static void test_arena(void) {
    sq_arena a;
    TU_CHECK(sq_arena_init(&a, SQ_CPU, 4096) == SQ_OK, "arena init");
    char *p1 = sq_arena_alloc(&a, 10);
    char *p2 = sq_arena_alloc(&a, 100);
    TU_CHECK(p1 && p2 && ((uintptr_t)p2 % SQ_ARENA_ALIGN) == 0 && ((uintptr_t)p1 % SQ_ARENA_ALIGN) == 0, "aligned");
    TU_CHECK(p2 - p1 == SQ_ARENA_ALIGN, "second allocation starts at next aligned slot");
    memset(p1, 1, 10);
    memset(p2, 2, 100);
    size_t mark = sq_arena_mark(&a);
    sq_tensor t;
    TU_CHECK(sq_arena_tensor(&a, &t, SQ_F32, 2, SQ_SHAPE(8, 16)) == SQ_OK && !t.owned, "arena tensor");
    size_t hw = a.high_water;
    sq_arena_reset(&a, mark);
    TU_CHECK(a.used == mark && a.high_water == hw, "reset keeps high water");
    TU_CHECK(sq_arena_alloc(&a, 1 << 20) == NULL && strstr(sq_error_message(), "exhausted"), "exhaustion is an error");
    TU_CHECK(sq_arena_alloc(&a, (size_t)-1) == NULL, "huge request does not wrap around");
    TU_CHECK(p1[9] == 1 && p2[99] == 2, "earlier allocations untouched");
    sq_arena_free(&a);
}

static void test_errors(void) {
    sq_error_clear();
    TU_CHECK(sq_errorf("bad %s", "thing") == SQ_FAIL, "errorf returns fail");
    sq_error_context("file.safetensors");
    sq_error_context("loading mmdit");
    TU_CHECK(!strcmp(sq_error_message(), "loading mmdit: file.safetensors: bad thing"), "chain: %s", sq_error_message());
    char buf[32];
    sq_format_duration(3723, buf, sizeof buf);
    TU_CHECK(!strcmp(buf, "1h02m03s"), "duration %s", buf);
    sq_format_duration(2.5, buf, sizeof buf);
    TU_CHECK(!strcmp(buf, "2.5s"), "duration %s", buf);
}

static void test_sha256(void) {
    // FIPS 180-4 examples, plus a multi-block message fed in odd chunks
    struct { const char *msg; const char *hex; } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (int i = 0; i < 3; i++) {
        sq_sha256 s;
        uint8_t d[32];
        char hex[65];
        sq_sha256_init(&s);
        size_t n = strlen(v[i].msg);
        for (size_t o = 0; o < n; o += 7) sq_sha256_update(&s, v[i].msg + o, n - o < 7 ? n - o : 7);
        sq_sha256_final(&s, d);
        sq_sha256_hex(d, hex);
        TU_CHECK(!strcmp(hex, v[i].hex), "sha256 vector %d: %s", i, hex);
    }
    // one million 'a'
    sq_sha256 s;
    sq_sha256_init(&s);
    char a[1000];
    memset(a, 'a', sizeof a);
    for (int i = 0; i < 1000; i++) sq_sha256_update(&s, a, sizeof a);
    uint8_t d[32];
    char hex[65];
    sq_sha256_final(&s, d);
    sq_sha256_hex(d, hex);
    TU_CHECK(!strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"), "sha256 million a: %s", hex);
    // 1000003 bytes (i·31 + 7) mod 251 (digest from Python's hashlib), whole and in
    // chunks that split blocks, through whichever compression runs (SHA-NI or plain)
    uint8_t *big = malloc(1000003);
    TU_CHECK(big != NULL, "allocation");
    if (!big) return;
    for (size_t i = 0; i < 1000003; i++) big[i] = (uint8_t)((i * 31 + 7) % 251);
    for (size_t chunk = 1000003; chunk >= 61; chunk = chunk == 1000003 ? 4099 : chunk == 4099 ? 61 : 0) {
        sq_sha256_init(&s);
        for (size_t o = 0; o < 1000003; o += chunk) sq_sha256_update(&s, big + o, 1000003 - o < chunk ? 1000003 - o : chunk);
        sq_sha256_final(&s, d);
        sq_sha256_hex(d, hex);
        TU_CHECK(!strcmp(hex, "a79aaccf39831e39ad9382f03c515510dcde695830c65a91620160cbe434b410"),
                 "sha256 (%s) of 1000003 bytes in chunks of %zu: %s", sq_sha256_accelerated() ? "SHA-NI" : "plain", chunk, hex);
    }
    free(big);
    printf("sha256: FIPS vectors and a 1 MB message pass (%s)\n", sq_sha256_accelerated() ? "SHA-NI" : "plain C");
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "sha256-plain")) {   // the plain compression, where SHA-NI would run
        setenv("SQ_SHA256_PLAIN", "1", 1);
        test_sha256();
        return tu_finish("test_core sha256-plain");
    }
    test_sha256();
    test_bf16();
    test_f16();
    test_tensor();
    test_arena();
    test_errors();
    return tu_finish("test_core");
}
