# PyTorch reference side of sd-qzo's benchmark: builds diffusers' SD3Transformer2DModel
# (SD3.5 large/medium config, random bf16 weights) on CUDA and times (1) a plain bf16 forward
# and (2) one QZO step (int4 codes + fp32 group scales, two perturbed forwards, SPSA update),
# eagerly and/or torch.compile'd (--compile). Reports median/min/max ms, images/s and peak
# CUDA memory per phase and mode; optionally writes a JSON file.
#
#   --what forward|qzo|both   which phases to time (default both)
#   --batch N                 images per forward (both forwards of a QZO step use the same batch)
#   --compile                 time the torch.compile'd model only; --compile both: eager first,
#                             then compiled, in one process (one model build). Default mode,
#                             dynamic=False; the compile time is reported apart (compile_s) and
#                             the timed runs come after a warm-up that includes the first
#                             compiled calls of the QZO step's + and - forwards.
#   --config tiny             2 layers, hidden 64: a smoke test on the CPU (--device cpu), not a
#                             benchmark; --compile-backend eager checks the compiled path's
#                             tracing without a C++ compiler.
import argparse
import json
import os
import statistics
import sys
import time

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
    # smoke test only: Medium's block types (dual attention in layer 0, context_pre_only last)
    "tiny": dict(sample_size=16, patch_size=2, in_channels=16, num_layers=2,
                 attention_head_dim=16, num_attention_heads=4, joint_attention_dim=128,
                 caption_projection_dim=64, pooled_projection_dim=64, out_channels=16,
                 pos_embed_max_size=32, qk_norm="rms_norm", dual_attention_layers=(0,)),
}

GIB = 1024 ** 3
KEY = {"forward": "forward_ms", "qzo": "qzo_step_ms"}   # the JSON's names of the two phases' times


class QZOState:
    """Shared per-step state read by every QuantLinear.

    coef is a 0-d fp32 tensor on the device holding sign * eps (0: unperturbed), changed in
    place between passes. A tensor, not a Python float: a compiled forward reads it as a graph
    input instead of baking its value in and guarding on it (a float attribute would compile
    one graph per sign, and a Python step counter one graph per step)."""

    def __init__(self, seed, eps, device):
        self.seed = seed
        self.eps = eps
        self.coef = torch.zeros((), dtype=torch.float32, device=device)


class QuantLinear(nn.Module):
    """int4 linear: int8 codes in [-7,7] (out,in) and fp32 per-group scales (out,in/G).

    z (the perturbation direction, fp32 like the scales) is a buffer that regenerate_z fills
    before each pass, outside the forward; the forward perturbs the scales by coef * z and
    dequantises, so under torch.compile the perturbation and the dequantisation are compiled
    (fused) with the rest of the forward."""

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
        self.register_buffer("z", torch.zeros_like(self.scales), persistent=False)
        if lin.bias is not None:
            self.register_buffer("bias", lin.bias.detach().to(torch.bfloat16).clone())
        else:
            self.bias = None

    def forward(self, x):
        # scales + (sign * eps) * z; coef is 0 outside the perturbed passes
        s = torch.addcmul(self.scales, self.z, self.state.coef)
        og = self.in_features // self.group_size
        # Broadcasting over the group axis == repeat_interleave(scales, G, dim=1) * codes.
        w = (s.unsqueeze(-1) * self.codes.view(self.out_features, og, self.group_size))
        w = w.view(self.out_features, self.in_features).to(torch.bfloat16)
        return F.linear(x, w, self.bias)


