// core/safetensors.h: read and write the safetensors format.
//
// File layout: 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ...,
//  "__metadata__": {"key": "value"}}, then the data block; offsets are relative to
// the data block's start.
//
// Reading mmaps the file read-only and validates everything before any tensor is
// handed out: header length within the file and under 100 MB, well-formed JSON,
// known dtypes, shapes whose byte size matches data_offsets (overflow-checked),
// offsets inside the data block, no two tensors overlapping. A model made of
// several shards is opened through its "*.safetensors.index.json" (weight_map),
// and a directory opens every *.safetensors in it (or its index).
// Every error names the file and what is wrong with it.
//
// Writing is atomic: data goes to "<path>.tmp.<pid>", is fsync'ed, then renamed
// over <path>, so a crash never leaves a half-written checkpoint behind.
#ifndef SQ_SAFETENSORS_H
#define SQ_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SQ_ST_MAX_DIMS 8

typedef struct {
    const char *name;            // owned by the sq_safetensors it came from
    sq_dtype dtype;
    int ndim;
    int64_t shape[SQ_ST_MAX_DIMS];
    const void *data;            // points into the mmapped file
    size_t nbytes;
    int file;                    // index into the shard list
} sq_st_entry;

typedef struct sq_safetensors sq_safetensors;

// path: a .safetensors file, a *.safetensors.index.json, or a directory holding
// either. SQ_FAIL with a message naming the file on any problem.
int sq_st_open(sq_safetensors **out, const char *path);
void sq_st_close(sq_safetensors *st);

int sq_st_count(const sq_safetensors *st);
const sq_st_entry *sq_st_at(const sq_safetensors *st, int i);           // sorted by name
const sq_st_entry *sq_st_find(const sq_safetensors *st, const char *name);  // NULL if absent
const char *sq_st_file_path(const sq_safetensors *st, int file);
int sq_st_file_count(const sq_safetensors *st);
// "__metadata__" value for key (from the first shard that has it), or NULL.
const char *sq_st_metadata(const sq_safetensors *st, const char *key);
int sq_st_metadata_count(const sq_safetensors *st);
const char *sq_st_metadata_key(const sq_safetensors *st, int i);

// Streaming over a file larger than memory: prefetch asks the kernel to read the
// entry's bytes ahead (MADV_WILLNEED); release drops the entry's whole pages from
// this process's memory (MADV_DONTNEED: they stay in the page cache and are read
// again on the next access), so the mapped file does not grow the resident set.
// Both act only on entries in a file that st mapped (sq_st_open), and do nothing
// for a set made by sq_st_from_entries (a GGUF base: its data may be heap memory).
void sq_st_entry_prefetch(const sq_safetensors *st, const sq_st_entry *e);
void sq_st_entry_release(const sq_safetensors *st, const sq_st_entry *e);
// Entry as a borrowed host tensor (fails if ndim > SQ_MAX_DIMS).
int sq_st_entry_tensor(const sq_st_entry *e, sq_tensor *out);
// Loads an entry into dst (any device, f32/bf16/f16), converting dtype, after
// checking that the entry's shape equals dst's shape. Error names the tensor.
int sq_st_load(const sq_safetensors *st, const char *name, sq_tensor *dst);

// ---- writing ----
typedef struct {
    const char *name;
    sq_dtype dtype;              // Q4 is written as U8 with its byte shape
    int ndim;
    int64_t shape[SQ_ST_MAX_DIMS];
    const void *data;            // host memory, sq_dtype_bytes(dtype, numel) bytes
} sq_st_tensor_desc;

typedef struct {
    const char *key;
    const char *value;
} sq_st_kv;

// A read-only set of tensors that another reader made in memory (a GGUF base,
// mmdit/gguf_base.h), so the code that reads safetensors reads it unchanged. The
// entries' names and the metadata are copied; their data stay the caller's, kept
// alive by `owner`, which sq_st_close hands to free_owner (either may be NULL).
// `path` names the set in messages (sq_st_file_path(st, 0)). Duplicate names fail.
int sq_st_from_entries(sq_safetensors **out, const char *path, const sq_st_entry *entries, int n, const sq_st_kv *meta,
                       int n_meta, void *owner, void (*free_owner)(void *));

// Writes a whole file atomically (temp + fsync + rename).
int sq_st_write(const char *path, const sq_st_tensor_desc *tensors, int n_tensors,
                const sq_st_kv *metadata, int n_metadata);

// Streaming writer for files larger than memory (quantising a checkpoint): declare
// every tensor first (the header must be written before the data), then append each
// tensor's bytes in declaration order, then commit (fsync + rename). Aborting, or
// any error, removes the temp file.
typedef struct sq_st_writer sq_st_writer;
int sq_st_writer_begin(sq_st_writer **out, const char *path, const sq_st_tensor_desc *tensors, int n_tensors,
                       const sq_st_kv *metadata, int n_metadata);   // desc.data ignored
int sq_st_writer_append(sq_st_writer *w, const void *data, size_t nbytes);
// Replaces metadata `key`'s value, given at begin, by `value` of the same length
// (plain characters): a value known only once the data is written (a hash of what
// was streamed). On error, w is freed.
int sq_st_writer_patch_metadata(sq_st_writer *w, const char *key, const char *value);
int sq_st_writer_commit(sq_st_writer *w);    // frees w
void sq_st_writer_abort(sq_st_writer *w);    // frees w

#ifdef __cplusplus
}
#endif

#endif
