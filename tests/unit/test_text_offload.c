// tests/unit/test_text_offload.c: the host block store of text_encoders/offload.h,
// with the staging block on the CPU (the layout logic is device-independent; the GPU
// path is tests/gpu/test_gpu_text_offload.c):
// - adopting a block frees its tensors and leaves views of copies in the store,
//   blocks block_bytes apart, each tensor at a 256-byte-aligned offset;
// - staging block i copies exactly its bytes and rebases a struct copy onto the
//   staging block (other blocks' bytes never leak in; empty tensors stay empty);
// - a block of another size is refused with a message.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tests/test_util.h"
#include "text_encoders/offload.h"

#define NT 4

typedef struct {
    sq_tensor t[NT];   // bf16 (3,5), empty, i8 (7), f32 (2,2)
} block;

static void make_block(block *b, int seed) {
    memset(b, 0, sizeof *b);
    SQ_CHECK(sq_tensor_alloc(&b->t[0], SQ_BF16, SQ_CPU, 2, SQ_SHAPE(3, 5)) == SQ_OK &&
                 sq_tensor_alloc(&b->t[2], SQ_I8, SQ_CPU, 1, SQ_SHAPE(7)) == SQ_OK &&
                 sq_tensor_alloc(&b->t[3], SQ_F32, SQ_CPU, 2, SQ_SHAPE(2, 2)) == SQ_OK,
             "%s", sq_error_message());
    for (int j = 0; j < NT; j++) {
        unsigned char *p = b->t[j].data;
        for (size_t k = 0; p && k < sq_tensor_nbytes(&b->t[j]); k++) p[k] = (unsigned char)(seed * 37 + j * 11 + k);
    }
}

static void ptrs(block *b, sq_tensor *out[NT]) {
    for (int j = 0; j < NT; j++) out[j] = &b->t[j];
}

int main(void) {
    sd_offload o = {0};
    block b[2], want[2];
    for (int i = 0; i < 2; i++) {
        make_block(&b[i], i + 1);
        // the expected bytes, kept aside before adopt frees the originals
        for (int j = 0; j < NT; j++) {
            want[i].t[j] = b[i].t[j];
            if (b[i].t[j].data) {
                want[i].t[j].data = malloc(sq_tensor_nbytes(&b[i].t[j]));
                memcpy(want[i].t[j].data, b[i].t[j].data, sq_tensor_nbytes(&b[i].t[j]));
            }
        }
        sq_tensor *ts[NT];
        ptrs(&b[i], ts);
        TU_CHECK(sd_offload_adopt(&o, 2, i, ts, NT, SQ_CPU) == SQ_OK, "adopt %d: %s", i, sq_error_message());
    }
    TU_CHECK(o.host && o.block_bytes == 3 * 256 && o.n_blocks == 2 && o.staging.data &&
                 sq_tensor_nbytes(&o.staging) == o.block_bytes,
             "store: %zu bytes a block (want 768: three tensors, each padded to 256)", o.block_bytes);
    for (int i = 0; i < 2; i++) {
        TU_CHECK(!b[i].t[1].data, "block %d: the empty tensor stays empty", i);
        for (int j = 0; j < NT; j++) {
            if (!b[i].t[j].data) continue;
            size_t off = (size_t)((char *)b[i].t[j].data - o.host);
            TU_CHECK(!b[i].t[j].owned && b[i].t[j].device == SQ_CPU && off >= (size_t)i * o.block_bytes &&
                         off < (size_t)(i + 1) * o.block_bytes && off % 256 == 0,
                     "block %d tensor %d: a view at offset %zu of the store", i, j, off);
        }
    }
    // stage block 1, then block 0 over it: each time exactly that block's bytes
    for (int round = 0; round < 2; round++) {
        int i = 1 - round;
        block s = b[i];
        sq_tensor *ts[NT];
        ptrs(&s, ts);
        TU_CHECK(sd_offload_stage(&o, i, ts, NT) == SQ_OK, "stage %d: %s", i, sq_error_message());
        TU_CHECK(!s.t[1].data, "staged block %d: the empty tensor stays empty", i);
        for (int j = 0; j < NT; j++) {
            if (!s.t[j].data) continue;
            char *p = s.t[j].data, *base = o.staging.data;
            TU_CHECK(p >= base && p + sq_tensor_nbytes(&s.t[j]) <= base + o.block_bytes && s.t[j].dtype == want[i].t[j].dtype &&
                         sq_tensor_same_shape(&s.t[j], &want[i].t[j]) &&
                         !memcmp(p, want[i].t[j].data, sq_tensor_nbytes(&s.t[j])),
                     "staged block %d tensor %d: not the adopted bytes at the staging block", i, j);
        }
        TU_CHECK(b[i].t[0].data != s.t[0].data, "staging rebased the model's own block %d", i);
    }
    // a block of another size
    block odd;
    memset(&odd, 0, sizeof odd);
    SQ_CHECK(sq_tensor_alloc(&odd.t[0], SQ_F32, SQ_CPU, 1, SQ_SHAPE(300)) == SQ_OK, "%s", sq_error_message());
    sq_tensor *ts[NT];
    ptrs(&odd, ts);
    TU_CHECK(sd_offload_adopt(&o, 2, 1, ts, NT, SQ_CPU) == SQ_FAIL && strstr(sq_error_message(), "blocks must be alike"),
             "a block of another size: '%s'", sq_error_message());
    sq_tensor_free(&odd.t[0]);
    sd_offload_free(&o);
    TU_CHECK(!o.host && !o.staging.data, "free leaves the store empty");
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < NT; j++) free(want[i].t[j].data);
    return tu_finish("test_text_offload");
}
