#!/usr/bin/env python3
"""Golden fixtures for sd-qzo's T5 encoder (text_encoders/t5_encoder.c) from
transformers' T5EncoderModel.

A tiny random SD3-style T5 v1.1 encoder (gated-gelu FFN, relative position bias
in the first layer only, 32 buckets, max distance 128) whose vocabulary is that of
the fixture tokenizer (tests/fixtures/tokenizer/t5: 153 pieces + 100 extra ids),
so real token ids from it are valid. Every weight is rounded to bf16 first (values
below fp16's normal range flushed to 0, so fp16 holds them all exactly): the bf16
folder and the fp16 single file hold the same values and share one fp32 reference.

  tests/fixtures/t5/tiny/config.json + model-0000{1,2}-of-00002.safetensors
      + model.safetensors.index.json      save_pretrained, 2 shards (like SD3.5's
                                          text_encoder_3), bf16
  tests/fixtures/t5/tiny/t5_single.safetensors
                                          single-file layout ("shared.weight",
                                          "encoder.block.N..."), fp16, as t5xxl_fp16
  tests/fixtures/t5/tiny/io.safetensors:
      ids (4,32) I32      four prompts (one empty) tokenised with padding to 32
      hidden (4,32,64)    last_hidden_state for ids (no attention mask, as SD3)
      ids_b1 (1,77) I32, hidden_b1 (1,77,64)   one longer prompt padded to 77
      hidden_int8, hidden_b1_int8         the same with every linear of the blocks
                                          int8-quantised as sd-qzo does (per-row absmax)
      rel_pos (2001,) I32, buckets (2001,) I32 relative positions -1000..1000 and
                                          their buckets (bidirectional, 32, 128)

Run: venv/bin/python tools/make_t5_fixtures.py [--out tests/fixtures/t5/tiny]
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file
from transformers import T5Config, T5EncoderModel, T5Tokenizer
from transformers.models.t5.modeling_t5 import T5Attention

TOKENIZER = "tests/fixtures/tokenizer/t5"
PROMPTS = [
    "a photo of a cat",
    "",
    "An astronaut riding a horse on the moon, 4k, highly detailed!",
    "a watercolor illustration of a small village by the sea",
]
LONG_PROMPT = ("a very long prompt that keeps going: " + "a red castle on a hill with clouds and a robot "
               "reading a book by the sea, " * 3).strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/t5/tiny")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)

    tok = T5Tokenizer.from_pretrained(TOKENIZER)
    cfg = T5Config(vocab_size=len(tok), d_model=64, d_kv=16, d_ff=96, num_layers=3, num_heads=4,
                   relative_attention_num_buckets=32, relative_attention_max_distance=128,
                   feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, dropout_rate=0.0,
                   is_encoder_decoder=False, use_cache=False)
    model = T5EncoderModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:   # RMSNorm weights away from 1 so they are exercised
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif "relative_attention_bias" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (1.0 / p.shape[-1] ** 0.5 if p.ndim == 2 and "shared" not in name else 1.0))
            p.copy_(p.bfloat16().float())
            p[p.abs() < 2.0**-14] = 0.0   # below fp16's normal range a bf16 value may not survive
            assert torch.equal(p.half().float(), p), name

    # max_shard_size picks two shards of this ~0.5 MB model, as SD3.5's text_encoder_3 has
    # (the reference below runs the fp32 model: same values, fp32 arithmetic)
    model.to(torch.bfloat16).save_pretrained(args.out, max_shard_size="150KB", safe_serialization=True)
    model.float()
    index = os.path.join(args.out, "model.safetensors.index.json")
    with open(index) as f:
        n_shards = len(set(json.load(f)["weight_map"].values()))
    assert n_shards == 2, f"expected 2 shards, got {n_shards}"

    sd = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()
          if k != "encoder.embed_tokens.weight"}   # tied to shared.weight; single files keep one copy
    save_file(sd, os.path.join(args.out, "t5_single.safetensors"), metadata={"format": "pt"})

    tensors = {}
    with torch.no_grad():
        ids = tok(PROMPTS, padding="max_length", max_length=32, truncation=True).input_ids
        ids = torch.tensor(ids, dtype=torch.int32)
        tensors["ids"] = ids
        tensors["hidden"] = model(input_ids=ids.long()).last_hidden_state.float().contiguous()
        ids_b1 = torch.tensor(tok([LONG_PROMPT], padding="max_length", max_length=77, truncation=True).input_ids,
                              dtype=torch.int32)
        tensors["ids_b1"] = ids_b1
        tensors["hidden_b1"] = model(input_ids=ids_b1.long()).last_hidden_state.float().contiguous()
    # sd-qzo's int8 option (kernels/int8.h: per-row absmax, round half to even) applied
    # to every linear of the blocks, so the C int8 path has an exact reference too
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("encoder.block") and p.ndim == 2 and "relative_attention_bias" not in name:
                s = p.abs().amax(1, keepdim=True) / 127
                p.copy_(torch.where(s > 0, torch.round(p / s).clamp(-127, 127) * s, torch.zeros_like(p)))
        tensors["hidden_int8"] = model(input_ids=ids.long()).last_hidden_state.float().contiguous()
        tensors["hidden_b1_int8"] = model(input_ids=ids_b1.long()).last_hidden_state.float().contiguous()
    rel = torch.arange(-1000, 1001)
    tensors["rel_pos"] = rel.to(torch.int32)
    tensors["buckets"] = T5Attention._relative_position_bucket(rel, True, 32, 128).to(torch.int32)
    save_file(tensors, os.path.join(args.out, "io.safetensors"))
    for i, p in enumerate(PROMPTS):
        print(f"{int((ids[i] != 0).sum()):3d} real tokens  {p!r}")
    print("hidden max |x|", tensors["hidden"].abs().max().item())


if __name__ == "__main__":
    main()
