#!/usr/bin/env python3
"""Golden fixtures for sd-qzo's MMDiT (mmdit/) from diffusers' SD3Transformer2DModel.

Builds tiny random SD3-family transformers, saves them in the real file layouts and
records inputs, outputs and intermediate activations, so tests/golden compares the
C forward pass with diffusers on CPU in float32.

Cases (tests/fixtures/mmdit/<case>/):
  large_like    SD3.5-Large-like: QK RMSNorm, no dual attention, sharded diffusers
                folder (index.json + 2 shards) and Stability's single-file layout
  medium_like   SD3.5-Medium-like: MMDiT-X dual attention in blocks 0 and 1
  nonsquare_b2  SD3.0-like (no QK norm), batch 2, 8x12 latent; also saved in bf16
                (transformer_bf16/) with the output of those bf16-rounded weights

Fixture contract (io.safetensors, float32):
  hidden_states (B,C,H,W), encoder_hidden_states (B,T,joint_dim), pooled_projections
  (B,pooled_dim), timestep (B,), output (B,C,H,W); intermediates: x_embedded (B,N,D)
  after patch + position embedding, temb (B,D), context_embedded (B,T,D),
  block0_hidden / block0_context (outputs of transformer_blocks[0]), final_hidden
  (B,N,D) entering norm_out; nonsquare_b2 also has output_bf16weights.

Run: venv/bin/python tools/make_mmdit_fixtures.py [--out tests/fixtures/mmdit]
"""
import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file

import diffusers
from diffusers import SD3Transformer2DModel
from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

BASE = dict(
    patch_size=2, in_channels=16, out_channels=16, attention_head_dim=16, num_attention_heads=2,
    joint_attention_dim=48, caption_projection_dim=32, pooled_projection_dim=24,
)
CASES = {
    "large_like": dict(cfg=dict(BASE, num_layers=3, qk_norm="rms_norm", pos_embed_max_size=16, sample_size=16,
                                dual_attention_layers=()), batch=1, hw=(8, 8), tctx=7, shard=True, single=True),
    "medium_like": dict(cfg=dict(BASE, num_layers=3, qk_norm="rms_norm", pos_embed_max_size=24, sample_size=16,
                                 dual_attention_layers=(0, 1)), batch=1, hw=(8, 8), tctx=7),
    "nonsquare_b2": dict(cfg=dict(BASE, num_layers=2, qk_norm=None, pos_embed_max_size=16, sample_size=16,
                                  dual_attention_layers=()), batch=2, hw=(8, 12), tctx=5, bf16=True),
}


def swap_halves(t):
    """(shift, scale) <-> (scale, shift): the adaLN chunk order differs between layouts."""
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def to_single_file(sd, num_layers, dual_layers):
    """diffusers keys -> Stability single-file keys (the inverse of diffusers' converter)."""
    out = {}
    p = "model.diffusion_model."
    out[p + "pos_embed"] = sd["pos_embed.pos_embed"]
    out[p + "x_embedder.proj.weight"] = sd["pos_embed.proj.weight"]
    out[p + "x_embedder.proj.bias"] = sd["pos_embed.proj.bias"]
    for a, b in [("t_embedder.mlp.0", "time_text_embed.timestep_embedder.linear_1"),
                 ("t_embedder.mlp.2", "time_text_embed.timestep_embedder.linear_2"),
                 ("y_embedder.mlp.0", "time_text_embed.text_embedder.linear_1"),
                 ("y_embedder.mlp.2", "time_text_embed.text_embedder.linear_2"),
                 ("context_embedder", "context_embedder"), ("final_layer.linear", "proj_out")]:
        out[p + a + ".weight"] = sd[b + ".weight"]
        out[p + a + ".bias"] = sd[b + ".bias"]
    out[p + "final_layer.adaLN_modulation.1.weight"] = swap_halves(sd["norm_out.linear.weight"])
    out[p + "final_layer.adaLN_modulation.1.bias"] = swap_halves(sd["norm_out.linear.bias"])
    for i in range(num_layers):
        d, s = f"transformer_blocks.{i}.", p + f"joint_blocks.{i}."
        last = i == num_layers - 1
        for kind in ("weight", "bias"):
            out[s + f"x_block.attn.qkv.{kind}"] = torch.cat([sd[d + f"attn.to_{c}.{kind}"] for c in "qkv"])
            out[s + f"context_block.attn.qkv.{kind}"] = torch.cat([sd[d + f"attn.add_{c}_proj.{kind}"] for c in "qkv"])
            out[s + f"x_block.attn.proj.{kind}"] = sd[d + f"attn.to_out.0.{kind}"]
            if not last:
                out[s + f"context_block.attn.proj.{kind}"] = sd[d + f"attn.to_add_out.{kind}"]
            out[s + f"x_block.adaLN_modulation.1.{kind}"] = sd[d + f"norm1.linear.{kind}"]
            ctx_mod = sd[d + f"norm1_context.linear.{kind}"]
            out[s + f"context_block.adaLN_modulation.1.{kind}"] = swap_halves(ctx_mod) if last else ctx_mod
            out[s + f"x_block.mlp.fc1.{kind}"] = sd[d + f"ff.net.0.proj.{kind}"]
            out[s + f"x_block.mlp.fc2.{kind}"] = sd[d + f"ff.net.2.{kind}"]
            if not last:
                out[s + f"context_block.mlp.fc1.{kind}"] = sd[d + f"ff_context.net.0.proj.{kind}"]
                out[s + f"context_block.mlp.fc2.{kind}"] = sd[d + f"ff_context.net.2.{kind}"]
            if i in dual_layers:
                out[s + f"x_block.attn2.qkv.{kind}"] = torch.cat([sd[d + f"attn2.to_{c}.{kind}"] for c in "qkv"])
                out[s + f"x_block.attn2.proj.{kind}"] = sd[d + f"attn2.to_out.0.{kind}"]
        if d + "attn.norm_q.weight" in sd:
            out[s + "x_block.attn.ln_q.weight"] = sd[d + "attn.norm_q.weight"]
            out[s + "x_block.attn.ln_k.weight"] = sd[d + "attn.norm_k.weight"]
            out[s + "context_block.attn.ln_q.weight"] = sd[d + "attn.norm_added_q.weight"]
            out[s + "context_block.attn.ln_k.weight"] = sd[d + "attn.norm_added_k.weight"]
            if i in dual_layers:
                out[s + "x_block.attn2.ln_q.weight"] = sd[d + "attn2.norm_q.weight"]
                out[s + "x_block.attn2.ln_k.weight"] = sd[d + "attn2.norm_k.weight"]
    return out


