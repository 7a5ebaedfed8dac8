#!/usr/bin/env python3
"""GGUF fixtures for sd-qzo's GGUF reader and GGUF bases (tests/fixtures/gguf/).

Made with the `gguf` package (PyPI; the reference reader/writer of ggml's format),
numpy and safetensors. No torch needed:

  python -m venv /tmp/venv && /tmp/venv/bin/pip install gguf numpy safetensors
  /tmp/venv/bin/python tools/make_gguf_fixtures.py

Writes:
  blocks.gguf                random tensors in every type sd-qzo reads (F32, F16,
                             BF16, Q4_0, Q8_0 quantised by the package; Q4_K from
                             random blocks, as the package has no Q4_K quantiser),
                             alignment 64, a few key/values
  blocks_expected.safetensors  gguf.quants.dequantize of each, F32, same names
  tiny_q4_0.gguf             the tiny pipeline's MMDiT (tests/fixtures/pipeline/tiny)
                             in Stability's single-file keys without the
                             "model.diffusion_model." prefix (ComfyUI-GGUF's convert.py
                             layout), general.architecture "sd3": joint-block linears
                             Q4_0, 1-D and small tensors F32, the rest F16
  tiny_q8_0.gguf             the same with Q8_0 linears
  tiny_q4_0_values.safetensors / tiny_q8_0_values.safetensors
                             single-file (prefixed) F32 tensors holding the values sd-qzo
                             must load from each GGUF: gguf.quants.dequantize, exactly
                             (a Q4_0 block is codes q - 8 with its scale d, negative d
                             included: mmdit/gguf_base.h); metadata: the count of Q4_0
                             blocks with d < 0 and of all codes ("negative_blocks", "codes")
  tiny_q4_0_raw.safetensors  gguf.quants.dequantize of the Q4_0 linears, F32, as is
"""
import json
import os

import gguf
import numpy as np
from safetensors.numpy import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "gguf")
TINY = os.path.join(ROOT, "tests", "fixtures", "pipeline", "tiny", "transformer")
Q = gguf.GGMLQuantizationType


