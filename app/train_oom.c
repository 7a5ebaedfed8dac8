// app/train_oom.c: out of memory in the middle of a run (app/train_loop_state.h):
// telling it from other failures, saving the last finished step, and the test hook
// that fakes it on the CPU.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/train_loop_state.h"
#include "core/error.h"

// Test hook, read here only (README "Fault injection"): SD_QZO_FAULT=alloc@step:N makes
// step N fail as a device allocation does, to test the out-of-memory path on the CPU.
bool sd_train_fault_alloc_at(int64_t step) {
    const char *f = getenv("SD_QZO_FAULT");
    long long n;
    return f && sscanf(f, "alloc@step:%lld", &n) == 1 && n == step;
}

// An allocation failure (cudaErrorMemoryAllocation reads "out of memory", the arena
// and slab allocator say "out of GPU memory" / "out of host memory").
bool sd_train_is_out_of_memory(const char *msg) {
    return strstr(msg, "out of memory") || strstr(msg, "out of GPU memory") || strstr(msg, "out of host memory");
}

// Out of memory mid-run: the failed step changed no scale (they change only after its
// forward passes), so the last finished step is saved, and the message says how to
// need less memory.
int sd_train_out_of_memory(loop *L) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", sq_error_message());
    int64_t step = L->qs.step;
    if (sd_train_save_checkpoint(L) != SQ_OK)
        return sq_error_context("out of memory at step %lld (%s), and the checkpoint could not be saved", (long long)step + 1, msg);
    return sq_errorf("out of memory at step %lld (%s); checkpoint saved at step %lld: continue with --resume "
                     "%s/checkpoint.safetensors and less memory: a smaller --batch-size or --resolution, or --low-vram",
                     (long long)step + 1, msg, (long long)step, L->t->opt.output);
}
