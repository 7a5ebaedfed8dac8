// core/gguf.h: read and write GGUF files (ggml's single-file format, versions 2
// and 3, little-endian), and the ggml block formats sd-qzo reads or writes.
//
// File layout (ggml's docs/gguf.md): "GGUF", u32 version, u64 tensor count, u64
// key/value count; the key/values (a key is a u64-length string, then a u32 value
// type and the value; arrays are u32 element type + u64 count + elements); one info
// per tensor (name, u32 n_dims, u64 ne[n_dims] with ne[0] the fastest-varying, i.e.
// a PyTorch (N, K) weight has ne = {K, N}, u32 ggml type, u64 offset into the data
// block); padding to the alignment; the data block. The alignment is the u32
// general.alignment key (default 32); every offset is a multiple of it.
//
// Reading mmaps the file read-only and validates everything before a tensor is
// handed out: the magic, the version, counts and string lengths against the file
// size, every key/value walked (nested arrays refused), known tensor types, dims
// whose element count is a whole number of blocks (overflow-checked), offsets that
// are aligned and whose data lies inside the file. Every error names the file.
//
// Writing is streamed and atomic like core/safetensors.h's writer: declare every
// tensor and key/value, append each tensor's bytes in order, commit (fsync + rename).
//
// Block formats (one block of 32 or 256 elements along ne[0]):
//   Q4_0  fp16 d, 16 bytes: element j in the low nibble of byte j, element j+16 in
//         its high nibble, each an unsigned q in [0, 15]; value (q - 8) · d.
//   Q8_0  fp16 d, 32 int8 q; value q · d.
//   Q4_K  256 elements: fp16 d, fp16 dmin, 12 bytes of eight 6-bit (scale, min)
//         pairs, 128 bytes of nibbles; sub-block b of 32 is d·sc_b·q − dmin·m_b.
#ifndef SQ_GGUF_H
#define SQ_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SQ_GGUF_MAX_DIMS 4
#define SQ_GGUF_DEFAULT_ALIGNMENT 32

// ggml type ids (the subset sd-qzo reads; others are refused by name)
typedef enum {
    SQ_GGML_F32 = 0,
    SQ_GGML_F16 = 1,
    SQ_GGML_Q4_0 = 2,
    SQ_GGML_Q8_0 = 8,
    SQ_GGML_Q4_K = 12,
    SQ_GGML_BF16 = 30,
} sq_ggml_type;

// GGUF value types
typedef enum {
    SQ_GGUF_U8 = 0, SQ_GGUF_I8, SQ_GGUF_U16, SQ_GGUF_I16, SQ_GGUF_U32, SQ_GGUF_I32, SQ_GGUF_F32, SQ_GGUF_BOOL,
    SQ_GGUF_STRING, SQ_GGUF_ARRAY, SQ_GGUF_U64, SQ_GGUF_I64, SQ_GGUF_F64, SQ_GGUF_VALUE_TYPE_COUNT
} sq_gguf_value_type;

// Elements per block and bytes per block of a supported type; false for another.
bool sq_ggml_type_block(uint32_t type, int *block_elems, int *block_bytes);
const char *sq_ggml_type_name(uint32_t type);   // "Q4_0", ...; "type N" text for unknown ones
// Bytes of n elements of type (n a multiple of its block), 0 for an unknown type.
size_t sq_ggml_nbytes(uint32_t type, int64_t n);

// Widens n elements (a whole number of blocks) of src into dst. SQ_FAIL for an
// unknown type (the message names the type).
int sq_ggml_dequantize(uint32_t type, const void *src, int64_t n, float *dst);

typedef struct {
    const char *name;             // owned by the sq_gguf it came from
    uint32_t type;                // ggml type
    int n_dims;
    int64_t ne[SQ_GGUF_MAX_DIMS]; // ne[0] fastest-varying; dims past n_dims are 1
    const void *data;             // into the mmapped file
    size_t nbytes;
} sq_gguf_tensor;

typedef struct sq_gguf sq_gguf;

int sq_gguf_open(sq_gguf **out, const char *path);
void sq_gguf_close(sq_gguf *g);
uint32_t sq_gguf_version(const sq_gguf *g);
uint32_t sq_gguf_alignment(const sq_gguf *g);
int sq_gguf_tensor_count(const sq_gguf *g);
const sq_gguf_tensor *sq_gguf_tensor_at(const sq_gguf *g, int i);            // file order
const sq_gguf_tensor *sq_gguf_find(const sq_gguf *g, const char *name);      // NULL if absent
// Key/values: the string value of key (NULL when absent or not a string), and
// integers of any integer value type (false when absent or not an integer).
const char *sq_gguf_get_string(const sq_gguf *g, const char *key);
bool sq_gguf_get_int(const sq_gguf *g, const char *key, int64_t *out);
int sq_gguf_kv_count(const sq_gguf *g);
const char *sq_gguf_kv_key(const sq_gguf *g, int i);

// ---- writing ----
typedef struct {
    const char *name;
    uint32_t type;                // ggml type
    int n_dims;
    int64_t ne[SQ_GGUF_MAX_DIMS];
} sq_gguf_tensor_desc;

typedef struct {
    const char *key;
    sq_gguf_value_type type;      // SQ_GGUF_STRING, SQ_GGUF_U32 or SQ_GGUF_I32 ...
    const char *str;              // STRING
    int64_t i;                    // integer types
} sq_gguf_kv;

typedef struct sq_gguf_writer sq_gguf_writer;
// Version 3, alignment SQ_GGUF_DEFAULT_ALIGNMENT (general.alignment is not written).
int sq_gguf_writer_begin(sq_gguf_writer **out, const char *path, const sq_gguf_tensor_desc *tensors, int n_tensors,
                         const sq_gguf_kv *kvs, int n_kvs);
// Appends bytes of the current tensor (a tensor may take several calls); the
// padding between tensors is written here. On error the writer is freed.
int sq_gguf_writer_append(sq_gguf_writer *w, const void *data, size_t nbytes);
int sq_gguf_writer_commit(sq_gguf_writer *w);   // frees w
void sq_gguf_writer_abort(sq_gguf_writer *w);   // frees w

#ifdef __cplusplus
}
#endif

#endif
