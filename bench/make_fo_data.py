#!/usr/bin/env python3
"""val.safetensors / train.safetensors for bench/first_order.py, made with diffusers (a stand-in for, and a
check of, the files sd-qzo writes; use sd-qzo's own files for comparisons with QZO).

From a diffusers SD3 pipeline folder and image folders with captions.txt ("file<TAB>caption"):
  train.safetensors  x0 [M,16,h,w] (VAE encoder mean, (z - shift) * scale), context [M,77+T5,D], pooled [M,P]
  val.safetensors    the same for the val images, each repeated for --sigmas fixed sigmas (logit-normal +
                     the scheduler's shift, seeded), with noise [N,16,h,w] and sigma [N]; N = images x sigmas
Images are resized to --size (square). Run:
  python bench/make_fo_data.py --model demo/model --train-dir demo/finetune --val-dir bench/data --out /tmp/fo
"""
import argparse
import json
import os

import numpy as np
import torch


def load_dir(d, size, limit):
    from PIL import Image
    items = [ln.rstrip("\n").split("\t", 1) for ln in open(os.path.join(d, "captions.txt"), encoding="utf-8")
             if ln.strip()]
    if limit:
        items = items[:limit]
    imgs = [np.asarray(Image.open(os.path.join(d, f)).convert("RGB").resize((size, size), Image.LANCZOS))
            for f, _ in items]
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1, [c for _, c in items]


@torch.no_grad()
def encode(pipe, x, caps, t5_len, dev):
    vae = pipe.vae
    z = vae.encode(x.to(dev)).latent_dist.mean
    x0 = (z - vae.config.shift_factor) * vae.config.scaling_factor
    ctx, _, pooled, _ = pipe.encode_prompt(caps, caps, caps, device=dev, do_classifier_free_guidance=False,
                                           max_sequence_length=t5_len)
    return x0.float().cpu(), ctx.float().cpu(), pooled.float().cpu()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--train-dir", required=True)
    ap.add_argument("--val-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--t5-len", type=int, default=256)
    ap.add_argument("--sigmas", type=int, default=4)
    ap.add_argument("--limit", type=int, default=0, help="at most N images per folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    from diffusers import StableDiffusion3Pipeline
    from safetensors.torch import save_file
    dev = torch.device(a.device)
    pipe = StableDiffusion3Pipeline.from_pretrained(a.model, torch_dtype=torch.float32).to(dev)
    shift = float(json.load(open(os.path.join(a.model, "scheduler", "scheduler_config.json"))).get("shift", 1.0))
    os.makedirs(a.out, exist_ok=True)
    x, caps = load_dir(a.train_dir, a.size, a.limit)
    x0, ctx, pooled = encode(pipe, x, caps, a.t5_len, dev)
    m = x0.shape[0]
    save_file({"x0": x0.contiguous(), "context": ctx.contiguous(), "pooled": pooled.contiguous()},
              os.path.join(a.out, "train.safetensors"))
    x, caps = load_dir(a.val_dir, a.size, a.limit)
    x0, ctx, pooled = encode(pipe, x, caps, a.t5_len, dev)
    g = torch.Generator().manual_seed(a.seed)
    K = a.sigmas
    u = torch.sigmoid(torch.randn(x0.shape[0] * K, generator=g))
    sigma = shift * u / (1 + (shift - 1) * u)
    rep = lambda t: t.repeat_interleave(K, dim=0).contiguous()   # noqa: E731  item i*K+k: image i, sigma k
    noise = torch.randn((x0.shape[0] * K,) + tuple(x0.shape[1:]), generator=g)
    save_file({"x0": rep(x0), "context": rep(ctx), "pooled": rep(pooled), "noise": noise, "sigma": sigma},
              os.path.join(a.out, "val.safetensors"))
    print(f"{a.out}: train {m} images, "
          f"val {x0.shape[0]} images x {K} sigmas; latents {tuple(x0.shape[1:])}, context {tuple(ctx.shape[1:])}, "
          f"pooled {tuple(pooled.shape[1:])}, shift {shift}")


if __name__ == "__main__":
    main()
