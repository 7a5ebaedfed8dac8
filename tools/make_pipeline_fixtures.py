#!/usr/bin/env python3
"""A tiny random StableDiffusion3Pipeline in the real diffusers folder layout.

One shared fixture for everything that needs a whole SD3 model rather than one
module: the conditioning (text_encoders/conditioning), the sampler (samples/), the
training loop's end-to-end test and `sd-qzo sample`/`export`. Every component has
the SD3.5 structure at toy widths:

  transformer/     SD3Transformer2DModel, 2 joint blocks of width 32 (so int4 group 32 applies
                   to every joint-block linear), QK RMSNorm (3.5-Large-like)
  vae/             AutoencoderKL, 2 levels (8x8 latents for 16x16 images), 16 latent
                   channels, no quant convs, SD3's scaling/shift factors
  text_encoder/    CLIPTextModelWithProjection, CLIP-L-like (quick_gelu), width 32
  text_encoder_2/  CLIPTextModelWithProjection, bigG-like (gelu), width 48
  text_encoder_3/  T5EncoderModel (gated-gelu), d_model 96 >= 32 + 48, so the CLIP
                   features are zero-padded to 96 exactly as SD3 pads 2048 to 4096
  tokenizer*/      the small tokenizers of tests/fixtures/tokenizer (CLIP-G's pad "!")
  scheduler/       FlowMatchEulerDiscreteScheduler, shift 3.0 as SD3.5

Module tests add their own records beside it (encode.safetensors here); the
pipeline itself is deterministic from the seed.

Run: venv/bin/python tools/make_pipeline_fixtures.py [--out tests/fixtures/pipeline/tiny]
"""
import argparse
import os
import shutil

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
TOK = os.path.join(HERE, "..", "tests", "fixtures", "tokenizer")
T5_LEN = 32  # max_sequence_length for the tiny pipeline (SD3.5 uses 256)

# Prompts the conditioning record covers: plain, punctuation, long (truncates at 77
# CLIP tokens), and the empty prompt that SD3 uses for the unconditional branch.
PROMPTS = [
    "a photo of a cat sitting on a red chair",
    "the quick brown fox, 4k, highly detailed!",
    " ".join(["a castle on a hill surrounded by mountains and rivers"] * 8),
    "",
]


def clip_config(width, layers, heads, proj, act, vocab, bos, eos, pad):
    return CLIPTextConfig(vocab_size=vocab, hidden_size=width, intermediate_size=2 * width,
                          num_hidden_layers=layers, num_attention_heads=heads, projection_dim=proj,
                          max_position_embeddings=77, hidden_act=act, layer_norm_eps=1e-5,
                          bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)


def randomize(module, gen, std):
    # Default inits leave norms at exactly 1/0 and some projections at zero; random
    # values everywhere make every weight matter in the comparison. Norm weights stay
    # near 1 so activations keep a sane scale through the layers.
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * std
            p.copy_(1.0 + noise if ("norm" in name and name.endswith("weight")) else noise)


def build(seed=0):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    tok_l = CLIPTokenizer.from_pretrained(os.path.join(TOK, "clip_l"))
    tok_g = CLIPTokenizer.from_pretrained(os.path.join(TOK, "clip_g"))
    tok_t5 = T5TokenizerFast.from_pretrained(os.path.join(TOK, "t5"))
    vocab = len(tok_l.get_vocab())
    bos, eos = tok_l.bos_token_id, tok_l.eos_token_id
    te1 = CLIPTextModelWithProjection(clip_config(32, 2, 2, 16, "quick_gelu", vocab, bos, eos, eos)).eval()
    te2 = CLIPTextModelWithProjection(clip_config(48, 3, 3, 24, "gelu", vocab, bos, eos, 0)).eval()
    te3 = T5EncoderModel(T5Config(vocab_size=len(tok_t5), d_model=96, d_kv=16, d_ff=128, num_layers=2,
                                  num_heads=4, relative_attention_num_buckets=8,
                                  relative_attention_max_distance=20, feed_forward_proj="gated-gelu",
                                  dropout_rate=0.0, is_encoder_decoder=False, use_cache=False)).eval()
    for m in (te1, te2, te3):
        randomize(m, gen, 0.15)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=16, num_layers=2,
                                        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=96,
                                        caption_projection_dim=32, pooled_projection_dim=16 + 24,
                                        out_channels=16, pos_embed_max_size=16, qk_norm="rms_norm").eval()
    randomize(transformer, gen, 0.1)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                        layers_per_block=1, latent_channels=16, norm_num_groups=4, sample_size=16,
                        scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
                        use_post_quant_conv=False).eval()
    randomize(vae, gen, 0.1)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    return StableDiffusion3Pipeline(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=te1,
                                    tokenizer=tok_l, text_encoder_2=te2, tokenizer_2=tok_g, text_encoder_3=te3,
                                    tokenizer_3=tok_t5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "..", "tests", "fixtures", "pipeline", "tiny"))
    args = ap.parse_args()
    pipe = build()
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    pipe.save_pretrained(args.out, safe_serialization=True)
    # Tokenizers exactly as the tokenizer fixtures (save_pretrained of transformers 5
    # adds a tokenizer.json that the C code does not read; the sources are the same).
    for sub, src in (("tokenizer", "clip_l"), ("tokenizer_2", "clip_g"), ("tokenizer_3", "t5")):
        shutil.rmtree(os.path.join(args.out, sub))
        shutil.copytree(os.path.join(TOK, src), os.path.join(args.out, sub))

    # The conditioning record: diffusers' encode_prompt, with T5 and without it (the
    # pipeline substitutes zeros when text_encoder_3 is None).
    pipe = StableDiffusion3Pipeline.from_pretrained(args.out, torch_dtype=torch.float32)
    rec = {}
    with torch.no_grad():
        for i, p in enumerate(PROMPTS):
            ctx, neg, pooled, neg_pooled = pipe.encode_prompt(p, p, p, device="cpu", num_images_per_prompt=1,
                                                              do_classifier_free_guidance=True,
                                                              negative_prompt="", max_sequence_length=T5_LEN)
            rec[f"prompt{i}.context"] = ctx[0].contiguous()
            rec[f"prompt{i}.pooled"] = pooled[0].contiguous()
            if i == 0:
                rec["negative.context"] = neg[0].contiguous()
                rec["negative.pooled"] = neg_pooled[0].contiguous()
        pipe.text_encoder_3 = None
        ctx, _, pooled, _ = pipe.encode_prompt(PROMPTS[0], PROMPTS[0], PROMPTS[0], device="cpu",
                                               do_classifier_free_guidance=False, max_sequence_length=T5_LEN)
        rec["no_t5.prompt0.context"] = ctx[0].contiguous()
        rec["no_t5.prompt0.pooled"] = pooled[0].contiguous()
    meta = {f"prompt{i}": p for i, p in enumerate(PROMPTS)}
    meta["t5_max_length"] = str(T5_LEN)
    save_file(rec, os.path.join(args.out, "..", "tiny_encode.safetensors"), metadata=meta)
    print("wrote", args.out, {k: tuple(v.shape) for k, v in rec.items()})


if __name__ == "__main__":
    main()
