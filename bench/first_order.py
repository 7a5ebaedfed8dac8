#!/usr/bin/env python3
"""First-order baselines for sd-qzo, on the same data and validation protocol as `sd-qzo train`.

Methods (--method):
  scales-adamw  backprop through the int4 scales: the model is `sd-qzo quantize`'s file (X.weight.q4
                packed int4 codes + X.weight.scales fp32 per group of G input features, the rest
                unquantised); every quantised Linear computes with W = scales (x) codes, exactly
                sd-qzo's dequantisation, and the scales are the ONLY trainable parameters (AdamW,
                weight decay 0 by default), clamped >= 0 after each step as QZO does.
  lora          LoRA (rank --rank, alpha --alpha) on the ORIGINAL (bf16/fp16) weights of the same
                Linear layers (the ones sd-qzo quantises), base frozen; peft if importable
                (--lora-impl auto|peft|manual), else a small LoRA wrapper written here.
Both compute in bf16 autocast on CUDA (fp32 master copies; the loss in fp32) and fp32 on CPU.

Data (written by sd-qzo; the protocol is identical by construction):
  --val   val.safetensors:   x0 [N,16,h,w], context [N,T,D], pooled [N,P], noise [N,16,h,w], sigma [N]
                             (N = val images x 4 fixed sigmas, already expanded)
  --train train.safetensors: x0 [M,16,h,w], context [M,T,D], pooled [M,P]
Loss: x_t = (1-s) x0 + s n; v = model(x_t, timestep=1000 s, context, pooled); L = mean (v - (n - x0))^2.
Validation loss = mean over the N items. Training draws s = logit-normal(0,1) shifted by the
scheduler's shift (s' = k s / (1 + (k-1) s), --shift or the model's scheduler config) and fresh noise
per step, a batch of --batch-size items uniformly with replacement.

Output (--out, JSON lines): a "zero" record (val loss of the original model and of the int4 model),
then {"step", "train_s" (training wall-clock, evaluations excluded), "wall_s", "val_loss",
"train_loss" (mean since the last record), "lr"} every --val-every steps and at the end, and a
"done" record (peak memory on CUDA).
--eval-scales CKPT [CKPT ...]: only the val loss of sd-qzo scales checkpoints (keys X.weight.scales,
as app/checkpoint.c writes them) on the int4 model, one record each; no training.
--save-scales FILE (scales-adamw): the trained scales as an sd-qzo checkpoint (scales-v1, keyed to
the int4 file's source hash), so `sd-qzo sample --scales FILE` can use them.

Run:  python bench/first_order.py --int4 MODEL-int4.safetensors --model MODEL_DIR --val val.safetensors \
          --train train.safetensors --method scales-adamw --lr 1e-5 --steps 2000 --batch-size 8 \
          --val-every 100 --device cuda --out fo-scales.jsonl
Needs torch, diffusers, safetensors (peft optional).
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

Q4_SUFFIX, SCALES_SUFFIX = ".q4", ".scales"


# ---------------------------------------------------------------- int4 model

def unpack_q4(packed, k):
    """U8 [out, k/2] -> int8 codes [out, k]: element 2j in the low nibble, 2j+1 in the high one,
    4-bit two's complement (kernels/cpu/quant.c's code_at)."""
    p = packed.to(torch.int16)
    lo, hi = p & 0xF, (p >> 4) & 0xF
    codes = torch.stack([lo, hi], dim=-1).reshape(packed.shape[0], k)
    codes = torch.where(codes >= 8, codes - 16, codes)
    return codes.to(torch.int8)


class QLinear(nn.Module):
    """y = x W^T + b with W = scales (x) codes, the scales (one per group of `group` input features)
    the only trainable parameter."""

    def __init__(self, codes, scales, bias, group):
        super().__init__()
        self.out_features, self.in_features = codes.shape
        self.group = group
        self.register_buffer("codes", codes.to(torch.int8), persistent=False)
        self.scales = nn.Parameter(scales.float().clone())
        if bias is not None:
            self.register_buffer("bias", bias.float().clone(), persistent=False)
        else:
            self.bias = None

    def weight_f32(self):
        o, k, g = self.out_features, self.in_features, self.group
        return (self.codes.view(o, k // g, g).float() * self.scales.unsqueeze(-1)).view(o, k)

    @property
    def weight(self):   # diffusers reads .weight.dtype in places
        return self.weight_f32()

    def forward(self, x):
        return F.linear(x, self.weight_f32(), self.bias)


def set_module(root, name, module):
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def read_int4(path):
    from safetensors import safe_open
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("sd_qzo.format") != "q4-v1":
        sys.exit(f"{path}: not an `sd-qzo quantize` file (sd_qzo.format {meta.get('sd_qzo.format')!r})")
    if meta.get("sd_qzo.layout") != "diffusers":
        sys.exit(f"{path}: layout {meta.get('sd_qzo.layout')!r}; only the diffusers layout is supported here")
    return meta, tensors


def build_int4_model(path, dev):
    """SD3Transformer2DModel (fp32) from the int4 file, quantised Linears replaced by QLinear."""
    from diffusers import SD3Transformer2DModel
    meta, t = read_int4(path)
    group = int(meta["sd_qzo.group_size"])
    cfg = json.loads(meta["sd_qzo.config"])
    model = SD3Transformer2DModel.from_config(cfg)
    qnames = sorted(k[:-len(".weight" + Q4_SUFFIX)] for k in t if k.endswith(".weight" + Q4_SUFFIX))
    for name in qnames:
        lin = model.get_submodule(name)
        assert isinstance(lin, nn.Linear), name
        codes = unpack_q4(t[name + ".weight" + Q4_SUFFIX], lin.in_features)
        scales = t[name + ".weight" + SCALES_SUFFIX]
        assert codes.shape == lin.weight.shape and scales.shape == (lin.out_features, lin.in_features // group), name
        set_module(model, name, QLinear(codes, scales, t.get(name + ".bias"), group))
    rest = {k: v.float() for k, v in t.items() if not (k.endswith(Q4_SUFFIX) or k.endswith(SCALES_SUFFIX))
            and k[:-len(".bias")] not in qnames}
    missing, unexpected = model.load_state_dict(rest, strict=False)
    missing = [m for m in missing if not m.endswith(".scales")]
    if missing or unexpected:
        sys.exit(f"{path}: tensors missing {missing[:5]} / unexpected {unexpected[:5]}")
    model.requires_grad_(False)
    for name in qnames:
        model.get_submodule(name).scales.requires_grad_(True)
    return model.to(dev), qnames, meta


def load_original(model_dir, dev):
    from diffusers import SD3Transformer2DModel
    sub = os.path.join(model_dir, "transformer")
    m = SD3Transformer2DModel.from_pretrained(sub if os.path.isdir(sub) else model_dir, torch_dtype=torch.float32)
    return m.requires_grad_(False).to(dev)


def scheduler_shift(model_dir):
    if model_dir:
        p = os.path.join(model_dir, "scheduler", "scheduler_config.json")
        if os.path.exists(p):
            return float(json.load(open(p)).get("shift", 1.0))
    return None


# ---------------------------------------------------------------- LoRA

class LoRALinear(nn.Module):
    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base = base
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))   # as peft's default
        self.scale = alpha / rank

    @property
    def weight(self):
        return self.base.weight

    def forward(self, x):
        return self.base(x) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale


def add_lora(model, names, rank, alpha, impl):
    if impl in ("auto", "peft"):
        try:
            from peft import LoraConfig
        except ImportError:
            if impl == "peft":
                raise
        else:
            model.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=True, target_modules=names))
            return "peft"
    for n in names:
        set_module(model, n, LoRALinear(model.get_submodule(n), rank, alpha))
    return "manual"


# ---------------------------------------------------------------- data and loss

def load_st(path, keys, dev):
    from safetensors.torch import load_file
    t = load_file(path)
    miss = [k for k in keys if k not in t]
    if miss:
        sys.exit(f"{path}: lacks {miss} (has {sorted(t)})")
    return {k: t[k].float().to(dev) for k in keys}


def amp_ctx(dev):
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")


def flow_loss_items(model, x0, ctx, pooled, noise, sigma, dev):
    """Per-item flow-matching MSE (fp32)."""
    s = sigma.view(-1, 1, 1, 1)
    xt = (1 - s) * x0 + s * noise
    with amp_ctx(dev):
        v = model(hidden_states=xt, timestep=sigma * 1000, encoder_hidden_states=ctx, pooled_projections=pooled,
                  return_dict=False)[0]
    return ((v.float() - (noise - x0)) ** 2).mean(dim=(1, 2, 3))


@torch.no_grad()
def val_loss(model, val, dev, bs):
    was = model.training
    model.eval()
    tot = 0.0
    n = val["x0"].shape[0]
    for i in range(0, n, bs):
        sl = slice(i, i + bs)
        tot += flow_loss_items(model, val["x0"][sl], val["context"][sl], val["pooled"][sl], val["noise"][sl],
                               val["sigma"][sl], dev).double().sum().item()
    model.train(was)
    return tot / n


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# ---------------------------------------------------------------- sd-qzo checkpoints

def load_scales_ckpt(model, qnames, path, meta):
    from safetensors import safe_open
    with safe_open(path, framework="pt") as f:
        cm = f.metadata() or {}
        keys = set(f.keys())
        want = {n + ".weight" + SCALES_SUFFIX for n in qnames}
        if keys != want:
            sys.exit(f"{path}: keys differ from the int4 model's scales (missing {sorted(want - keys)[:3]}, "
                     f"extra {sorted(keys - want)[:3]})")
        if cm.get("sd_qzo.base_sha256") not in (None, meta.get("sd_qzo.source_sha256")):
            print(f"warning: {path} was trained on another base (hash {cm.get('sd_qzo.base_sha256', '')[:12]}...)",
                  file=sys.stderr)
        with torch.no_grad():
            for n in qnames:
                q = model.get_submodule(n)
                q.scales.copy_(f.get_tensor(n + ".weight" + SCALES_SUFFIX).float())
    return cm


def save_scales_ckpt(model, qnames, path, meta, a, step):
    from safetensors.torch import save_file
    t = {n + ".weight" + SCALES_SUFFIX: model.get_submodule(n).scales.detach().float().cpu().contiguous()
         for n in qnames}
    state = {"lr": f"{a.lr:.9g}", "eps": "0", "clip": "0", "adaptive_clip": "0", "queries": "1",
             "seed": str(a.seed), "schedule": "0", "warmup_steps": "0", "total_steps": str(a.steps),
             "step": str(step), "history_count": "0", "history_pos": "0", "abs_d_history": []}
    save_file(t, path, metadata={"sd_qzo.format": "scales-v1", "sd_qzo.base_sha256": meta["sd_qzo.source_sha256"],
                                 "sd_qzo.group_size": meta["sd_qzo.group_size"], "sd_qzo.step": str(step),
                                 "sd_qzo.optimizer": json.dumps(state, separators=(",", ":")),
                                 "sd_qzo.loss_history": "[]", "sd_qzo.trained_by": "bench/first_order.py"})


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--int4", required=True, help="`sd-qzo quantize` output (.safetensors)")
    ap.add_argument("--model", default=None, help="the original pipeline or transformer folder "
                    "(zero point, LoRA base, scheduler shift); default: the int4 file's sd_qzo.source if it exists")
    ap.add_argument("--val", required=True, help="val.safetensors written by sd-qzo")
    ap.add_argument("--train", default=None, help="train.safetensors written by sd-qzo")
    ap.add_argument("--method", choices=["scales-adamw", "lora"], default="scales-adamw")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--val-every", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=0, help="linear warm-up steps, then constant lr")
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--betas", type=float, nargs=2, default=[0.9, 0.999])
    ap.add_argument("--grad-clip", type=float, default=0.0, help="max grad norm (0: none)")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=16)
    ap.add_argument("--lora-impl", choices=["auto", "peft", "manual"], default="auto")
    ap.add_argument("--shift", type=float, default=None, help="timestep shift (default: the scheduler config's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-batch", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="first_order.jsonl")
    ap.add_argument("--eval-scales", nargs="+", default=None, metavar="CKPT")
    ap.add_argument("--save-scales", default=None, help="(scales-adamw) write the trained scales here")
    ap.add_argument("--skip-zero", action="store_true", help="skip the original/int4 zero-point evaluations")
    a = ap.parse_args()

    dev = torch.device(a.device)
    torch.manual_seed(a.seed)
    if dev.type == "cuda":   # fp32 parts as sd-qzo's fp32 (no TF32); GEMMs are bf16 under autocast anyway
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    out = open(a.out, "a" if a.eval_scales else "w")

    def record(obj):
        line = json.dumps(obj)
        print(line, flush=True)
        out.write(line + "\n")
        out.flush()

    meta = read_int4(a.int4)[0]
    if a.model is None and os.path.isdir(meta.get("sd_qzo.source", "")):
        a.model = meta["sd_qzo.source"]
    shift = a.shift if a.shift is not None else (scheduler_shift(a.model) or 1.0)

    val = load_st(a.val, ["x0", "context", "pooled", "noise", "sigma"], dev)
    n_val = val["x0"].shape[0]
    t0 = time.time()
    qmodel, qnames, meta = build_int4_model(a.int4, dev)
    n_scales = sum(qmodel.get_submodule(n).scales.numel() for n in qnames)
    info = dict(int4=a.int4, model=a.model, val=a.val, n_val=n_val, latent=list(val["x0"].shape[1:]),
                context=list(val["context"].shape[1:]), group=int(meta["sd_qzo.group_size"]),
                quantised_layers=len(qnames), scales=n_scales, shift=shift, device=str(dev),
                gpu=torch.cuda.get_device_name(dev) if dev.type == "cuda" else None)

    if a.eval_scales:
        for ck in a.eval_scales:
            cm = load_scales_ckpt(qmodel, qnames, ck, meta)
            record(dict(kind="eval-scales", ckpt=ck, step=cm.get("sd_qzo.step"),
                        val_loss=val_loss(qmodel, val, dev, a.eval_batch), **info))
        return

    if not a.train:
        sys.exit("--train is needed to train (or give --eval-scales)")
    train = load_st(a.train, ["x0", "context", "pooled"], dev)
    n_train = train["x0"].shape[0]
    zero = dict(kind="zero", **info, n_train=n_train)
    if not a.skip_zero:
        zero["int4_val_loss"] = val_loss(qmodel, val, dev, a.eval_batch)
        if a.model:
            orig = load_original(a.model, dev)
            zero["orig_val_loss"] = val_loss(orig, val, dev, a.eval_batch)
            del orig
    record(zero)

    if a.method == "scales-adamw":
        model = qmodel
        params = [model.get_submodule(n).scales for n in qnames]
        sc = torch.cat([p.detach().flatten() for p in params])
        impl = f"{len(params)} scale tensors, {sc.numel()} scales, |scale| mean {sc.abs().mean().item():.3e} " \
               f"median {sc.abs().median().item():.3e}"
    else:
        if not a.model:
            sys.exit("--method lora needs --model (the original weights)")
        del qmodel
        model = load_original(a.model, dev)
        impl = add_lora(model, qnames, a.rank, a.alpha, a.lora_impl) + f" LoRA rank {a.rank} alpha {a.alpha} on " \
                                                                     f"{len(qnames)} Linear layers"
        params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    n_params = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=a.lr, betas=tuple(a.betas), weight_decay=a.weight_decay)
    record(dict(kind="config", method=a.method, impl=impl, trainable=n_params, lr=a.lr, steps=a.steps,
                batch_size=a.batch_size, warmup=a.warmup, weight_decay=a.weight_decay, grad_clip=a.grad_clip,
                seed=a.seed, setup_s=round(time.time() - t0, 2)))

    g = torch.Generator(dev).manual_seed(a.seed)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    v0 = val_loss(model, val, dev, a.eval_batch)
    record(dict(step=0, train_s=0.0, wall_s=0.0, val_loss=v0, train_loss=None, lr=0.0))
    sync(dev)
    t_start, t_eval, run = time.time(), 0.0, []
    for step in range(1, a.steps + 1):
        lr = a.lr * min(1.0, step / a.warmup) if a.warmup else a.lr
        for grp in opt.param_groups:
            grp["lr"] = lr
        idx = torch.randint(n_train, (a.batch_size,), generator=g, device=dev)
        u = torch.sigmoid(torch.randn(a.batch_size, generator=g, device=dev))
        sigma = shift * u / (1 + (shift - 1) * u)
        x0 = train["x0"][idx]
        noise = torch.randn(x0.shape, generator=g, device=dev)
        loss = flow_loss_items(model, x0, train["context"][idx], train["pooled"][idx], noise, sigma, dev).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if a.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, a.grad_clip)
        opt.step()
        if a.method == "scales-adamw":
            with torch.no_grad():
                for p in params:
                    p.clamp_(min=0)
        run.append(loss.detach())
        if step % a.val_every == 0 or step == a.steps:
            sync(dev)
            te = time.time()
            vl = val_loss(model, val, dev, a.eval_batch)
            tl = torch.stack(run).mean().item()
            run = []
            sync(dev)
            t_eval += time.time() - te
            now = time.time() - t_start
            record(dict(step=step, train_s=round(now - t_eval, 3), wall_s=round(now, 3), val_loss=vl,
                        train_loss=tl, lr=lr))
            if not math.isfinite(vl):
                break
    done = dict(kind="done", steps=step, train_s=round(time.time() - t_start - t_eval, 3))
    if dev.type == "cuda":
        done["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2 ** 30, 3)
    if a.save_scales and a.method == "scales-adamw":
        save_scales_ckpt(model, qnames, a.save_scales, meta, a, step)
        done["saved"] = a.save_scales
    record(done)


if __name__ == "__main__":
    main()