def randomise(model, gen):
    """Random weights of a realistic scale (default init leaves adaLN and outputs at zero)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name and "linear" not in name):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))   # RMSNorm weights near 1
            else:
                fan_in = p.shape[1] if p.dim() >= 2 else 1
                scale = 1.0 / max(fan_in, 1) ** 0.5 if p.dim() >= 2 else 0.1
                if p.dim() == 4:
                    scale = 1.0 / (p.shape[1] * p.shape[2] * p.shape[3]) ** 0.5
                p.copy_(scale * torch.randn(p.shape, generator=gen))


def run_case(name, spec, out_root):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    cfg = spec["cfg"]
    model = SD3Transformer2DModel(**cfg).eval()
    randomise(model, gen)
    d = os.path.join(out_root, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    B, (H, W), T = spec["batch"], spec["hw"], spec["tctx"]
    x = torch.randn(B, cfg["in_channels"], H, W, generator=gen)
    ctx = torch.randn(B, T, cfg["joint_attention_dim"], generator=gen)
    pooled = torch.randn(B, cfg["pooled_projection_dim"], generator=gen)
    t = torch.tensor([500.0, 999.0, 3.5][:B]) if B > 1 else torch.tensor([421.5])

    cap = {}

    def keep(key, take):
        def hook(module, inputs, output):   # returns None: hooks that return a value replace the output
            value = take(inputs, output)
            if value is not None:
                cap[key] = value
        return hook

    hooks = [
        model.pos_embed.register_forward_hook(keep("x_embedded", lambda i, o: o)),
        model.time_text_embed.register_forward_hook(keep("temb", lambda i, o: o)),
        model.context_embedder.register_forward_hook(keep("context_embedded", lambda i, o: o)),
        model.transformer_blocks[0].register_forward_hook(keep("block0_context", lambda i, o: o[0])),
        model.transformer_blocks[0].register_forward_hook(keep("block0_hidden", lambda i, o: o[1])),
        model.norm_out.register_forward_hook(keep("final_hidden", lambda i, o: i[0])),
    ]
    with torch.no_grad():
        out = model(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=pooled, timestep=t).sample
    for h in hooks:
        h.remove()
    tensors = dict(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=pooled, timestep=t, output=out)
    tensors.update({k: v for k, v in cap.items() if v is not None})

    if spec.get("shard"):
        model.save_pretrained(os.path.join(d, "transformer"), safe_serialization=True, max_shard_size="300KB")
    else:
        model.save_pretrained(os.path.join(d, "transformer"), safe_serialization=True)
    if spec.get("single"):
        sd = {k: v.clone() for k, v in model.state_dict().items()}
        single = to_single_file(sd, cfg["num_layers"], cfg["dual_attention_layers"])
        # verify against diffusers' own converter: it must give back every tensor exactly
        back = convert_sd3_transformer_checkpoint_to_diffusers({k: v.clone() for k, v in single.items()})
        assert set(back) == set(sd), sorted(set(back) ^ set(sd))
        for k in sd:
            assert torch.equal(back[k], sd[k]), k
        save_file({k: v.contiguous() for k, v in single.items()}, os.path.join(d, "single_file.safetensors"))
    if spec.get("bf16"):
        m16 = SD3Transformer2DModel(**cfg).eval()
        m16.load_state_dict(model.state_dict())
        m16 = m16.to(torch.bfloat16)
        m16.save_pretrained(os.path.join(d, "transformer_bf16"), safe_serialization=True)
        m32 = m16.to(torch.float32)   # the bf16-rounded weights, evaluated in fp32
        with torch.no_grad():
            tensors["output_bf16weights"] = m32(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=pooled,
                                                timestep=t).sample
    save_file({k: v.contiguous().float() for k, v in tensors.items()}, os.path.join(d, "io.safetensors"),
              metadata={"case": name, "diffusers_version": diffusers.__version__, "torch_version": torch.__version__})
    n_shards = len([f for f in os.listdir(os.path.join(d, "transformer")) if f.endswith(".safetensors")])
    print(f"{name}: B={B} latent {H}x{W} ctx {T}: output norm {out.norm():.6f}, {n_shards} shard(s)")
    return f"- `{name}`: {json.dumps(cfg)}; batch {B}, latent {H}x{W}, context {T} tokens"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "mmdit"))
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    lines = [run_case(n, s, args.out) for n, s in CASES.items()]
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write("# MMDiT golden fixtures\n\nMade by `tools/make_mmdit_fixtures.py` with diffusers "
                f"{diffusers.__version__}, torch {torch.__version__} (CPU, float32). Cases:\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