def regenerate_z(layers, state, step, gen):
    """z of every layer for this step, deterministic per (seed, step, layer): torch.randn
    (Philox) from a generator seeded per layer.

    This runs outside the model's forward, eager in both modes, so the compiled forward sees
    no generator and no Python step number: manual_seed(int) and randn(generator=...) inside
    a compiled region break the graph, and a step-dependent int would recompile every step.
    The work is the eager step's: one randn kernel per layer per pass, z regenerated before
    the + pass, the - pass and the update (never carried over from one to the next) as the
    earlier version of this script did inside each layer's forward; z now sits in a
    per-layer buffer (fp32, the size of the scales: 0.47 GiB for Large) because a compiled
    forward needs all of them at once."""
    for q in layers:
        gen.manual_seed((state.seed * 1_000_003 + step * 100_003 + q.index) & 0x7FFFFFFFFFFFFFFF)
        torch.randn(q.z.shape, generator=gen, device=q.z.device, dtype=torch.float32, out=q.z)


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
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return layers, skipped


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_it(fn, warmup, steps, dev, after_warmup=None):
    """Runs fn warmup times (the wall seconds of each are returned), calls after_warmup,
    then times steps runs (CUDA events on a GPU, the host clock on the CPU)."""
    warm_s = []
    for i in range(warmup):
        t0 = time.perf_counter()
        fn(i)
        sync(dev)
        warm_s.append(time.perf_counter() - t0)
    sync(dev)
    if after_warmup:
        after_warmup()
    times = []
    for i in range(steps):
        if dev.type == "cuda":
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            fn(warmup + i)
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn(warmup + i)
            times.append((time.perf_counter() - t0) * 1e3)
    return dict(median=statistics.median(times), min=min(times), max=max(times)), warm_s


