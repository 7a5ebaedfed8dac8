#!/usr/bin/env python3
"""Golden fixtures for sd-qzo's VAE (vae/) from diffusers' AutoencoderKL.

A tiny random SD3-shaped VAE (16 latent channels, no quant convs, 4 levels, two
resnets per level, mid-block attention) saved as a diffusers `vae/` folder and as a
Stability single file (`first_stage_model.` keys), with inputs and outputs:

io.safetensors (float32):
  image (1,3,64,64) in [-1,1]      latent_mean (1,16,8,8) the encoder's mean
  latent (1,16,8,8) normalised: (mean - shift_factor) * scaling_factor
  decoded (1,3,64,64)  = vae.decode(latent / scaling_factor + shift_factor)
  image_b2 (2,3,32,48), latent_b2 (2,16,4,6), decoded_b2 (2,3,32,48)

Run: venv/bin/python tools/make_vae_fixtures.py [--out tests/fixtures/vae]
"""
import argparse
import os
import shutil

import torch
from safetensors.torch import save_file

import diffusers
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=16,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[8, 16, 16, 16], layers_per_block=2, norm_num_groups=8,
    scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False,
    sample_size=64,
)


def resnet_map(d, s, out, sd):
    for a, b in [("norm1", "norm1"), ("conv1", "conv1"), ("norm2", "norm2"), ("conv2", "conv2"),
                 ("conv_shortcut", "nin_shortcut")]:
        for kind in ("weight", "bias"):
            if f"{d}.{a}.{kind}" in sd:
                out[f"{s}.{b}.{kind}"] = sd[f"{d}.{a}.{kind}"]


def to_single_file(sd, n_levels):
    """diffusers VAE keys -> ldm keys under first_stage_model. (inverse of diffusers' converter)."""
    out = {}
    for part in ("encoder", "decoder"):
        for a, b in [("conv_in", "conv_in"), ("conv_out", "conv_out"), ("conv_norm_out", "norm_out")]:
            for kind in ("weight", "bias"):
                out[f"{part}.{b}.{kind}"] = sd[f"{part}.{a}.{kind}"]
        for r in (0, 1):
            resnet_map(f"{part}.mid_block.resnets.{r}", f"{part}.mid.block_{r + 1}", out, sd)
        att = f"{part}.mid_block.attentions.0"
        for a, b in [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]:
            w = sd[f"{att}.{a}.weight"]
            out[f"{part}.mid.attn_1.{b}.weight"] = w[:, :, None, None] if a != "group_norm" else w
            out[f"{part}.mid.attn_1.{b}.bias"] = sd[f"{att}.{a}.bias"]
    for i in range(n_levels):
        for j in range(3):
            resnet_map(f"encoder.down_blocks.{i}.resnets.{j}", f"encoder.down.{i}.block.{j}", out, sd)
            resnet_map(f"decoder.up_blocks.{i}.resnets.{j}", f"decoder.up.{n_levels - 1 - i}.block.{j}", out, sd)
        for kind in ("weight", "bias"):
            k = f"encoder.down_blocks.{i}.downsamplers.0.conv.{kind}"
            if k in sd:
                out[f"encoder.down.{i}.downsample.conv.{kind}"] = sd[k]
            k = f"decoder.up_blocks.{i}.upsamplers.0.conv.{kind}"
            if k in sd:
                out[f"decoder.up.{n_levels - 1 - i}.upsample.conv.{kind}"] = sd[k]
    return {"first_stage_model." + k: v for k, v in out.items()}


def randomise(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "vae"))
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(77)
    torch.manual_seed(0)
    vae = AutoencoderKL(**CONFIG).eval()
    randomise(vae, gen)
    d = os.path.join(args.out, "tiny")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    vae.save_pretrained(os.path.join(d, "vae"), safe_serialization=True)
    sd = {k: v.clone() for k, v in vae.state_dict().items()}
    single = to_single_file(sd, len(CONFIG["block_out_channels"]))
    back = convert_ldm_vae_checkpoint({k: v.clone() for k, v in single.items()}, dict(vae.config))
    assert set(back) == set(sd), sorted(set(back) ^ set(sd))
    for k in sd:
        assert torch.equal(back[k].reshape(sd[k].shape), sd[k]), k
    save_file({k: v.contiguous() for k, v in single.items()}, os.path.join(d, "single_file.safetensors"))

    sf, sh = vae.config.scaling_factor, vae.config.shift_factor
    t = {}
    with torch.no_grad():
        for suffix, shape in (("", (1, 3, 64, 64)), ("_b2", (2, 3, 32, 48))):
            img = torch.rand(shape, generator=gen) * 2 - 1
            mean = vae.encode(img).latent_dist.mean
            lat = (mean - sh) * sf
            dec = vae.decode(lat / sf + sh).sample
            t["image" + suffix], t["latent_mean" + suffix], t["latent" + suffix], t["decoded" + suffix] = img, mean, lat, dec
            print(f"image{suffix} {tuple(shape)}: latent norm {lat.norm():.4f}, decoded norm {dec.norm():.4f}")
    save_file({k: v.contiguous().float() for k, v in t.items()}, os.path.join(d, "io.safetensors"),
              metadata={"diffusers_version": diffusers.__version__, "torch_version": torch.__version__})


if __name__ == "__main__":
    main()
