# PyTorch reference side of sd-qzo's benchmark: builds diffusers' SD3Transformer2DModel
# (SD3.5 large/medium config, random bf16 weights) on CUDA and times (1) a plain bf16 forward
# and (2) one QZO step (int4 codes + fp32 group scales, two perturbed forwards, SPSA update).
# Reports median/min/max ms and peak CUDA memory per phase; optionally writes a JSON file.
import argparse
import json
import statistics
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {
    "large": dict(sample_size=128, patch_size=2, in_channels=16, num_layers=38,
                  attention_head_dim=64, num_attention_heads=38, joint_attention_dim=4096,
                  caption_projection_dim=2432, pooled_projection_dim=2048, out_channels=16,
                  pos_embed_max_size=192, qk_norm="rms_norm"),
    "medium": dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24,
                   attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
                   caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16,
                   pos_embed_max_size=384, qk_norm="rms_norm",
                   dual_attention_layers=tuple(range(13))),
}

GIB = 1024 ** 3


class QZOState:
    """Shared per-step state read by every QuantLinear."""

    def __init__(self, seed, eps):
        self.seed = seed
        self.eps = eps
        self.step = 0
        self.sign = 0.0  # 0 => unperturbed


class QuantLinear(nn.Module):
    """int4 linear: int8 codes in [-7,7] (out,in) and fp32 per-group scales (out,in/G)."""

    def __init__(self, lin: nn.Linear, group_size: int, state: QZOState, index: int):
        super().__init__()
        out_f, in_f = lin.weight.shape
        assert in_f % group_size == 0
        self.in_features, self.out_features = in_f, out_f
        self.group_size = group_size
        self.state = state
        self.index = index
        with torch.no_grad():
            w = lin.weight.detach().float().view(out_f, in_f // group_size, group_size)
            scales = (w.abs().amax(dim=-1) / 7.0).clamp_(min=1e-8)
            codes = torch.round(w / scales.unsqueeze(-1)).clamp_(-7, 7).to(torch.int8)
            del w
        self.register_buffer("codes", codes.view(out_f, in_f).contiguous())
        self.register_buffer("scales", scales.contiguous())
        if lin.bias is not None:
            self.register_buffer("bias", lin.bias.detach().to(torch.bfloat16).clone())
        else:
            self.bias = None
        self.gen = torch.Generator(device=self.codes.device)

    def z(self):
        # Deterministic per (seed, step, layer): regenerated, never stored across passes.
        s = self.state
        self.gen.manual_seed((s.seed * 1_000_003 + s.step * 100_003 + self.index) & 0x7FFFFFFFFFFFFFFF)
        return torch.randn(self.scales.shape, generator=self.gen, device=self.scales.device,
                           dtype=torch.float32)

    def forward(self, x):
        s = self.scales
        st = self.state
        if st.sign != 0.0:
            s = s + (st.sign * st.eps) * self.z()
        og = self.in_features // self.group_size
        # Broadcasting over the group axis == repeat_interleave(scales, G, dim=1) * codes.
        w = (s.unsqueeze(-1) * self.codes.view(self.out_features, og, self.group_size))
        w = w.view(self.out_features, self.in_features).to(torch.bfloat16)
        return F.linear(x, w, self.bias)


def quantize_blocks(model, group_size, state):
    layers = []
    skipped = 0
    for block in model.transformer_blocks:
        for name, mod in list(block.named_modules()):
            for cname, child in list(mod.named_children()):
                if isinstance(child, nn.Linear):
                    if child.in_features % group_size != 0:
                        skipped += 1
                        continue
                    q = QuantLinear(child, group_size, state, len(layers))
                    setattr(mod, cname, q)
                    layers.append(q)
                    del child
    torch.cuda.empty_cache()
    return layers, skipped


def time_it(fn, warmup, steps):
    for i in range(warmup):
        fn(i)
    torch.cuda.synchronize()
    times = []
    for i in range(steps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn(warmup + i)
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return dict(median=statistics.median(times), min=min(times), max=max(times))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="large")
    ap.add_argument("--resolution", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--eps", type=float, default=1e-3)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--clip", type=float, default=100.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import diffusers
    from diffusers import SD3Transformer2DModel

    assert torch.cuda.is_available(), "CUDA required"
    dev = torch.device("cuda")
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True

    cfg = CONFIGS[args.config]
    with torch.device("cuda"):
        model = SD3Transformer2DModel(**cfg)
    model = model.to(torch.bfloat16).eval().requires_grad_(False)
    torch.cuda.empty_cache()
    nparams = sum(p.numel() for p in model.parameters())
    print(f"model: SD3.5 {args.config}, {nparams / 1e9:.3f} B params, bf16, {torch.cuda.get_device_name()}",
          flush=True)

    R = args.resolution
    assert R % 16 == 0
    g = torch.Generator(device=dev).manual_seed(args.seed + 1)
    latent = torch.randn(1, 16, R // 8, R // 8, generator=g, device=dev).to(torch.bfloat16)
    enc = torch.randn(1, 333, 4096, generator=g, device=dev).to(torch.bfloat16)
    pooled = torch.randn(1, 2048, generator=g, device=dev).to(torch.bfloat16)
    timestep = torch.tensor([500.0], device=dev)
    target = torch.randn(1, 16, R // 8, R // 8, generator=g, device=dev, dtype=torch.float32)

    def fwd():
        out = model(hidden_states=latent, encoder_hidden_states=enc, pooled_projections=pooled,
                    timestep=timestep, return_dict=False)
        return out[0]

    # ---- phase 1: bf16 forward ----
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        fwd_ms = time_it(lambda i: fwd(), args.warmup, args.steps)
    peak_fwd = torch.cuda.max_memory_allocated() / GIB
    print(f"forward bf16: median {fwd_ms['median']:.2f} ms (min {fwd_ms['min']:.2f}, "
          f"max {fwd_ms['max']:.2f}); peak {peak_fwd:.2f} GiB", flush=True)

    # ---- phase 2: QZO step ----
    state = QZOState(args.seed, args.eps)
    with torch.no_grad():
        layers, skipped = quantize_blocks(model, args.group_size, state)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    print(f"quantised {len(layers)} linears in transformer_blocks (G={args.group_size}), "
          f"skipped {skipped}; allocated now {torch.cuda.memory_allocated() / GIB:.2f} GiB", flush=True)

    last = {}

    def qzo_step(step):
        state.step = step
        state.sign = 1.0
        lp = F.mse_loss(fwd().float(), target)
        state.sign = -1.0
        lm = F.mse_loss(fwd().float(), target)
        state.sign = 0.0
        d = ((lp - lm) / (2.0 * args.eps)).clamp(-args.clip, args.clip)
        scale = args.lr * d
        for q in layers:
            q.scales.sub_(scale * q.z()).clamp_(min=0)
        last["lp"], last["lm"], last["d"] = lp, lm, d

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        qzo_ms = time_it(qzo_step, args.warmup, args.steps)
    peak_qzo = torch.cuda.max_memory_allocated() / GIB
    print(f"qzo step: median {qzo_ms['median']:.2f} ms (min {qzo_ms['min']:.2f}, "
          f"max {qzo_ms['max']:.2f}); peak {peak_qzo:.2f} GiB; last L+={last['lp'].item():.6f} "
          f"L-={last['lm'].item():.6f} d={last['d'].item():.4f}", flush=True)

    result = dict(
        config=args.config,
        resolution=R,
        forward_ms=fwd_ms,
        qzo_step_ms=qzo_ms,
        peak_gib=dict(forward=peak_fwd, qzo=peak_qzo),
        torch=torch.__version__,
        diffusers=diffusers.__version__,
        device=torch.cuda.get_device_name(),
        group_size=args.group_size,
        steps=args.steps,
        warmup=args.warmup,
        quantised_linears=len(layers),
    )
    print(f"SUMMARY pytorch {args.config} {R}px: forward {fwd_ms['median']:.2f} ms, "
          f"qzo_step {qzo_ms['median']:.2f} ms, peak fwd {peak_fwd:.2f} GiB, "
          f"peak qzo {peak_qzo:.2f} GiB ({result['device']}, torch {torch.__version__}, "
          f"diffusers {diffusers.__version__})", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
