#!/usr/bin/env python3
"""Golden fixtures for sd-qzo's CLIP text encoders (text_encoders/clip_encoder.c)
from transformers' CLIPTextModelWithProjection.

The encoders are the two tiny CLIPs of the shared pipeline fixture
(tests/fixtures/pipeline/tiny, tools/make_pipeline_fixtures.py): text_encoder
(CLIP-L-like, quick_gelu, width 32, 2 heads) and text_encoder_2 (bigG-like, gelu,
width 48, 3 heads, pad "!"). This script writes, into tests/fixtures/clip/:

  clip_l.safetensors, clip_g.safetensors
      the same two models in the single-file layout of SD3.5's text_encoders/
      ("text_model.*" + "text_projection.weight", no config.json), stored fp16
      as those files are; clip_l also carries the "position_ids" buffer some
      exports keep. Real files have 64-wide heads, which a tiny model cannot, so
      these carry __metadata__ {"num_attention_heads": N} (the loader's override).
  io.safetensors, for each encoder E in {l, g}:
      E.ids (P,77) I32        PROMPTS tokenised by the pipeline's tokenizer(_2)
      E.penultimate (P,77,C)  hidden_states[-2] (what SD3 conditions on)
      E.last (P,77,C)         last_hidden_state (after final_layer_norm)
      E.pooled (P,proj)       text_embeds (projected EOS state)
      single_E.*              the same from the fp16 single file's weights
                              (widened to fp32), which differ from the folder's

Run: venv/bin/python tools/make_clip_fixtures.py
"""
import argparse
import os

import torch
from safetensors.torch import save_file
from transformers import CLIPTextModelWithProjection, CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
PIPE = os.path.join(HERE, "..", "tests", "fixtures", "pipeline", "tiny")

# plain, punctuation + numbers, empty (SD3's unconditional prompt), and one that
# truncates at 77 tokens so the EOS sits in the last position
PROMPTS = [
    "a photo of a cat sitting on a red chair",
    "the quick brown fox, 4k, highly detailed! 1234",
    "",
    " ".join(["a castle on a hill surrounded by mountains and rivers"] * 8),
]


def run(model, ids):
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    hs = out.hidden_states
    # embeddings + one state per layer: [-2] is the second-to-last block's output
    assert len(hs) == model.config.num_hidden_layers + 1, len(hs)
    return {"penultimate": hs[-2], "last": out.last_hidden_state, "pooled": out.text_embeds}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "..", "tests", "fixtures", "clip"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rec = {}
    for tag, sub, tok_sub in (("l", "text_encoder", "tokenizer"), ("g", "text_encoder_2", "tokenizer_2")):
        tok = CLIPTokenizer.from_pretrained(os.path.join(PIPE, tok_sub))
        ids = tok(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        model = CLIPTextModelWithProjection.from_pretrained(os.path.join(PIPE, sub), torch_dtype=torch.float32).eval()
        rec[f"{tag}.ids"] = ids.to(torch.int32).contiguous()
        for k, v in run(model, ids).items():
            rec[f"{tag}.{k}"] = v.contiguous()

        # single-file copy: fp16 weights under the same keys, no config
        sd = {k: v.to(torch.float16).contiguous() for k, v in model.state_dict().items()
              if not k.endswith("position_ids")}
        if tag == "l":
            sd["text_model.embeddings.position_ids"] = torch.arange(77, dtype=torch.int64)[None]
        meta = {"num_attention_heads": str(model.config.num_attention_heads)}
        save_file(sd, os.path.join(args.out, f"clip_{tag}.safetensors"), metadata=meta)
        # the reference for the single file runs the fp16-rounded weights in fp32
        with torch.no_grad():
            for k, p in model.state_dict().items():
                if p.is_floating_point():
                    p.copy_(p.to(torch.float16).to(torch.float32))
        for k, v in run(model, ids[:2]).items():
            rec[f"single_{tag}.{k}"] = v.contiguous()
        rec[f"single_{tag}.ids"] = rec[f"{tag}.ids"][:2].clone()
    save_file(rec, os.path.join(args.out, "io.safetensors"),
              metadata={f"prompt{i}": p for i, p in enumerate(PROMPTS)})
    print("wrote", args.out, {k: tuple(v.shape) for k, v in rec.items()})


if __name__ == "__main__":
    main()
