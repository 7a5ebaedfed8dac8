"""What two of issue 22's remaining levers could give, measured with the libraries
PyTorch calls (cuBLAS, cuDNN, its own flash kernels) on SD3.5's shapes, before
writing either in sd-qzo:
  1. one GEMM for a stream's q, k and v: three (M, D) x (D, D) products issued one
     by one, against one strided-batched product (the activation read with batch
     stride 0) and against one (M, D) x (D, 3D) product;
  2. attention over the joint tokens with head size 64: PyTorch's flash, cuDNN and
     memory-efficient SDPA backends, in TFLOP/s (4·S²·HS·H FLOP a pass).
bf16, batch 1, CUDA events around 20 runs after 3 warm-ups; prints one line per
measurement. Eager PyTorch issues each op from Python: small GEMMs ("three GEMMs"
at 333 or 1024 rows) are then bound by those launches, which sd-qzo's CUDA graphs
do not pay, so that column overstates what one GEMM saves (bench/RESULTS.md, sixth
session, has both). Usage: python3 bench/probe_shapes.py [--json FILE]
"""
import argparse
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

# name, hidden D, heads, image tokens N, text tokens T
CASES = [("large-512", 2432, 38, 1024, 333), ("medium-512", 1536, 24, 1024, 333), ("large-1024", 2432, 38, 4096, 333)]


def time_ms(fn, runs=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(runs):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / runs


def qkv_gemms(name, D, M, out):
    x = torch.randn(M, D, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(3, D, D, device="cuda", dtype=torch.bfloat16) / D**0.5
    w_cat = w.reshape(3 * D, D)
    runs = {
        "three GEMMs": lambda: [x @ w[i].T for i in range(3)],
        "one strided-batched GEMM": lambda: torch.bmm(x.expand(3, M, D), w.transpose(1, 2)),
        "one GEMM, N = 3D": lambda: x @ w_cat.T,
    }
    flop = 2 * 3 * M * D * D
    for what, fn in runs.items():
        ms = time_ms(fn)
        print(f"{name} q/k/v, M {M}: {what}: {ms * 1e3:.1f} us, {flop / ms / 1e9:.0f} TFLOP/s")
        out.append({"case": name, "probe": "qkv", "M": M, "how": what, "us": ms * 1e3})


def attention(name, H, S, out):
    q, k, v = (torch.randn(1, H, S, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    flop = 4 * S * S * 64 * H
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
        try:
            with sdpa_kernel([backend]):
                ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v))
        except RuntimeError as e:   # a backend this build or GPU lacks
            print(f"{name} attention, S {S}: {backend.name}: not available ({str(e).splitlines()[0]})")
            continue
        print(f"{name} attention, S {S}, {H} heads: {backend.name}: {ms * 1e3:.1f} us, {flop / ms / 1e9:.0f} TFLOP/s")
        out.append({"case": name, "probe": "attention", "S": S, "how": backend.name, "us": ms * 1e3})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="also write the measurements here")
    args = ap.parse_args()
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "cuDNN", torch.backends.cudnn.version())
    out = []
    for name, D, H, N, T in CASES:
        for M in (N, T):
            qkv_gemms(name, D, M, out)
        attention(name, H, N + T, out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