def dynamo_counts():
    """(graphs compiled so far, graph breaks so far) from Dynamo's counters."""
    from torch._dynamo.utils import counters
    return counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="large")
    ap.add_argument("--resolution", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=1, help="images per forward")
    ap.add_argument("--text-tokens", type=int, default=333)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--what", choices=["forward", "qzo", "both"], default="both")
    ap.add_argument("--compile", nargs="?", const="only", default="off", choices=["off", "only", "both"],
                    help="time the torch.compile'd model (only), or eager then compiled (both)")
    ap.add_argument("--compile-mode", default="default",
                    help="torch.compile mode: default, reduce-overhead, max-autotune, ...")
    ap.add_argument("--compile-backend", default="inductor",
                    help="torch.compile backend (eager/aot_eager: a smoke test of the tracing only)")
    ap.add_argument("--compile-scope", choices=["model", "blocks"], default="model",
                    help="model: the whole transformer forward as one compiled region; blocks: each "
                         "transformer block compiled on its own (regional compilation, shorter compile)")
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--eps", type=float, default=1e-3)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--clip", type=float, default=100.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import diffusers
    from diffusers import SD3Transformer2DModel

    dev = torch.device(args.device)
    if dev.type == "cuda":
        assert torch.cuda.is_available(), "CUDA required"
    elif args.config != "tiny":
        print(f"warning: SD3.5 {args.config} on {dev}: this will be slow", flush=True)
    modes = {"off": ["eager"], "only": ["compiled"], "both": ["eager", "compiled"]}[args.compile]
    if "compiled" in modes and args.warmup < 1:
        ap.error("--compile needs --warmup >= 1 (the first compiled calls must not be timed)")
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    dev_name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"

    cfg = CONFIGS[args.config]
    with dev:
        model = SD3Transformer2DModel(**cfg)
    model = model.to(torch.bfloat16).eval().requires_grad_(False)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    nparams = sum(p.numel() for p in model.parameters())
    print(f"model: SD3.5 {args.config}, {nparams / 1e9:.3f} B params, bf16, {dev_name}, torch {torch.__version__}, "
          f"modes {'+'.join(modes)}", flush=True)

    B, R = args.batch, args.resolution
    assert R % 16 == 0 and B >= 1
    g = torch.Generator(device=dev).manual_seed(args.seed + 1)
    latent = torch.randn(B, 16, R // 8, R // 8, generator=g, device=dev).to(torch.bfloat16)
    enc = torch.randn(B, args.text_tokens, cfg["joint_attention_dim"], generator=g, device=dev).to(torch.bfloat16)
    pooled = torch.randn(B, cfg["pooled_projection_dim"], generator=g, device=dev).to(torch.bfloat16)
    timestep = torch.full((B,), 500.0, device=dev)
    target = torch.randn(B, 16, R // 8, R // 8, generator=g, device=dev, dtype=torch.float32)

    def make_fwd(m):
        def fwd():
            out = m(hidden_states=latent, encoder_hidden_states=enc, pooled_projections=pooled,
                    timestep=timestep, return_dict=False)
            return out[0]
        return fwd

    def compiled(m):
        """The compiled callable of m, with fresh Dynamo caches (lazy: the compilation itself
        happens at the first call, inside the warm-up)."""
        torch._dynamo.reset()
        kw = dict(dynamic=False, backend=args.compile_backend)
        if args.compile_mode != "default":
            kw["mode"] = args.compile_mode
        if args.compile_scope == "model":
            return torch.compile(m, **kw)
        for blk in m.transformer_blocks:
            blk.compile(**kw)   # in place: m's own forward now runs the compiled blocks
        return m

    def uncompile(m):
        if args.compile_scope == "blocks":
            for blk in m.transformer_blocks:
                blk._compiled_call_impl = None

    def peak_reset():
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak():
        return torch.cuda.max_memory_allocated() / GIB if dev.type == "cuda" else 0.0

    results = {m: {} for m in modes}
    result = dict(
        config=args.config,
        resolution=R,
        batch=B,
        what=args.what,
        modes=modes,
        complete=False,
        torch=torch.__version__,
        diffusers=diffusers.__version__,
        device=dev_name,
        group_size=args.group_size,
        text_tokens=args.text_tokens,
        steps=args.steps,
        warmup=args.warmup,
        quantised_linears=0,
        compile=dict(mode=args.compile_mode, backend=args.compile_backend, scope=args.compile_scope,
                     dynamic=False) if "compiled" in modes else None,
        compile_check=None,
        **results,
    )

    def save():
        """Writes the JSON after every timed phase (complete: false until the end), so a run
        stopped by a timeout, e.g. inside a long compilation, keeps what it measured."""
        if "eager" in modes:   # the keys of the earlier version (scripts/gpu/compare-pytorch.sh)
            e = results["eager"]
            result["forward_ms"] = e.get("forward_ms")
            result["qzo_step_ms"] = e.get("qzo_step_ms")
            result["peak_gib"] = dict(forward=e.get("peak_gib", {}).get("forward"), qzo=e.get("peak_gib", {}).get("qzo"))
        if args.json:
            with open(args.json + ".tmp", "w") as f:
                json.dump(result, f, indent=2)
            os.replace(args.json + ".tmp", args.json)

    def record(mode, phase, ms, warm_s, pk, graphs=None):
        r = results[mode]
        r[KEY[phase]] = ms
        r.setdefault("peak_gib", {})[phase] = pk
        r.setdefault("images_per_s", {})[phase] = B / (ms["median"] * 1e-3)
        r.setdefault("warmup_s", {})[phase] = warm_s
        line = (f"{phase} {mode}: median {ms['median']:.2f} ms (min {ms['min']:.2f}, max {ms['max']:.2f}), "
                f"{B / (ms['median'] * 1e-3):.2f} images/s; peak {pk:.2f} GiB")
        if mode == "compiled":
            # what the warm-up took beyond steady-state runs: the compilation (and autotuning)
            cs = max(0.0, sum(warm_s) - len(warm_s) * ms["median"] * 1e-3)
            r.setdefault("compile_s", {})[phase] = cs
            r.setdefault("dynamo", {})[phase] = graphs
            line += (f"; compile {cs:.1f} s; {graphs['graphs']} graph(s), {graphs['graph_breaks']} graph break(s), "
                     f"{graphs['recompiles_while_timed']} recompile(s) while timed")
            if graphs["recompiles_while_timed"]:
                line += " -- WARNING: the timed runs include compilation"
        print(line, flush=True)
        save()

    def run_phase(phase, mode, m, step_fn_of):
        peak_reset()
        target_m = compiled(m) if mode == "compiled" else m
        fn = step_fn_of(make_fwd(target_m))
        graphs = None
        with torch.no_grad():
            if mode == "compiled":
                c = [dynamo_counts()]
                ms, warm_s = time_it(fn, args.warmup, args.steps, dev, after_warmup=lambda: c.append(dynamo_counts()))
                c.append(dynamo_counts())
                graphs = dict(graphs=c[1][0] - c[0][0], graph_breaks=c[1][1] - c[0][1],
                              recompiles_while_timed=c[2][0] - c[1][0])
            else:
                ms, warm_s = time_it(fn, args.warmup, args.steps, dev)
        record(mode, phase, ms, warm_s, peak(), graphs)
        return target_m

    # ---- phase 1: bf16 forward ----
    if args.what in ("forward", "both"):
        for mode in modes:
            run_phase("forward", mode, model, lambda fwd: (lambda i: fwd()))
            uncompile(model)

    # ---- phase 2: QZO step ----
    layers = []
    last = {}
    if args.what in ("qzo", "both"):
        state = QZOState(args.seed, args.eps, dev)
        with torch.no_grad():
            layers, skipped = quantize_blocks(model, args.group_size, state)
        sync(dev)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        alloc = torch.cuda.memory_allocated() / GIB if dev.type == "cuda" else 0.0
        result["quantised_linears"] = len(layers)
        print(f"quantised {len(layers)} linears in transformer_blocks (G={args.group_size}), "
              f"skipped {skipped}; allocated now {alloc:.2f} GiB", flush=True)
        zgen = torch.Generator(device=layers[0].z.device if layers else dev)

        def qzo_step_of(fwd):
            def qzo_step(step):
                regenerate_z(layers, state, step, zgen)
                state.coef.fill_(args.eps)
                lp = F.mse_loss(fwd().float(), target)
                regenerate_z(layers, state, step, zgen)
                state.coef.fill_(-args.eps)
                lm = F.mse_loss(fwd().float(), target)
                state.coef.zero_()
                d = ((lp - lm) / (2.0 * args.eps)).clamp(-args.clip, args.clip)
                scale = args.lr * d
                regenerate_z(layers, state, step, zgen)
                for q in layers:
                    q.scales.sub_(scale * q.z).clamp_(min=0)
                last["lp"], last["lm"], last["d"] = lp, lm, d
            return qzo_step

        for mode in modes:
            m = run_phase("qzo", mode, model, qzo_step_of)
            if mode == "compiled":
                # The compiled forward against the eager one on the same perturbed scales: the
                # same math, so the losses agree to bf16 rounding of the activations.
                with torch.no_grad():
                    regenerate_z(layers, state, 1 << 20, zgen)
                    state.coef.fill_(args.eps)
                    lc = F.mse_loss(make_fwd(m)().float(), target).item()
                    if args.compile_scope == "model":
                        le = F.mse_loss(make_fwd(model)().float(), target).item()   # the module itself is eager
                    else:
                        with torch.compiler.set_stance("force_eager"):
                            le = F.mse_loss(make_fwd(model)().float(), target).item()
                    state.coef.zero_()
                check = dict(loss_eager=le, loss_compiled=lc, rel_diff=abs(lc - le) / max(abs(le), 1e-30))
                result["compile_check"] = check
                save()
                print(f"check: L+ eager {le:.6f}, compiled {lc:.6f}, relative difference {check['rel_diff']:.2e}",
                      flush=True)
                uncompile(model)
            print(f"  last L+={last['lp'].item():.6f} L-={last['lm'].item():.6f} d={last['d'].item():.4f}", flush=True)

    for mode in modes:
        r = results[mode]
        parts = [f"{ph} {r[KEY[ph]]['median']:.2f} ms" for ph in ("forward", "qzo") if KEY[ph] in r]
        if "compile_s" in r:
            parts += [f"compile {', '.join(f'{k} {v:.1f} s' for k, v in r['compile_s'].items())}"]
        print(f"SUMMARY pytorch {mode} {args.config} {R}px batch {B}: {'; '.join(parts)} "
              f"({dev_name}, torch {torch.__version__}, diffusers {diffusers.__version__})", flush=True)
    result["complete"] = True
    save()
    if args.json:
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
