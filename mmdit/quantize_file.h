// mmdit/quantize_file.h: converting an MMDiT checkpoint on disk to sd-qzo's int4
// file (format q4-v1: "X.weight.q4" codes + "X.weight.scales", the source hash, the
// layout and the transformer config in the metadata; mmdit/base_model.h reads it).
// The quantiser streams: host memory stays at about one tensor's codes and scales.
#ifndef SD_MMDIT_QUANTIZE_FILE_H
#define SD_MMDIT_QUANTIZE_FILE_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/backend.h"

// model: a diffusers pipeline or transformer folder, or a single-file checkpoint
// (only its model.diffusion_model.* tensors are kept). group: 32, 64 or 128.
// quiet: no progress bar and no per-kind error table on stdout.
// Quantises on the GPU when one is there (the same bits as the CPU).
int sd_quantize_checkpoint(const char *model, const char *out_path, int group, bool quiet);

typedef struct {
    bool quiet;
    sq_device_request device;   // AUTO: CUDA when a GPU is visible, else all CPU threads
} sd_quantize_options;

typedef struct {
    double seconds;             // the whole call: open, hash, quantise, write, fsync
    int64_t bytes_in;           // the source tensors' bytes
    int64_t peak_rss_bytes;     // the process's peak resident set (VmHWM) at the end
    bool on_gpu;
    int threads;                // CPU threads (0 on the GPU)
    double cpu_seconds;         // user + system CPU time of the process meanwhile
} sd_quantize_stats;

// The same with a device choice; stats (may be NULL) is filled on success. Prints
// progress in MB/s, the time and the peak host memory unless quiet.
int sd_quantize_checkpoint_ex(const char *model, const char *out_path, int group, const sd_quantize_options *opt,
                              sd_quantize_stats *stats);

#endif