def write_gguf(path, tensors, kv=None, alignment=None):
    """tensors: list of (name, array in PyTorch order, ggml type)."""
    w = gguf.GGUFWriter(path, arch="sd3")
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if alignment:
        w.add_custom_alignment(alignment)
    for k, v in (kv or {}).items():
        if isinstance(v, str):
            w.add_string(k, v)
        else:
            w.add_uint32(k, v)
    for name, arr, qt in tensors:
        if qt == Q.F32:
            w.add_tensor(name, arr.astype(np.float32))
        elif qt == Q.F16:
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(arr.astype(np.float32), qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def blocks_fixture(rng):
    shape = (3, 256)
    x = rng.standard_normal(shape).astype(np.float32) * 0.5
    w = gguf.GGUFWriter(os.path.join(OUT, "blocks.gguf"), arch="sd3")
    w.add_custom_alignment(64)
    w.add_string("sd_qzo.test", "blocks")
    w.add_uint32("sd_qzo.number", 12345)
    raw = {}
    w.add_tensor("t.f32", x)
    raw["t.f32"] = (x, Q.F32)
    w.add_tensor("t.f16", x.astype(np.float16))
    raw["t.f16"] = (x.astype(np.float16), Q.F16)
    for name, qt in [("t.bf16", Q.BF16), ("t.q4_0", Q.Q4_0), ("t.q8_0", Q.Q8_0)]:
        q = gguf.quants.quantize(x, qt)
        w.add_tensor(name, q, raw_dtype=qt)
        raw[name] = (q, qt)
    # Q4_K: 3 rows of one 144-byte super-block; random scales/mins/nibbles, d and
    # dmin small normal fp16 values
    qk = rng.integers(0, 256, size=(3, 144), dtype=np.uint8)
    dd = (rng.standard_normal((3, 2)) * 0.01).astype(np.float16)
    qk[:, 0:4] = dd.view(np.uint8).reshape(3, 4)
    w.add_tensor("t.q4_k", qk, raw_dtype=Q.Q4_K)
    raw["t.q4_k"] = (qk, Q.Q4_K)
    # a 3-D tensor (dims reversed in the file)
    y = rng.standard_normal((2, 3, 32)).astype(np.float32)
    w.add_tensor("t.3d", y)
    raw["t.3d"] = (y, Q.F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    expected = {k: gguf.quants.dequantize(v, qt).astype(np.float32) for k, (v, qt) in raw.items()}
    save_file(expected, os.path.join(OUT, "blocks_expected.safetensors"))


def swap_halves(t):
    a, b = np.split(t, 2, axis=0)
    return np.concatenate([b, a], axis=0)


def to_single_file(sd, num_layers):
    """diffusers keys -> Stability single-file keys, no prefix (the SD3.5 layout;
    the inverse of diffusers' convert_sd3_transformer_checkpoint_to_diffusers)."""
    out = {"pos_embed": sd["pos_embed.pos_embed"], "x_embedder.proj.weight": sd["pos_embed.proj.weight"],
           "x_embedder.proj.bias": sd["pos_embed.proj.bias"]}
    for a, b in [("t_embedder.mlp.0", "time_text_embed.timestep_embedder.linear_1"),
                 ("t_embedder.mlp.2", "time_text_embed.timestep_embedder.linear_2"),
                 ("y_embedder.mlp.0", "time_text_embed.text_embedder.linear_1"),
                 ("y_embedder.mlp.2", "time_text_embed.text_embedder.linear_2"),
                 ("context_embedder", "context_embedder"), ("final_layer.linear", "proj_out")]:
        out[a + ".weight"] = sd[b + ".weight"]
        out[a + ".bias"] = sd[b + ".bias"]
    out["final_layer.adaLN_modulation.1.weight"] = swap_halves(sd["norm_out.linear.weight"])
    out["final_layer.adaLN_modulation.1.bias"] = swap_halves(sd["norm_out.linear.bias"])
    for i in range(num_layers):
        d, s = f"transformer_blocks.{i}.", f"joint_blocks.{i}."
        last = i == num_layers - 1
        for kind in ("weight", "bias"):
            out[s + f"x_block.attn.qkv.{kind}"] = np.concatenate([sd[d + f"attn.to_{c}.{kind}"] for c in "qkv"])
            out[s + f"context_block.attn.qkv.{kind}"] = np.concatenate([sd[d + f"attn.add_{c}_proj.{kind}"] for c in "qkv"])
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
        if d + "attn.norm_q.weight" in sd:
            out[s + "x_block.attn.ln_q.weight"] = sd[d + "attn.norm_q.weight"]
            out[s + "x_block.attn.ln_k.weight"] = sd[d + "attn.norm_k.weight"]
            out[s + "context_block.attn.ln_q.weight"] = sd[d + "attn.norm_added_q.weight"]
            out[s + "context_block.attn.ln_k.weight"] = sd[d + "attn.norm_added_k.weight"]
    return out


def is_linear(key, arr):
    return key.startswith("joint_blocks.") and key.endswith(".weight") and arr.ndim == 2 and arr.shape[1] % 32 == 0


def q4_0_as_sd_qzo(raw):
    """Q4_0 bytes (rows, blocks*18) -> the values sd-qzo holds (codes q - 8 times the
    block's scale d, mmdit/gguf_base.h's rule), and the number of blocks with d < 0."""
    b = raw.reshape(-1, 18)
    d = b[:, :2].copy().view(np.float16).astype(np.float32)[:, 0]
    qs = b[:, 2:]
    q = np.concatenate([qs & 0xF, qs >> 4], axis=1).astype(np.int32)   # elements 0..15, 16..31
    vals = (q - 8).astype(np.float32) * d[:, None]
    return vals, int((d < 0).sum())


def tiny_fixture(qt, tag):
    cfg = json.load(open(os.path.join(TINY, "config.json")))
    sd = {k: v.astype(np.float32) for k, v in load_file(os.path.join(TINY, "diffusion_pytorch_model.safetensors")).items()}
    single = to_single_file(sd, cfg["num_layers"])
    tensors, values, raw_vals = [], {}, {}
    negative = codes = 0
    for k in sorted(single):
        a = single[k]
        if is_linear(k, a):
            t = qt
        elif a.ndim == 1 or a.size <= 1024:   # convert.py's rule: 1-D and small tensors F32
            t = Q.F32
        else:
            t = Q.F16
        tensors.append((k, a, t))
        if t == Q.F32:
            v = a
        elif t == Q.F16:
            v = a.astype(np.float16).astype(np.float32)
        else:
            qa = gguf.quants.quantize(a, t)
            v = gguf.quants.dequantize(qa, t).astype(np.float32)
            if t == Q.Q4_0:
                raw_vals["model.diffusion_model." + k] = v.copy()
                vv, c = q4_0_as_sd_qzo(qa)
                assert np.array_equal(vv.reshape(a.shape), v), "sd-qzo's Q4_0 values differ from gguf's"
                v = vv.reshape(a.shape)
                negative += c
                codes += a.size
        values["model.diffusion_model." + k] = np.ascontiguousarray(v)
    write_gguf(os.path.join(OUT, f"tiny_{tag}.gguf"), tensors)
    save_file(values, os.path.join(OUT, f"tiny_{tag}_values.safetensors"),
              metadata={"negative_blocks": str(negative), "codes": str(codes)})
    if raw_vals:
        save_file(raw_vals, os.path.join(OUT, f"tiny_{tag}_raw.safetensors"))
    print(f"tiny_{tag}.gguf: {len(tensors)} tensors; {negative} Q4_0 blocks with a negative scale ({codes} codes)")


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(19)
    blocks_fixture(rng)
    tiny_fixture(Q.Q4_0, "q4_0")
    tiny_fixture(Q.Q8_0, "q8_0")
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write("# GGUF fixtures\n\nMade by `tools/make_gguf_fixtures.py` with gguf %s, numpy %s "
                "(see the script's docstring for each file).\n" % (gguf.__version__ if hasattr(gguf, "__version__") else "0.19.0",
                                                                   np.__version__))


if __name__ == "__main__":
    main()
