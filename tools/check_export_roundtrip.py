#!/usr/bin/env python3
"""Golden fixture for `sd-qzo export`: diffusers runs what sd-qzo exported.

1. `test_export --write-checkpoint` writes the scales checkpoint (the tiny
   Large-like MMDiT of tools/make_mmdit_fixtures.py quantised at group 32, its
   scales deterministically changed as a QZO run would leave them) with sd-qzo's
   own checkpoint writer;
2. `sd-qzo export --format both --dtype fp32` (sharded) writes the fine-tuned model;
3. diffusers loads the folder with SD3Transformer2DModel.from_pretrained and the
   single file with from_single_file (config from the exported folder), checks the
   two hold the same tensors, and checks every int4 layer independently: it decodes
   the codes of `sd-qzo quantize` and multiplies by the checkpoint's scales;
4. the forward on the fixture inputs is saved as tests/fixtures/export/expected.safetensors
   ("output": from_pretrained, "output_single": from_single_file), for
   tests/golden/test_export.c.

Run: venv/bin/python tools/check_export_roundtrip.py --build build
"""
import argparse
import os
import subprocess
import tempfile

import torch
from safetensors.torch import load_file, save_file

import diffusers
from diffusers import SD3Transformer2DModel

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
GROUP = 32


def run(cmd, env=None):
    print("+", " ".join(cmd))
    subprocess.run(cmd, check=True, env=env)


def decode_q4(codes, k):
    """(N, K/2) uint8 -> (N, K) int codes: element 2i in the low nibble (core/dtype.h)."""
    c = codes.to(torch.int16)
    lo, hi = c & 0xF, c >> 4
    q = torch.stack([lo, hi], dim=-1).reshape(codes.shape[0], k)
    return torch.where(q >= 8, q - 16, q).to(torch.float32)


def forward(model, io):
    with torch.no_grad():
        return model(hidden_states=io["hidden_states"], encoder_hidden_states=io["encoder_hidden_states"],
                     pooled_projections=io["pooled_projections"], timestep=io["timestep"]).sample


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"), help="meson build dir with sd-qzo and test_export")
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "export"))
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    fixtures = os.path.join(ROOT, "tests", "fixtures")
    base = os.path.join(fixtures, "mmdit", "large_like", "transformer")
    sd_qzo = os.path.join(args.build, "app", "sd-qzo")
    os.makedirs(args.out, exist_ok=True)
    ckpt = os.path.join(args.out, "scales.safetensors")
    run([os.path.join(args.build, "tests", "golden", "test_export"), "--write-checkpoint", ckpt],
        env=dict(os.environ, SQ_FIXTURES=fixtures))

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "ft")
        run([sd_qzo, "export", "--model", base, "--scales", ckpt, "--out", out, "--format", "both",
             "--dtype", "fp32", "--shard-size", "0.0002"])
        qfile = os.path.join(tmp, "q.safetensors")
        run([sd_qzo, "quantize", "--model", base, "--out", qfile, "--group-size", str(GROUP)])

        folder = SD3Transformer2DModel.from_pretrained(out, subfolder="transformer").eval()
        single = SD3Transformer2DModel.from_single_file(os.path.join(out, "ft.safetensors"), config=out,
                                                        subfolder="transformer").eval()
        sd_f, sd_s = folder.state_dict(), single.state_dict()
        assert set(sd_f) == set(sd_s)
        for k in sd_f:
            assert torch.equal(sd_f[k], sd_s[k]), f"single file and folder differ at {k}"

        # every int4 layer, independently of sd-qzo's export code: scales ⊙ codes
        scales, q = load_file(ckpt), load_file(qfile)
        n_q = 0
        for name, s in scales.items():
            layer = name[: -len(".scales")]
            codes = decode_q4(q[layer + ".q4"], sd_f[layer].shape[1])
            want = s.repeat_interleave(GROUP, dim=1) * codes
            assert torch.equal(sd_f[layer], want), f"{layer}: exported weight is not scales * codes"
            n_q += 1
        base_model = SD3Transformer2DModel.from_pretrained(base).eval()
        for k, v in base_model.state_dict().items():
            if k + ".scales" not in scales:
                assert torch.equal(sd_f[k], v), f"{k}: unquantised tensor changed"
        print(f"{n_q} int4 layers equal scales * codes; {len(sd_f) - n_q} other tensors equal the base")

        io = load_file(os.path.join(fixtures, "mmdit", "large_like", "io.safetensors"))
        out_f, out_s = forward(folder, io), forward(single, io)
        dense_err = ((out_f - io["output"]).abs().max() / io["output"].abs().max()).item()
        print(f"from_pretrained vs from_single_file: max |diff| {(out_f - out_s).abs().max().item():.3g}; "
              f"fine-tuned int4 vs dense base output: rel {dense_err:.3f}")
        save_file({"output": out_f.contiguous(), "output_single": out_s.contiguous()},
                  os.path.join(args.out, "expected.safetensors"),
                  metadata={"diffusers_version": diffusers.__version__, "torch_version": torch.__version__,
                            "checkpoint": "scales.safetensors", "base": "mmdit/large_like/transformer"})
    print(f"wrote {args.out}/expected.safetensors and {ckpt}")


if __name__ == "__main__":
    main()
