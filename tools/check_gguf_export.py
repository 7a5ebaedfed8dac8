#!/usr/bin/env python3
"""Checks a GGUF written by `sd-qzo export --format gguf` with the gguf package (PyPI):

  sd-qzo export --model M --scales CKPT --out A --format gguf --name ft
  sd-qzo export --model M --scales CKPT --out B --format single --dtype fp32 --name ft
  python tools/check_gguf_export.py A/ft.gguf B/ft.safetensors

The second export is the same fine-tuned model as exact fp32 scales ⊙ codes in
Stability's single-file layout (tools/check_export_roundtrip.py checks that layout
against diffusers). Checks, with gguf.GGUFReader and gguf.quants.dequantize:
  - general.architecture is "sd3" and the tensor names are the single file's keys
    without "model.diffusion_model." (the layout ComfyUI-GGUF's convert.py writes and
    stable-diffusion.cpp's --diffusion-model reads), with the same shapes;
  - the joint-block linears are Q4_0 and dequantise to the reference within the
    rounding of their scale to fp16 (|got - ref| <= |ref| * 2^-11 per element, plus
    fp16's subnormal spacing times 8 for tiny scales);
  - 1-D and small tensors are F32 and equal; the others are F16 within fp16 rounding.
Prints one line per tensor type and exits non-zero on the first failure.
"""
import sys

import gguf
import numpy as np
from safetensors.numpy import load_file

PREFIX = "model.diffusion_model."


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    reader = gguf.GGUFReader(sys.argv[1])
    ref = load_file(sys.argv[2])
    arch = reader.fields["general.architecture"]
    arch = bytes(arch.parts[arch.data[0]]).decode()
    assert arch == "sd3", f"general.architecture is {arch!r}"
    names = {t.name for t in reader.tensors}
    want = {k[len(PREFIX):] for k in ref if k.startswith(PREFIX)}
    assert names == want, f"tensor names differ: only in gguf {sorted(names - want)[:5]}, only in reference {sorted(want - names)[:5]}"
    stats = {}
    for t in reader.tensors:
        r = ref[PREFIX + t.name].astype(np.float32)
        g = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(r.shape)
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        assert shape == r.shape, f"{t.name}: gguf shape {shape}, reference {r.shape}"
        qt = t.tensor_type.name
        if qt == "Q4_0":
            assert t.name.startswith("joint_blocks."), f"{t.name}: Q4_0 outside the joint blocks"
            tol = np.abs(r) * 2.0 ** -11 + 8 * 2.0 ** -24
        elif qt == "F32":
            assert r.ndim == 1 or r.size <= 1024, f"{t.name}: a large tensor in F32"
            tol = np.zeros_like(r)
        elif qt in ("F16", "BF16"):
            tol = np.abs(r) * (2.0 ** -11 if qt == "F16" else 2.0 ** -8) + 2.0 ** -24
        else:
            raise AssertionError(f"{t.name}: unexpected type {qt}")
        err = np.abs(g - r)
        bad = err > tol
        assert not bad.any(), f"{t.name} ({qt}): {bad.sum()} elements off, max |diff| {err.max():.3g}"
        assert np.abs(r).max() > 0, f"{t.name}: reference is all zeros"
        s = stats.setdefault(qt, [0, 0, 0.0])
        s[0] += 1
        s[1] += r.size
        rel = err / np.maximum(np.abs(r), 1e-30)
        s[2] = max(s[2], float(rel[np.abs(r) > 1e-6].max()) if (np.abs(r) > 1e-6).any() else 0.0)
    for qt, (n, el, rel) in sorted(stats.items()):
        print(f"{qt}: {n} tensors, {el} elements, max relative difference {rel:.3g}")
    print(f"OK: {sys.argv[1]} opens with gguf {getattr(gguf, '__version__', '')} and matches {sys.argv[2]}")


if __name__ == "__main__":
    main()
