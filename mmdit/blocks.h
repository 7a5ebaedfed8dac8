// mmdit/blocks.h: the pieces of the MMDiT forward pass, shared between
// mmdit/embed.c, mmdit/joint_block.c and mmdit/forward.c. Not a public API.
// Every function takes its scratch from `a` and returns SQ_FAIL only when the arena
// is exhausted (the message says so).
#ifndef SD_MMDIT_BLOCKS_H
#define SD_MMDIT_BLOCKS_H

#include "mmdit/model.h"

// A scratch tensor in the model's dtype and device.
int sd_tmp(sq_arena *a, const sd_mmdit *m, sq_tensor *t, int ndim, const int64_t *shape);
// chunk i of n along the last dim of x (B, n*D) -> out (B, D): a view of x when
// B == 1 (contiguous), else a copy in scratch. Either way, read-only for callers.
int sd_chunk(sq_arena *a, const sd_mmdit *m, const sq_tensor *x, int n, int i, sq_tensor *out);

// x (B,N,D): patch embedding of latent (B,C,H,W) plus the cropped position table.
int sd_embed_patches(const sd_mmdit *m, sq_arena *a, const sq_tensor *latent, sq_tensor *x);
// feat (B,256), the model's dtype and device: the sinusoidal features of the B
// timesteps (host values), computed on the host and copied over.
int sd_time_features_upload(const float *timestep, sq_tensor *feat);
// temb (B,D) = timestep MLP(time_features) + pooled MLP(pooled).
int sd_embed_time_text(const sd_mmdit *m, sq_arena *a, const sq_tensor *time_features, const sq_tensor *pooled,
                       const sq_perturb *p, sq_tensor *temb);

// One joint block, in place on x (B,N,D) and c (B,T,D); silu_temb (B,D). The
// context stream's half runs on the side stream of kernels/streams.h with its
// scratch from `side`, an arena of at least sd_joint_block_side_bytes.
int sd_joint_block(const sd_mmdit *m, const sd_mmdit_block *b, sq_arena *a, sq_arena *side, sq_tensor *x,
                   sq_tensor *c, const sq_tensor *silu_temb, const sq_perturb *p);
size_t sd_joint_block_side_bytes(const sd_mmdit_config *c, int B, int T, int elem_bytes);

#endif
