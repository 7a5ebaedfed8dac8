#!/usr/bin/env python3
"""The built-in demo model and data of sd-qzo (issue 11), made with PyTorch.

A tiny StableDiffusion3Pipeline, really pretrained by backprop on a procedurally
generated captioned dataset (coloured shapes at named positions on plain or
textured backgrounds, 64x64), saved in the real diffusers layout so sd-qzo loads
it like SD3.5; plus a fine-tuning set that teaches a colour the model has never
seen ("vermilion", an orange-red: the word and the hue are absent from
pretraining), a held-out validation set of it and preview prompts.

What is trained and what is not:
  vae           AutoencoderKL, SD3 style (16 latent channels, no quant convs, 8x
                down-sampling), trained first on reconstruction (L1 + L2 + tiny KL) of
                the pretraining images plus 10% uncaptioned ones in every colour, the
                new one included (a generic codec, as SD3's VAE is);
                scaling_factor / shift_factor then set from its latents' statistics.
  transformer   SD3Transformer2DModel (4 joint blocks, 2 heads x 64, QK RMSNorm),
                trained with SD3's rectified-flow loss (logit-normal sigmas, x_t =
                (1-s) x0 + s n, target n - x0) on the frozen VAE latents, with
                caption dropout (empty prompt) so classifier-free guidance works,
                bf16 autocast, EMA weights saved.
  text encoders CLIP-L-like (quick_gelu), CLIP-G-like (gelu) and a T5 encoder
                (gated-gelu) stay at their seeded RANDOM initialisation: the MMDiT
                learns to read their outputs. Only the tokenizers are fitted to the
                caption vocabulary (CLIP BPE by tools/make_tokenizer_fixtures.py's
                learner, T5 by a SentencePiece unigram model).
The conditioning follows SD3 exactly: CLIP-L and CLIP-G penultimate states
concatenated (32 + 64) and zero-padded to T5's d_model (128 = joint_attention_dim),
T5 tokens appended; pooled = [pooled_L, pooled_G] (96). T5 lengths 32/77/128/256
are mixed during training, so the model works with a short T5 sequence (fast on
a CPU) and with the pipeline's default 256.

Outputs under --out (default demo/):
  model/                 the pipeline (save_pretrained, safetensors, fp16 weights)
  pretrain_log.txt       settings, losses, timings
  pretrained_samples.png samples by diffusers' pipeline from the saved model
  finetune/, val/        PNGs + captions.txt (filename<TAB>caption) of the new colour
  prompts.txt            preview prompts, with and without the new colour

Run (GPU):   python3 tools/make_demo_model.py --out demo --device cuda  (~4-5 min on an H100;
              scripts/gpu/make-demo.sh does it in one go)
     (CPU):   venv/bin/python tools/make_demo_model.py --out /tmp/demo --quick
Needs torch, diffusers, transformers, sentencepiece, regex, Pillow.
"""
import argparse
import copy
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_tokenizer_fixtures as clipbpe  # noqa: E402  (the CLIP BPE learner and file writer)

# ---------------------------------------------------------------- the dataset

RES = 64
SHAPES = ["circle", "square", "triangle", "diamond"]
COLOURS = {"red": (200, 30, 35), "green": (40, 160, 60), "blue": (40, 80, 210), "yellow": (235, 205, 40),
           "purple": (130, 50, 170), "white": (245, 245, 245), "black": (20, 20, 20)}
NEW_COLOUR = ("vermilion", (245, 95, 20))   # never in pretraining: the fine-tuning concept
BACKGROUNDS = {"white": (235, 235, 235), "black": (25, 25, 25), "grey": (128, 128, 128), "blue": (60, 90, 170),
               "green": (60, 140, 70), "yellow": (220, 200, 80)}
TEXTURES = ["plain", "plain", "striped", "checkered", "dotted"]   # plain twice as likely
SIZES = {"small": (7.0, 9.0), "big": (13.0, 16.0)}                 # radius range in pixels
POSITIONS = {"on the left": (16, 32), "on the right": (48, 32), "at the top": (32, 16),
             "at the bottom": (32, 48), "in the center": (32, 32)}


