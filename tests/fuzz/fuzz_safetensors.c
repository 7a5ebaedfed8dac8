// tests/fuzz/fuzz_safetensors.c: libFuzzer target for the safetensors reader
// (core/safetensors_read.c): header JSON, dtypes, shapes, offsets, metadata. The
// input is the whole file; a file that opens has every tensor viewed and read.
#include "core/error.h"
#include "core/safetensors.h"
#include "core/tensor.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fz_write("t.safetensors", data, size);
    sq_safetensors *st = NULL;
    if (sq_st_open(&st, path) != SQ_OK) return 0;
    volatile unsigned sum = 0;
    for (int i = 0; i < sq_st_count(st); i++) {
        const sq_st_entry *e = sq_st_at(st, i);
        if (sq_st_find(st, e->name) != e) abort();  // the index must find what it lists
        if (e->nbytes) sum += ((const unsigned char *)e->data)[0] + ((const unsigned char *)e->data)[e->nbytes - 1];
        sq_tensor t;
        // widening to f32 allocates: only small tensors
        if (sq_st_entry_tensor(e, &t) == SQ_OK && t.ndim > 0 && e->nbytes <= (1u << 20)) {
            sq_tensor dst;
            if (sq_tensor_alloc(&dst, SQ_F32, SQ_CPU, t.ndim, t.shape) == SQ_OK) {
                (void)sq_st_load(st, e->name, &dst);
                sq_tensor_free(&dst);
            }
        }
    }
    for (int i = 0; i < sq_st_metadata_count(st); i++) {
        const char *k = sq_st_metadata_key(st, i), *v = sq_st_metadata(st, k);
        if (!v) abort();
        sum += (unsigned)strlen(v);
    }
    sq_st_close(st);
    return 0;
}
