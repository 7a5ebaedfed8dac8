// vae/vae_internal.h: pieces shared by the VAE's files; not a public API.
#ifndef SD_VAE_INTERNAL_H
#define SD_VAE_INTERNAL_H

#include "vae/model.h"


// x (B,Cin,H,W) -> out (B,Cout,H,W); out must not alias x.
int sd_vae_resnet_forward(const sd_vae *v, const sd_vae_resnet *r, sq_arena *a, const sq_tensor *x, sq_tensor *out);
// Single-head self-attention over the H·W positions, with residual; out != x.
int sd_vae_attention_forward(const sd_vae *v, const sd_vae_attention *at, sq_arena *a, const sq_tensor *x, sq_tensor *out);
// conv helper: out = conv(x) with symmetric padding `pad` and stride 1.
void sd_vae_conv(const sd_conv *c, const sq_tensor *x, sq_tensor *out, int pad);

#endif