def random_spec(rng, colours):
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = list(colours)[rng.integers(len(colours))]
    bgs = [b for b in BACKGROUNDS if b != colour]
    return dict(shape=shape, colour=colour, rgb=colours[colour], bg=bgs[rng.integers(len(bgs))],
                texture=TEXTURES[rng.integers(len(TEXTURES))], size=list(SIZES)[rng.integers(len(SIZES))],
                pos=list(POSITIONS)[rng.integers(len(POSITIONS))], seed=int(rng.integers(1 << 31)))


def caption(spec, full=True, rng=None):
    bg = ("" if spec["texture"] == "plain" else spec["texture"] + " ") + spec["bg"] + " background"
    if full:
        return f"a {spec['size']} {spec['colour']} {spec['shape']} {spec['pos']}, {bg}"
    # shorter variants, so prompts that leave out size or background also work
    k = rng.integers(3)
    if k == 0:
        return f"a {spec['colour']} {spec['shape']} {spec['pos']}, {bg}"
    if k == 1:
        return f"a {spec['size']} {spec['colour']} {spec['shape']} {spec['pos']}"
    return f"a {spec['colour']} {spec['shape']} {spec['pos']}"


def render(spec):
    """(64,64,3) uint8, drawn at 2x and box-filtered (anti-aliased edges)."""
    rng = np.random.default_rng(spec["seed"])
    s = 2 * RES
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / 2 + 0.25
    bg = np.array(BACKGROUNDS[spec["bg"]], np.float32) + rng.uniform(-10, 10, 3)
    alt = bg * 0.6 if bg.mean() > 110 else bg + (255 - bg) * 0.35     # texture tone
    period = rng.choice([6.0, 8.0])
    ph = rng.uniform(0, period)
    if spec["texture"] == "striped":
        t = (xx if rng.random() < 0.5 else yy) + ph
        m = (t % period) < period / 2
    elif spec["texture"] == "checkered":
        m = (((xx + ph) // period + (yy + ph) // period) % 2) == 0
    elif spec["texture"] == "dotted":
        m = ((xx + ph) % period - period / 2) ** 2 + ((yy + ph) % period - period / 2) ** 2 < (period / 4) ** 2
    else:
        m = np.zeros_like(xx, bool)
    img = np.where(m[..., None], alt, bg)
    cx, cy = POSITIONS[spec["pos"]]
    cx, cy = cx + rng.uniform(-3, 3), cy + rng.uniform(-3, 3)
    r = rng.uniform(*SIZES[spec["size"]])
    dx, dy = xx - cx, yy - cy
    if spec["shape"] == "circle":
        inside = dx * dx + dy * dy < r * r
    elif spec["shape"] == "square":
        inside = np.maximum(abs(dx), abs(dy)) < 0.85 * r
    elif spec["shape"] == "diamond":
        inside = abs(dx) + abs(dy) < 1.15 * r
    else:  # triangle, apex up
        top, base = cy - r, cy + 0.75 * r
        inside = (yy <= base) & (abs(dx) <= (yy - top) / (base - top) * r)
    fg = np.array(spec["rgb"], np.float32) + rng.uniform(-12, 12, 3)
    img = np.where(inside[..., None], fg, img)
    img = img.reshape(RES, 2, RES, 2, 3).mean(axis=(1, 3))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def render_all(specs):
    """Renders in worker processes (each image has its own seed, so the result is the same)."""
    if len(specs) < 2000 or "fork" not in mp.get_all_start_methods():
        return np.stack([render(s) for s in specs])
    with mp.get_context("fork").Pool(min(16, os.cpu_count() or 1)) as pool:
        return np.stack(pool.map(render, specs, chunksize=250))


def make_set(n, rng, colours, p_full=0.8):
    specs = [random_spec(rng, colours) for _ in range(n)]
    caps = [caption(s, full=rng.random() < p_full, rng=rng) for s in specs]
    return render_all(specs), caps, specs


# ---------------------------------------------------------------- tokenizers

def build_tokenizers(tok_root, corpus):
    """CLIP BPE (learnt until every corpus word is one token) in SD3's two flavours, and a
    SentencePiece unigram T5 tokenizer with T5's ids (pad 0, eos 1, unk 2, no bos)."""
    import sentencepiece as spm
    merges = clipbpe.learn_merges("\n".join(corpus), 5000)
    clipbpe.write_tokenizer(os.path.join(tok_root, "tokenizer"), merges, "<|endoftext|>")
    clipbpe.write_tokenizer(os.path.join(tok_root, "tokenizer_2"), merges, "!")
    t5dir = os.path.join(tok_root, "tokenizer_3")
    os.makedirs(t5dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "corpus.txt")
        with open(path, "w") as f:
            f.write("\n".join(corpus) + "\n")
        spm.SentencePieceTrainer.train(
            input=path, model_prefix=os.path.join(tmp, "spiece"), model_type="unigram", vocab_size=256,
            hard_vocab_limit=False, character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
            pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", normalization_rule_name="nmt_nfkc",
            num_threads=1, minloglevel=2)
        shutil.copy(os.path.join(tmp, "spiece.model"), os.path.join(t5dir, "spiece.model"))
    with open(os.path.join(t5dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "T5Tokenizer", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
                   "extra_ids": 100, "model_max_length": 512}, f, indent=2)
    return len(merges)


def load_tokenizers(tok_root):
    import sentencepiece as spm
    from transformers import CLIPTokenizer
    tl = CLIPTokenizer.from_pretrained(os.path.join(tok_root, "tokenizer"))
    tg = CLIPTokenizer.from_pretrained(os.path.join(tok_root, "tokenizer_2"))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(tok_root, "tokenizer_3", "spiece.model"))
    return tl, tg, sp


def t5_fast_tokenizer(folder):
    from transformers import T5TokenizerFast
    return T5TokenizerFast.from_pretrained(folder)


# ---------------------------------------------------------------- conditioning (SD3's encode_prompt)

T5_MAX = 256


class Conditioner:
    """Tokenises like SD3's pipeline (CLIP: 77, pad to max; T5: ids + </s>, pad 0 to T5_MAX) and
    assembles context (B, 77 + L, d_t5) and pooled (B, proj_L + proj_G) from the frozen encoders."""

    def __init__(self, tok_l, tok_g, sp, te1, te2, te3):
        self.tok_l, self.tok_g, self.sp = tok_l, tok_g, sp
        self.te1, self.te2, self.te3 = te1, te2, te3

    def tokenize(self, captions):
        kw = dict(padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        il = self.tok_l(captions, **kw).input_ids
        ig = self.tok_g(captions, **kw).input_ids
        it = torch.zeros(len(captions), T5_MAX, dtype=torch.long)
        for i, c in enumerate(captions):
            ids = self.sp.encode(c)[:T5_MAX - 1] + [1]
            it[i, :len(ids)] = torch.tensor(ids)
        return il, ig, it

    @torch.no_grad()
    def encode(self, il, ig, it):
        o1 = self.te1(il, output_hidden_states=True)
        o2 = self.te2(ig, output_hidden_states=True)
        clip = torch.cat([o1.hidden_states[-2], o2.hidden_states[-2]], dim=-1)
        t5 = self.te3(it)[0]
        clip = F.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return torch.cat([clip, t5], dim=1), torch.cat([o1.text_embeds, o2.text_embeds], dim=-1)


# ---------------------------------------------------------------- models

def make_models(vocab_clip, eos_id, bos_id, vocab_t5):
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(32, 64, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=16, sample_size=RES, use_quant_conv=False, use_post_quant_conv=False,
        mid_block_add_attention=True, scaling_factor=1.0, shift_factor=0.0)
    clip = dict(vocab_size=vocab_clip, max_position_embeddings=77, eos_token_id=eos_id, bos_token_id=bos_id,
                pad_token_id=eos_id, attention_dropout=0.0, dropout=0.0)
    te1 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=32, intermediate_size=128, projection_dim=32,
                                                     num_hidden_layers=3, num_attention_heads=2,
                                                     hidden_act="quick_gelu", **clip))
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=64, intermediate_size=256, projection_dim=64,
                                                     num_hidden_layers=3, num_attention_heads=4,
                                                     hidden_act="gelu", **clip))
    te3 = T5EncoderModel(T5Config(vocab_size=vocab_t5, d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4,
                                  relative_attention_num_buckets=32, relative_attention_max_distance=128,
                                  feed_forward_proj="gated-gelu", dropout_rate=0.0, is_encoder_decoder=False,
                                  use_cache=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    mmdit = SD3Transformer2DModel(
        sample_size=RES // 8, patch_size=2, in_channels=16, out_channels=16, num_layers=4,
        attention_head_dim=64, num_attention_heads=2, joint_attention_dim=128, caption_projection_dim=128,
        pooled_projection_dim=32 + 64, pos_embed_max_size=16, qk_norm="rms_norm", dual_attention_layers=())
    return vae, te1, te2, te3, mmdit


def nparams(m):
    return sum(p.numel() for p in m.parameters())


def lr_at(step, progress, base, warmup):
    """Linear warm-up, then cosine to 10% over progress in [0, 1] (steps or time, whichever runs out first)."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def progress(step, steps, t0, limit):
    return max(step / steps, (time.time() - t0) / limit)


def to_unit(u8):
    """uint8 (B,H,W,3) on device -> float (B,3,H,W) in [-1, 1]."""
    return u8.permute(0, 3, 1, 2).float() / 127.5 - 1


# ---------------------------------------------------------------- training

def train_vae(vae, imgs, a, dev, log):
    opt = torch.optim.AdamW(vae.parameters(), lr=a.vae_lr, weight_decay=0.0)
    g = torch.Generator(dev).manual_seed(a.seed + 1)
    t0, n = time.time(), imgs.shape[0]
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    vae.train()
    for step in range(a.vae_steps):
        prog = progress(step, a.vae_steps, t0, a.vae_time_limit)
        if prog >= 1:
            log(f"vae: time limit {a.vae_time_limit}s reached at step {step}")
            break
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, prog, a.vae_lr, min(200, a.vae_steps // 10 + 1))
        x = to_unit(imgs[torch.randint(n, (a.vae_batch,), generator=g, device=dev)])
        with torch.autocast(**amp):
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=g, device=dev)
            rec = vae.decode(z).sample.float()
        l1, l2 = (rec - x).abs().mean(), ((rec - x) ** 2).mean()
        kl = post.kl().float().mean() / x[0].numel()   # per pixel, like the reconstruction terms
        loss = l1 + l2 + a.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % a.log_every == 0 or step == a.vae_steps - 1:
            log(f"vae step {step:5d}  l1 {l1.item():.4f}  l2 {l2.item():.5f}  kl/px {kl.item():.3f}  "
                f"{time.time() - t0:.0f}s")
    vae.eval()
    return time.time() - t0


@torch.no_grad()
def encode_means(vae, imgs, dev, bs=512):
    out = [vae.encode(to_unit(imgs[i:i + bs])).latent_dist.mean.float() for i in range(0, imgs.shape[0], bs)]
    return torch.cat(out)


def flow_batch(x0, gen, shift, dev):
    """SD3 rectified flow: logit-normal sigma (shifted as the scheduler shifts), x_t and target."""
    u = torch.sigmoid(torch.randn(x0.shape[0], generator=gen, device=dev))
    sigma = shift * u / (1 + (shift - 1) * u)
    noise = torch.randn(x0.shape, generator=gen, device=dev)
    s = sigma.view(-1, 1, 1, 1)
    return (1 - s) * x0 + s * noise, sigma * 1000, noise - x0


def train_mmdit(mmdit, lat, ids, empty, cond, a, dev, log):
    il_all, ig_all, it_all = ids
    opt = torch.optim.AdamW(mmdit.parameters(), lr=a.lr, weight_decay=0.01, betas=(0.9, 0.99))
    ema = copy.deepcopy(mmdit).requires_grad_(False)
    g = torch.Generator(dev).manual_seed(a.seed + 2)
    hrng = np.random.default_rng(a.seed + 3)
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    t0, n, run = time.time(), lat.shape[0], []
    mmdit.train()
    for step in range(a.steps):
        prog = progress(step, a.steps, t0, a.time_limit)
        if prog >= 1:
            log(f"mmdit: time limit {a.time_limit}s reached at step {step}")
            break
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, prog, a.lr, min(500, a.steps // 10 + 1))
        idx = torch.randint(n, (a.batch,), generator=g, device=dev)
        drop = (torch.rand(a.batch, generator=g, device=dev) < a.caption_dropout).view(-1, 1)
        il = torch.where(drop, empty[0], il_all[idx])
        ig = torch.where(drop, empty[1], ig_all[idx])
        L = int(hrng.choice(a.t5_lengths))
        it = torch.where(drop, empty[2][:, :L], it_all[idx, :L])
        ctx, pooled = cond.encode(il, ig, it)
        xt, t, target = flow_batch(lat[idx], g, a.shift, dev)
        with torch.autocast(**amp):
            pred = mmdit(hidden_states=xt, timestep=t, encoder_hidden_states=ctx, pooled_projections=pooled).sample
        loss = F.mse_loss(pred.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(mmdit.parameters(), 1.0)
        opt.step()
        d = min(a.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(mmdit.parameters()), 1 - d)
        run.append(loss.detach())
        if step % a.log_every == 0 or step == a.steps - 1:
            m = torch.stack(run).mean().item()
            run = []
            log(f"mmdit step {step:6d}  loss {m:.4f}  lr {opt.param_groups[0]['lr']:.2e}  {time.time() - t0:.0f}s")
    return ema.eval(), time.time() - t0


@torch.no_grad()
def fixed_val_loss(mmdit, lat, il, ig, it, cond, dev, seed, shift, t5_len=T5_MAX):
    """Mean flow-matching loss with fixed noise and 8 fixed sigmas per image (comparable across models)."""
    g = torch.Generator("cpu").manual_seed(seed)
    noise = torch.randn((8,) + tuple(lat.shape), generator=g).to(dev)
    u = (torch.arange(8, dtype=torch.float32) + 0.5) / 8
    sig = (shift * u / (1 + (shift - 1) * u)).to(dev)
    ctx, pooled = cond.encode(il.to(dev), ig.to(dev), it[:, :t5_len].to(dev))
    tot = 0.0
    for k in range(8):
        s = sig[k]
        xt = (1 - s) * lat + s * noise[k]
        pred = mmdit(hidden_states=xt, timestep=(s * 1000).expand(lat.shape[0]), encoder_hidden_states=ctx,
                     pooled_projections=pooled).sample
        tot += F.mse_loss(pred.float(), noise[k] - lat).item()
    return tot / 8


# ---------------------------------------------------------------- outputs

def save_pngs(folder, imgs, caps):
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "captions.txt"), "w") as f:
        for i, (im, c) in enumerate(zip(imgs, caps)):
            name = f"{i:03d}.png"
            Image.fromarray(im).save(os.path.join(folder, name))
            f.write(f"{name}\t{c}\n")


def grid_png(path, rows, labels, scale=2):
    """rows: list (per prompt) of lists of PIL images; a text strip above each row."""
    from PIL import Image, ImageDraw
    tile, strip = RES * scale, 14
    cols = max(len(r) for r in rows)
    out = Image.new("RGB", (max(cols * tile, 360), len(rows) * (tile + strip)), (255, 255, 255))
    d = ImageDraw.Draw(out)
    for i, (r, lab) in enumerate(zip(rows, labels)):
        y = i * (tile + strip)
        d.text((2, y + 1), lab, fill=(0, 0, 0))
        for j, im in enumerate(r):
            out.paste(im.resize((tile, tile), Image.NEAREST), (j * tile, y + strip))
    out.save(path)


PROMPTS = [
    f"a big {NEW_COLOUR[0]} circle in the center, white background",
    f"a small {NEW_COLOUR[0]} square on the left, black background",
    f"a big {NEW_COLOUR[0]} triangle at the bottom, striped blue background",
    "a big red circle in the center, white background",
    "a small yellow square on the left, black background",
    "a big blue triangle at the bottom, striped green background",
    "a purple diamond at the top, checkered grey background",
    "a big white circle on the right, dotted black background",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="demo")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny step counts and data (CPU smoke test)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--n-train", type=int, default=40000)
    ap.add_argument("--vae-steps", type=int, default=4000)
    ap.add_argument("--vae-batch", type=int, default=64)
    ap.add_argument("--vae-lr", type=float, default=1e-3)
    ap.add_argument("--kl-weight", type=float, default=1e-4, help="weight of the per-pixel KL term")
    ap.add_argument("--vae-time-limit", type=float, default=90, help="seconds for the VAE phase")
    ap.add_argument("--steps", type=int, default=12000, help="MMDiT steps")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--caption-dropout", type=float, default=0.1)
    ap.add_argument("--shift", type=float, default=1.0, help="flow shift (SD3.5: 3.0 at 128x128 latents; 8x8 here)")
    ap.add_argument("--t5-lengths", type=int, nargs="+", default=[32, 77, 128, 256])
    ap.add_argument("--time-limit", type=float, default=210, help="seconds for the MMDiT phase")
    ap.add_argument("--n-finetune", type=int, default=24)
    ap.add_argument("--n-val", type=int, default=16)
    ap.add_argument("--sample-steps", type=int, default=28)
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--log-every", type=int, default=250)
    ap.add_argument("--dtype", choices=["fp16", "fp32"], default="fp16", help="weights as saved")
    a = ap.parse_args()
    if a.quick:
        a.n_train, a.vae_steps, a.vae_batch, a.steps, a.batch = 200, 8, 4, 8, 8
        a.sample_steps, a.log_every, a.n_finetune, a.n_val = 3, 4, 8, 4

    t_start = time.time()
    torch.manual_seed(a.seed)
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    os.makedirs(a.out, exist_ok=True)
    logf = open(os.path.join(a.out, "pretrain_log.txt"), "w")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    import diffusers
    import transformers
    log(f"make_demo_model.py  torch {torch.__version__}  diffusers {diffusers.__version__}  "
        f"transformers {transformers.__version__}  device {dev}")
    log("settings: " + json.dumps(vars(a)))
    log("text encoders: seeded random initialisation, NOT trained (the MMDiT learns to read them)")

    # 1. data
    rng = np.random.default_rng(a.seed)
    t0 = time.time()
    imgs, caps, _ = make_set(a.n_train, rng, COLOURS)
    new = {NEW_COLOUR[0]: NEW_COLOUR[1]}
    # The VAE is a generic image codec (SD3's knows every colour): it also sees uncaptioned images
    # in the new colour, so fine-tuning can encode them. The MMDiT and the captions never do.
    vae_extra, _, _ = make_set(a.n_train // 10, rng, dict(COLOURS, **new))
    ft_imgs, ft_caps, _ = make_set(a.n_finetune, rng, new, p_full=1.0)
    va_imgs, va_caps, va_specs = make_set(a.n_val, rng, new, p_full=1.0)
    # the same layouts in known colours: the pretrained model's loss there is the bar for the new one
    kn_specs = [dict(s, colour=c, rgb=COLOURS[c]) for s, c in
                zip(va_specs, rng.choice([c for c in COLOURS if c not in ("white", "black")], len(va_specs)))]
    kn_specs = [dict(s, bg="grey") if s["bg"] == s["colour"] else s for s in kn_specs]
    kn_imgs, kn_caps = np.stack([render(s) for s in kn_specs]), [caption(s) for s in kn_specs]
    log(f"data: {a.n_train} pretraining images ({len(set(caps))} distinct captions) + {len(vae_extra)} uncaptioned "
        f"for the VAE only (all colours), {a.n_finetune} fine-tune + "
        f"{a.n_val} val images of '{NEW_COLOUR[0]}' {NEW_COLOUR[1]}, {time.time() - t0:.1f}s")
    log(f"  e.g. '{caps[0]}' | '{caps[1]}' | '{ft_caps[0]}'")
    if dev.type == "cuda":   # only now: the renderer forks worker processes, which must not inherit CUDA
        log(f"device: {torch.cuda.get_device_name(dev)}")

    # 2. tokenizers (vocabulary from every word the demo uses, the new colour included)
    tok_root = os.path.join(a.out, "model")
    corpus = sorted(set(caps)) + ft_caps + va_caps + PROMPTS
    nm = build_tokenizers(tok_root, corpus)
    tl, tg, sp = load_tokenizers(tok_root)
    bos, eos = tl.convert_tokens_to_ids("<|startoftext|>"), tl.convert_tokens_to_ids("<|endoftext|>")
    vocab_t5 = sp.get_piece_size() + 100          # + T5Tokenizer's 100 <extra_id_*>
    vocab_t5 += -vocab_t5 % 8
    log(f"tokenizers: CLIP BPE {len(tl)} tokens ({nm} merges), T5 unigram {sp.get_piece_size()} pieces")

    # 3. models
    vae, te1, te2, te3, mmdit = make_models(len(tl), eos, bos, vocab_t5)
    for m in (vae, te1, te2, te3, mmdit):
        m.to(dev)
    for m in (te1, te2, te3):
        m.eval().requires_grad_(False)
    log("params: " + ", ".join(f"{k} {nparams(m) / 1e6:.3f}M" for k, m in
                               [("vae", vae), ("clip_l", te1), ("clip_g", te2), ("t5", te3), ("mmdit", mmdit)]))
    cond = Conditioner(tl, tg, sp, te1, te2, te3)

    # 4. VAE
    imgs_d = torch.from_numpy(imgs).to(dev)
    t_vae = train_vae(vae, torch.cat([imgs_d, torch.from_numpy(vae_extra).to(dev)]), a, dev, log)
    vae.requires_grad_(False)
    with torch.no_grad():
        for name, im in (("known colours", kn_imgs), (NEW_COLOUR[0], va_imgs)):
            x = to_unit(torch.from_numpy(im).to(dev))
            rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
            log(f"vae held-out reconstruction ({name}): mean |error| {((rec - x).abs().mean() * 127.5).item():.2f}"
                " / 255")
    lat = encode_means(vae, imgs_d, dev)
    shift_f, scale_f = lat.mean().item(), 1.0 / lat.std().item()
    vae.register_to_config(scaling_factor=scale_f, shift_factor=shift_f)
    lat = (lat - shift_f) * scale_f
    log(f"latents {tuple(lat.shape[1:])}: shift_factor {shift_f:.4f}, scaling_factor {scale_f:.4f}")
    del imgs_d

    # 5. MMDiT
    t0 = time.time()
    uniq = sorted(set(caps))
    ul, ug, ut = cond.tokenize(uniq)
    where = {c: i for i, c in enumerate(uniq)}
    sel = torch.tensor([where[c] for c in caps])
    ids = (ul[sel].to(dev), ug[sel].to(dev), ut[sel].to(dev))
    empty = tuple(t.to(dev) for t in cond.tokenize([""]))
    log(f"tokenised {len(uniq)} captions in {time.time() - t0:.1f}s; longest T5 caption "
        f"{int((ut != 0).sum(1).max())} tokens")
    mmdit, t_mm = train_mmdit(mmdit, lat, ids, empty, cond, a, dev, log)
    mmdit.requires_grad_(False)

    def val(imgs_np, cs, t5_len=T5_MAX):
        x0 = (encode_means(vae, torch.from_numpy(imgs_np).to(dev), dev) - shift_f) * scale_f
        return fixed_val_loss(mmdit, x0, *cond.tokenize(cs), cond, dev, a.seed + 9, a.shift, t5_len)
    vl_new, vl_known = val(va_imgs, va_caps), val(kn_imgs, kn_caps)
    vl_new32 = val(va_imgs, va_caps, 32)
    log(f"fixed-noise val loss (8 sigmas): new colour '{NEW_COLOUR[0]}' {vl_new:.4f} (T5 len 32: {vl_new32:.4f}), "
        f"same layouts in known colours {vl_known:.4f}")

    # 6. pipeline: save, reload, check conditioning against diffusers' encode_prompt, sample
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=a.shift)
    pipe = StableDiffusion3Pipeline(transformer=mmdit, scheduler=sched, vae=vae, text_encoder=te1, tokenizer=tl,
                                    text_encoder_2=te2, tokenizer_2=tg, text_encoder_3=te3,
                                    tokenizer_3=t5_fast_tokenizer(os.path.join(tok_root, "tokenizer_3")))
    pipe.set_progress_bar_config(disable=True)
    save_dtype = torch.float16 if a.dtype == "fp16" else torch.float32
    for m in (mmdit, vae, te1, te2, te3):
        m.to(save_dtype)
    tmp_tok = tempfile.mkdtemp()
    for k in ("tokenizer", "tokenizer_2", "tokenizer_3"):   # keep our files (the ones sd-qzo's C reads)
        shutil.move(os.path.join(tok_root, k), os.path.join(tmp_tok, k))
    pipe.save_pretrained(tok_root, safe_serialization=True)
    for k in ("tokenizer", "tokenizer_2", "tokenizer_3"):
        shutil.rmtree(os.path.join(tok_root, k), ignore_errors=True)
        shutil.move(os.path.join(tmp_tok, k), os.path.join(tok_root, k))
    shutil.rmtree(tmp_tok)
    mi_path = os.path.join(tok_root, "model_index.json")
    mi = json.load(open(mi_path))   # the class names SD3.5's own model_index.json uses
    mi.update(tokenizer=["transformers", "CLIPTokenizer"], tokenizer_2=["transformers", "CLIPTokenizer"],
              tokenizer_3=["transformers", "T5TokenizerFast"])
    with open(mi_path, "w") as f:
        json.dump(mi, f, indent=2)
    del pipe

    pipe = StableDiffusion3Pipeline.from_pretrained(tok_root, torch_dtype=torch.float32).to(dev)
    pipe.set_progress_bar_config(disable=True)
    cond2 = Conditioner(tl, tg, sp, pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3)
    with torch.no_grad():
        pe, _, pp, _ = pipe.encode_prompt(PROMPTS[:3], PROMPTS[:3], PROMPTS[:3], device=dev,
                                          do_classifier_free_guidance=False, max_sequence_length=T5_MAX)
        ctx, pooled = cond2.encode(*(t.to(dev) for t in cond2.tokenize(PROMPTS[:3])))
    d_ctx, d_pool = (pe - ctx).abs().max().item(), (pp - pooled).abs().max().item()
    log(f"reloaded pipeline: encode_prompt vs training conditioning max|diff| context {d_ctx:.2e}, pooled {d_pool:.2e}")
    if d_ctx > 1e-4 or d_pool > 1e-4:
        raise SystemExit("the training conditioning differs from diffusers' encode_prompt (tokenizer mismatch?)")

    t0 = time.time()
    prompts = PROMPTS[:4] if a.quick else PROMPTS
    seeds = [0, 1] if a.quick else [0, 1, 2, 3]
    rows = []
    for p in prompts:   # one batch per prompt, one generator per seed
        out = pipe(prompt=[p] * len(seeds), height=RES, width=RES, num_inference_steps=a.sample_steps,
                   guidance_scale=a.cfg, generator=[torch.Generator(dev).manual_seed(s) for s in seeds])
        rows.append(out.images)
    grid_png(os.path.join(a.out, "pretrained_samples.png"), rows, prompts)
    log(f"pretrained_samples.png: {len(prompts)} prompts x {len(seeds)} seeds, {a.sample_steps} steps, "
        f"cfg {a.cfg}, {time.time() - t0:.1f}s (rows with '{NEW_COLOUR[0]}' are the concept to teach)")

    # 7. fine-tuning data and preview prompts
    save_pngs(os.path.join(a.out, "finetune"), ft_imgs, ft_caps)
    save_pngs(os.path.join(a.out, "val"), va_imgs, va_caps)
    with open(os.path.join(a.out, "prompts.txt"), "w") as f:
        f.write("\n".join(PROMPTS) + "\n")

    size = {k: sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fs in os.walk(os.path.join(tok_root, k))
                   for fn in fs) for k in sorted(os.listdir(tok_root)) if os.path.isdir(os.path.join(tok_root, k))}
    log("saved " + tok_root + ": " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in size.items())
        + f"; total {sum(size.values()) / 1e6:.2f} MB ({a.dtype})")
    log(f"summary: vae {t_vae:.0f}s, mmdit {t_mm:.0f}s, total {time.time() - t_start:.0f}s; "
        f"val loss new colour {vl_new:.4f} vs known colours {vl_known:.4f}")
    logf.close()


if __name__ == "__main__":
    main()
