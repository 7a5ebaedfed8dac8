#!/usr/bin/env python3
"""Golden records for samples/ (the flow-matching Euler sampler with CFG).

Runs diffusers' StableDiffusion3Pipeline on the committed tiny pipeline
(tests/fixtures/pipeline/tiny, made by tools/make_pipeline_fixtures.py) with the
text conditioning taken from tests/fixtures/pipeline/tiny_encode.safetensors, so the
sampler's test does not depend on the text encoders, and with saved initial
latents. Records, into tests/fixtures/sampler/tiny.safetensors:

  <case>.init            initial latents (B,16,H/2,W/2): the tiny VAE down-samples by 2
  <case>.context/.pooled positive conditioning (B,T,96) / (B,40)
  <case>.neg_context/.neg_pooled   negative ("" prompt) conditioning, one row (1,T,96) / (1,40)
  <case>.step<i>         latents after step i (callback_on_step_end)
  <case>.image           the output_type="np" image, transposed to (B,3,H,W)
  <case>.sigmas/.timesteps  the scheduler's schedule for the run
  sched<j>.sigmas/.timesteps  set_timesteps() for the schedule cases below

Cases: "cfg"   guidance 4.5, batch 2 (prompts 0 and 1), 32x16 pixels (W x H), 5 steps
       "nocfg" guidance 1.0 (CFG skipped, as Turbo), batch 1, 16x16, 4 steps

Run: venv/bin/python tools/make_sampler_fixtures.py
"""
import json
import os

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "tests", "fixtures")
PIPE = os.path.join(FIX, "pipeline", "tiny")
OUT = os.path.join(FIX, "sampler", "tiny.safetensors")

CASES = [
    # name, guidance, prompt indices, width, height, steps
    ("cfg", 4.5, [0, 1], 32, 16, 5),
    ("nocfg", 1.0, [0], 16, 16, 4),
]

# Schedule cases: (shift, use_dynamic_shifting, steps, image_seq_len, shift_terminal, time_shift_type).
# tests/golden/test_sampler.c holds the same list.
SCHEDULES = [
    (3.0, False, 28, 4096, None, "exponential"),
    (3.0, False, 4, 4096, None, "exponential"),
    (3.0, False, 1, 4096, None, "exponential"),
    (1.0, False, 10, 4096, None, "exponential"),
    (5.5, False, 7, 4096, None, "exponential"),
    (1.0, True, 20, 4096, None, "exponential"),
    (1.0, True, 9, 1024, None, "linear"),
    (3.0, False, 12, 4096, 0.1, "exponential"),
]


def schedule(shift, dynamic, steps, seq_len, terminal, tst):
    s = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift, use_dynamic_shifting=dynamic,
                                        shift_terminal=terminal, time_shift_type=tst)
    mu = None
    if dynamic:
        # the SD3 pipeline's calculate_shift with the scheduler's defaults
        m = (1.15 - 0.5) / (4096 - 256)
        mu = seq_len * m + (0.5 - m * 256)
    s.set_timesteps(steps, mu=mu)
    return s.sigmas.clone(), s.timesteps.clone()


def main():
    torch.manual_seed(0)
    enc = load_file(os.path.join(FIX, "pipeline", "tiny_encode.safetensors"))
    pipe = StableDiffusion3Pipeline.from_pretrained(PIPE, text_encoder=None, text_encoder_2=None,
                                                    text_encoder_3=None, tokenizer=None, tokenizer_2=None,
                                                    tokenizer_3=None, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    rec = {}
    gen = torch.Generator().manual_seed(1234)
    for name, g, prompts, W, H, steps in CASES:
        B = len(prompts)
        ctx = torch.stack([enc[f"prompt{i}.context"] for i in prompts])
        pooled = torch.stack([enc[f"prompt{i}.pooled"] for i in prompts])
        neg = enc["negative.context"][None].repeat(B, 1, 1)
        neg_pooled = enc["negative.pooled"][None].repeat(B, 1)
        f = pipe.vae_scale_factor  # 2 for the tiny VAE (8 for SD3)
        init = torch.randn((B, 16, H // f, W // f), generator=gen)
        steps_rec = []

        def on_step(p, i, t, kw):
            steps_rec.append(kw["latents"].detach().clone())
            return kw

        with torch.no_grad():
            out = pipe(prompt_embeds=ctx, pooled_prompt_embeds=pooled, negative_prompt_embeds=neg,
                       negative_pooled_prompt_embeds=neg_pooled, guidance_scale=g, num_inference_steps=steps,
                       width=W, height=H, latents=init.clone(), output_type="np", callback_on_step_end=on_step)
        assert len(steps_rec) == steps
        rec[f"{name}.init"] = init
        rec[f"{name}.context"] = ctx.contiguous()
        rec[f"{name}.pooled"] = pooled.contiguous()
        # one row, broadcast over the batch by the C sampler (the pipeline got it repeated)
        rec[f"{name}.neg_context"] = neg[:1].contiguous()
        rec[f"{name}.neg_pooled"] = neg_pooled[:1].contiguous()
        for i, l in enumerate(steps_rec):
            rec[f"{name}.step{i}"] = l.contiguous()
        rec[f"{name}.image"] = torch.from_numpy(out.images).permute(0, 3, 1, 2).contiguous()
        rec[f"{name}.sigmas"] = pipe.scheduler.sigmas.clone()
        rec[f"{name}.timesteps"] = pipe.scheduler.timesteps.clone()
        print(name, "image range", float(out.images.min()), float(out.images.max()),
              "final |latent| max", float(steps_rec[-1].abs().max()))
    for j, sc in enumerate(SCHEDULES):
        sig, ts = schedule(*sc)
        rec[f"sched{j}.sigmas"] = sig
        rec[f"sched{j}.timesteps"] = ts
    meta = {"cases": json.dumps([list(c) for c in CASES]), "schedules": json.dumps([list(s) for s in SCHEDULES])}
    save_file(rec, OUT, metadata=meta)
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
