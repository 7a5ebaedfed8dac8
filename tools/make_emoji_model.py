#!/usr/bin/env python3
"""A mid-size SD3-architecture pipeline pretrained on real images: the emoji of Noto Color Emoji.

The test bed for sd-qzo's learning experiments (does QZO on the int4 scales learn a new domain?).
Pretrained by backprop on tools/make_emoji_dataset.py's pretrain/ split (every emoji group except
"Animals & Nature" and "Food & Drink"), so fine-tuning on animals/ or food/ teaches something the
model has not seen, and control/val (held-out emoji of the pretraining groups) measures forgetting.
Saved in the real diffusers layout (as demo/model), so sd-qzo loads it like SD3.5.

  vae           AutoencoderKL as SD3's (16 latent channels, no quant convs, 4 blocks = 8x down),
                small width (--vae-channels, default 32 64 64 64), trained first on reconstruction
                (L1 + L2 + tiny KL) of the pretrain + animals/train + food/train images, uncaptioned,
                with flips (a generic codec, as SD3's VAE knows every image); val splits held out.
                scaling_factor / shift_factor from the latents' statistics.
  transformer   SD3Transformer2DModel, default 8 joint blocks, 4 heads x 64 (hidden 256), QK
                RMSNorm as SD3.5, patch 2, pos_embed_max_size 32 (up to 512 px images); rectified
                flow loss (logit-normal sigmas shifted as the scheduler's shift, x_t = (1-s) x0 + s n,
                target n - x0), caption dropout 10% (empty prompt: CFG works), bf16 autocast on CUDA,
                AdamW, warm-up + cosine, EMA weights saved.
  text encoders CLIP-L-like, CLIP-G-like and a T5 encoder, small and at their seeded RANDOM
                initialisation (as demo/model); the MMDiT learns to read them. Their embeddings are
                precomputed once per caption and T5 length (32/77/128/256 mixed in training, so the
                model works with sd-qzo's default 256 and with short T5 sequences).
  tokenizers    --tokenizers fit (default): CLIP BPE and T5 SentencePiece fitted to the emoji
                caption vocabulary (every split's words, as SD3's tokenizers know every word),
                with tools/make_demo_model.py's code; --tokenizers demo copies demo/model's, whose
                102-merge vocabulary spells most emoji words letter by letter.

Outputs under --out:
  model/                 the pipeline (fp16 weights by default)
  pretrain_log.txt       settings, losses, validation losses (fixed noise, 8 sigmas) on every split
  pretrained_samples.png diffusers' pipeline from the saved model: prompts of every split
  prompts.txt            preview prompts (pretraining, control, animals, food)

Run (GPU):  python tools/make_emoji_model.py --data DATA --out OUT --device cuda     (~4 min, H100)
     (CPU): python tools/make_emoji_model.py --data DATA --out /tmp/em --quick
DATA is tools/make_emoji_dataset.py's output (at --size pixels; other sizes are resized).
Needs torch, diffusers, transformers, sentencepiece, safetensors, regex, Pillow.
"""
import argparse
import copy
import json
import math
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_demo_model as demo  # noqa: E402  (tokenizers, conditioning, schedules)
import make_tokenizer_fixtures as clipbpe  # noqa: E402

SPLITS = ["pretrain", "control/val", "animals/train", "animals/val", "food/train", "food/val"]


# ---------------------------------------------------------------- data

def load_split(root, split, size):
    from PIL import Image
    path = os.path.join(root, split, "captions.txt")
    if not os.path.exists(path):
        return np.zeros((0, size, size, 3), np.uint8), []
    imgs, caps = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            name, cap = line.split("\t", 1)
            im = Image.open(os.path.join(root, split, name)).convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.LANCZOS)
            imgs.append(np.asarray(im))
            caps.append(cap)
    return np.stack(imgs), caps


# ---------------------------------------------------------------- tokenizers

def build_tokenizers(tok_root, corpus, t5_vocab):
    """As make_demo_model.build_tokenizers, with a T5 vocabulary size for a larger corpus."""
    import sentencepiece as spm
    merges = clipbpe.learn_merges("\n".join(corpus), 20000)
    clipbpe.write_tokenizer(os.path.join(tok_root, "tokenizer"), merges, "<|endoftext|>")
    clipbpe.write_tokenizer(os.path.join(tok_root, "tokenizer_2"), merges, "!")
    t5dir = os.path.join(tok_root, "tokenizer_3")
    os.makedirs(t5dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "corpus.txt")
        with open(path, "w") as f:
            f.write("\n".join(corpus) + "\n")
        spm.SentencePieceTrainer.train(
            input=path, model_prefix=os.path.join(tmp, "spiece"), model_type="unigram", vocab_size=t5_vocab,
            hard_vocab_limit=False, character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
            pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", normalization_rule_name="nmt_nfkc",
            num_threads=1, minloglevel=2)
        shutil.copy(os.path.join(tmp, "spiece.model"), os.path.join(t5dir, "spiece.model"))
    with open(os.path.join(t5dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "T5Tokenizer", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
                   "extra_ids": 100, "model_max_length": 512}, f, indent=2)
    return len(merges)


# ---------------------------------------------------------------- models

def make_models(a, vocab_clip, eos_id, bos_id, vocab_t5):
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel
    ch = tuple(a.vae_channels)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=ch,
        down_block_types=("DownEncoderBlock2D",) * len(ch), up_block_types=("UpDecoderBlock2D",) * len(ch),
        layers_per_block=a.vae_layers, norm_num_groups=16, sample_size=a.size, use_quant_conv=False,
        use_post_quant_conv=False, mid_block_add_attention=True, scaling_factor=1.0, shift_factor=0.0)
    clip = dict(vocab_size=vocab_clip, max_position_embeddings=77, eos_token_id=eos_id, bos_token_id=bos_id,
                pad_token_id=eos_id, attention_dropout=0.0, dropout=0.0)
    te1 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=32, intermediate_size=128, projection_dim=32,
                                                     num_hidden_layers=3, num_attention_heads=2,
                                                     hidden_act="quick_gelu", **clip))
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=64, intermediate_size=256, projection_dim=64,
                                                     num_hidden_layers=3, num_attention_heads=4,
                                                     hidden_act="gelu", **clip))
    te3 = T5EncoderModel(T5Config(vocab_size=vocab_t5, d_model=a.t5_width, d_kv=32, d_ff=2 * a.t5_width,
                                  num_layers=2, num_heads=a.t5_width // 32,
                                  relative_attention_num_buckets=32, relative_attention_max_distance=128,
                                  feed_forward_proj="gated-gelu", dropout_rate=0.0, is_encoder_decoder=False,
                                  use_cache=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    hidden = a.heads * 64
    mmdit = SD3Transformer2DModel(
        sample_size=a.size // 8, patch_size=2, in_channels=16, out_channels=16, num_layers=a.layers,
        attention_head_dim=64, num_attention_heads=a.heads, joint_attention_dim=a.t5_width,
        caption_projection_dim=hidden, pooled_projection_dim=32 + 64, pos_embed_max_size=a.pos_embed_max_size,
        qk_norm="rms_norm", dual_attention_layers=())
    return vae, te1, te2, te3, mmdit


# ---------------------------------------------------------------- training

def train_vae(vae, imgs, a, dev, log):
    opt = torch.optim.AdamW(vae.parameters(), lr=a.vae_lr, weight_decay=0.0)
    g = torch.Generator(dev).manual_seed(a.seed + 1)
    t0, n = time.time(), imgs.shape[0]
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    vae.train()
    step = 0
    for step in range(a.vae_steps):
        prog = demo.progress(step, a.vae_steps, t0, a.vae_seconds)
        if prog >= 1:
            log(f"vae: time budget {a.vae_seconds}s reached at step {step}")
            break
        for grp in opt.param_groups:
            grp["lr"] = demo.lr_at(step, prog, a.vae_lr, min(200, a.vae_steps // 10 + 1))
        x = demo.to_unit(imgs[torch.randint(n, (a.vae_batch,), generator=g, device=dev)])
        flip = torch.rand(a.vae_batch, generator=g, device=dev) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        with torch.autocast(**amp):
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=g, device=dev)
            rec = vae.decode(z).sample.float()
        l1, l2 = (rec - x).abs().mean(), ((rec - x) ** 2).mean()
        kl = post.kl().float().mean() / x[0].numel()
        loss = l1 + l2 + a.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % a.log_every == 0 or step == a.vae_steps - 1:
            log(f"vae step {step:5d}  l1 {l1.item():.4f}  l2 {l2.item():.5f}  kl/px {kl.item():.3f}  "
                f"{time.time() - t0:.0f}s")
    else:
        step = a.vae_steps
    vae.eval()
    return time.time() - t0, step


class Embeddings:
    """Precomputed conditioning: context per T5 length for every unique caption (+ the empty one)."""

    def __init__(self, cond, captions, lengths, dev, dtype, bs=256):
        self.uniq = sorted(set(captions)) + [""]
        self.index = {c: i for i, c in enumerate(self.uniq)}
        self.empty = self.index[""]
        il, ig, it = cond.tokenize(self.uniq)
        self.ctx, pooled = {}, []
        for L in lengths:
            parts = []
            for i in range(0, len(self.uniq), bs):
                c, p = cond.encode(il[i:i + bs].to(dev), ig[i:i + bs].to(dev), it[i:i + bs, :L].to(dev))
                parts.append(c.to(dtype))
                if L == lengths[0]:
                    pooled.append(p.to(dtype))
            self.ctx[L] = torch.cat(parts)
        self.pooled = torch.cat(pooled)
        self.longest_t5 = int((it != 0).sum(1).max())

    def ids(self, captions, dev):
        return torch.tensor([self.index[c] for c in captions], device=dev)

    def nbytes(self):
        return sum(t.numel() * t.element_size() for t in self.ctx.values()) + self.pooled.numel() * 2


def train_mmdit(mmdit, lat, cap_ids, emb, a, dev, log, evaluate):
    opt = torch.optim.AdamW(mmdit.parameters(), lr=a.lr, weight_decay=0.01, betas=(0.9, 0.99))
    ema = copy.deepcopy(mmdit).requires_grad_(False)
    g = torch.Generator(dev).manual_seed(a.seed + 2)
    hrng = np.random.default_rng(a.seed + 3)
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    t0, n, run, t_eval = time.time(), lat.shape[0], [], 0.0
    mmdit.train()
    step = 0
    for step in range(a.steps):
        prog = demo.progress(step, a.steps, t0 + t_eval, a.mmdit_seconds)
        if prog >= 1:
            log(f"mmdit: time budget {a.mmdit_seconds}s reached at step {step}")
            break
        for grp in opt.param_groups:
            grp["lr"] = demo.lr_at(step, prog, a.lr, min(a.warmup, a.steps // 10 + 1))
        idx = torch.randint(n, (a.batch,), generator=g, device=dev)
        drop = torch.rand(a.batch, generator=g, device=dev) < a.caption_dropout
        ci = torch.where(drop, torch.full_like(idx, emb.empty), cap_ids[idx])
        L = int(hrng.choice(a.t5_lengths))
        ctx, pooled = emb.ctx[L][ci].float(), emb.pooled[ci].float()
        xt, t, target = demo.flow_batch(lat[idx], g, a.shift, dev)
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
            log(f"mmdit step {step:6d}  loss {m:.4f}  lr {opt.param_groups[0]['lr']:.2e}  "
                f"{time.time() - t0 - t_eval:.0f}s")
        if a.eval_every and step > 0 and step % a.eval_every == 0:
            te = time.time()
            log(f"  ema val: {evaluate(ema)}")
            t_eval += time.time() - te
    else:
        step = a.steps
    return ema.eval(), time.time() - t0 - t_eval, step


@torch.no_grad()
def fixed_val_loss(mmdit, x0, ctx, pooled, dev, seed, shift, bs=128):
    """Mean flow-matching loss with fixed noise and 8 fixed sigmas per image (comparable across models)."""
    g = torch.Generator("cpu").manual_seed(seed)
    noise = torch.randn((8,) + tuple(x0.shape), generator=g).to(dev)
    u = (torch.arange(8, dtype=torch.float32) + 0.5) / 8
    sig = (shift * u / (1 + (shift - 1) * u)).to(dev)
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    tot, cnt = 0.0, 0
    for k in range(8):
        s = sig[k]
        for i in range(0, x0.shape[0], bs):
            xb, nb = x0[i:i + bs], noise[k, i:i + bs]
            xt = (1 - s) * xb + s * nb
            with torch.autocast(**amp):
                pred = mmdit(hidden_states=xt, timestep=(s * 1000).expand(xb.shape[0]),
                             encoder_hidden_states=ctx[i:i + bs].float(), pooled_projections=pooled[i:i + bs].float()).sample
            tot += ((pred.float() - (nb - xb)) ** 2).mean(dim=(1, 2, 3)).sum().item()
            cnt += xb.shape[0]
    return tot / max(cnt, 1)


# ---------------------------------------------------------------- outputs

def grid_png(path, rows, labels, res, scale=2):
    from PIL import Image, ImageDraw
    tile, strip = res * scale, 14
    cols = max(len(r) for r in rows)
    out = Image.new("RGB", (max(cols * tile, 420), len(rows) * (tile + strip)), (255, 255, 255))
    d = ImageDraw.Draw(out)
    for i, (r, lab) in enumerate(zip(rows, labels)):
        y = i * (tile + strip)
        d.text((2, y + 1), lab, fill=(0, 0, 0))
        for j, im in enumerate(r):
            out.paste(im.resize((tile, tile), Image.NEAREST), (j * tile, y + strip))
    out.save(path)


def pick_prompts(caps_by_split, k=2):
    """k captions of each split, deterministic (evenly spaced through the sorted captions)."""
    out = []
    for split in ["pretrain", "control/val", "animals/val", "food/val"]:
        cs = sorted(set(caps_by_split.get(split, [])))
        pref = [c for c in ("an emoji of grinning face", "an emoji of red heart") if c in cs]
        if split == "pretrain" and len(pref) == k:
            out += pref
        elif cs:
            out += [cs[int((j + 0.5) * len(cs) / k)] for j in range(min(k, len(cs)))]
    return out


def save_pipeline(root, mmdit, sched, vae, te1, te2, te3, tl, tg, a):
    from diffusers import StableDiffusion3Pipeline
    pipe = StableDiffusion3Pipeline(transformer=mmdit, scheduler=sched, vae=vae, text_encoder=te1, tokenizer=tl,
                                    text_encoder_2=te2, tokenizer_2=tg, text_encoder_3=te3,
                                    tokenizer_3=demo.t5_fast_tokenizer(os.path.join(root, "tokenizer_3")))
    dt = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    for m in (mmdit, vae, te1, te2, te3):
        m.to(dt)
    tmp_tok = tempfile.mkdtemp()
    for k in ("tokenizer", "tokenizer_2", "tokenizer_3"):   # keep our files (the ones sd-qzo's C reads)
        shutil.move(os.path.join(root, k), os.path.join(tmp_tok, k))
    pipe.save_pretrained(root, safe_serialization=True)
    for k in ("tokenizer", "tokenizer_2", "tokenizer_3"):
        shutil.rmtree(os.path.join(root, k), ignore_errors=True)
        shutil.move(os.path.join(tmp_tok, k), os.path.join(root, k))
    shutil.rmtree(tmp_tok)
    mi_path = os.path.join(root, "model_index.json")
    mi = json.load(open(mi_path))
    mi.update(tokenizer=["transformers", "CLIPTokenizer"], tokenizer_2=["transformers", "CLIPTokenizer"],
              tokenizer_3=["transformers", "T5TokenizerFast"])
    with open(mi_path, "w") as f:
        json.dump(mi, f, indent=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="tools/make_emoji_dataset.py's output folder")
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny model, steps and time (CPU smoke test)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--size", type=int, default=64, help="image side (64: 8x8 latents; 128: 16x16)")
    # VAE
    ap.add_argument("--vae-channels", type=int, nargs="+", default=[32, 64, 64, 64])
    ap.add_argument("--vae-layers", type=int, default=1, help="resnet layers per VAE block")
    ap.add_argument("--vae-seconds", type=float, default=50, help="time budget of the VAE phase")
    ap.add_argument("--vae-steps", type=int, default=100000, help="step cap of the VAE phase")
    ap.add_argument("--vae-batch", type=int, default=128)
    ap.add_argument("--vae-lr", type=float, default=1e-3)
    ap.add_argument("--kl-weight", type=float, default=1e-4, help="weight of the per-pixel KL term")
    # MMDiT
    ap.add_argument("--layers", type=int, default=8, help="joint blocks")
    ap.add_argument("--heads", type=int, default=4, help="attention heads of 64 (hidden = 64 x heads)")
    ap.add_argument("--pos-embed-max-size", type=int, default=32)
    ap.add_argument("--t5-width", type=int, default=128, help="T5 d_model = joint_attention_dim")
    ap.add_argument("--mmdit-seconds", type=float, default=160, help="time budget of the MMDiT phase")
    ap.add_argument("--steps", type=int, default=100000, help="step cap of the MMDiT phase")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--caption-dropout", type=float, default=0.1)
    ap.add_argument("--shift", type=float, default=1.0, help="flow shift, saved as the scheduler's")
    ap.add_argument("--t5-lengths", type=int, nargs="+", default=[32, 77, 128, 256])
    ap.add_argument("--val-max", type=int, default=256, help="images per split in the fixed-noise val losses")
    ap.add_argument("--eval-every", type=int, default=0, help="EMA val losses every N steps (0: at the end only)")
    # tokenizers, outputs
    ap.add_argument("--tokenizers", choices=["fit", "demo"], default="fit")
    ap.add_argument("--demo-model", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "demo",
                                                         "model"), help="where --tokenizers demo copies from")
    ap.add_argument("--t5-vocab", type=int, default=1024, help="SentencePiece pieces (--tokenizers fit)")
    ap.add_argument("--sample-steps", type=int, default=28)
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--log-every", type=int, default=250)
    ap.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16", help="weights as saved")
    a = ap.parse_args()
    if a.quick:
        a.vae_steps, a.vae_batch, a.steps, a.batch, a.warmup = 6, 8, 6, 8, 2
        a.layers, a.heads, a.vae_channels = 2, 2, [16, 16, 16, 16]
        a.sample_steps, a.log_every, a.t5_lengths, a.t5_vocab, a.val_max = 3, 2, [32, 256], 512, 16

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
    log(f"make_emoji_model.py  torch {torch.__version__}  diffusers {diffusers.__version__}  "
        f"transformers {transformers.__version__}  device {dev}"
        + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""))
    log("settings: " + json.dumps(vars(a)))

    # 1. data
    t0 = time.time()
    data = {s: load_split(a.data, s, a.size) for s in SPLITS}
    caps = {s: c for s, (_, c) in data.items()}
    if len(caps["pretrain"]) == 0:
        sys.exit(f"{a.data}/pretrain/captions.txt: no pretraining images (run tools/make_emoji_dataset.py)")
    log("data: " + ", ".join(f"{s} {len(c)}" for s, c in caps.items()) + f" images at {a.size}px, "
        f"{time.time() - t0:.1f}s;  e.g. '{caps['pretrain'][0]}'")

    # 2. tokenizers
    root = os.path.join(a.out, "model")
    if os.path.exists(root):
        shutil.rmtree(root)
    os.makedirs(root)
    prompts = pick_prompts(caps)
    corpus = sorted(set(c for cs in caps.values() for c in cs)) + prompts
    t0 = time.time()
    if a.tokenizers == "fit":
        nm = build_tokenizers(root, corpus, a.t5_vocab)
    else:
        for k in ("tokenizer", "tokenizer_2", "tokenizer_3"):
            shutil.copytree(os.path.join(a.demo_model, k), os.path.join(root, k))
        nm = sum(1 for ln in open(os.path.join(root, "tokenizer", "merges.txt")) if ln.strip()) - 1
    tl, tg, sp = demo.load_tokenizers(root)
    bos, eos = tl.convert_tokens_to_ids("<|startoftext|>"), tl.convert_tokens_to_ids("<|endoftext|>")
    vocab_t5 = sp.get_piece_size() + 100          # + T5Tokenizer's 100 <extra_id_*>
    vocab_t5 += -vocab_t5 % 8
    ntok = [len(tl(c).input_ids) - 2 for c in corpus]
    log(f"tokenizers ({a.tokenizers}): CLIP BPE {len(tl)} tokens ({nm} merges), T5 unigram {sp.get_piece_size()} "
        f"pieces; CLIP tokens per caption mean {np.mean(ntok):.1f}, max {max(ntok)}; {time.time() - t0:.1f}s")

    # 3. models
    vae, te1, te2, te3, mmdit = make_models(a, len(tl), eos, bos, vocab_t5)
    for m in (vae, te1, te2, te3, mmdit):
        m.to(dev)
    for m in (te1, te2, te3):
        m.eval().requires_grad_(False)
    log("params: " + ", ".join(f"{k} {demo.nparams(m) / 1e6:.3f}M" for k, m in
                               [("vae", vae), ("clip_l", te1), ("clip_g", te2), ("t5", te3), ("mmdit", mmdit)]))
    cond = demo.Conditioner(tl, tg, sp, te1, te2, te3)

    # 4. VAE: pretrain + the fine-tuning train splits, uncaptioned; every val split held out
    vae_imgs = torch.from_numpy(np.concatenate([data[s][0] for s in ("pretrain", "animals/train", "food/train")]))
    t_vae, vae_steps = train_vae(vae, vae_imgs.to(dev), a, dev, log)
    vae.requires_grad_(False)
    del vae_imgs
    with torch.no_grad():
        for s in ("control/val", "animals/val", "food/val"):
            if len(caps[s]):
                x = demo.to_unit(torch.from_numpy(data[s][0]).to(dev))
                rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
                log(f"vae held-out reconstruction {s}: mean |error| {((rec - x).abs().mean() * 127.5).item():.2f} / 255")
    lats = {s: demo.encode_means(vae, torch.from_numpy(data[s][0]).to(dev), dev) for s in SPLITS if len(caps[s])}
    shift_f, scale_f = lats["pretrain"].mean().item(), 1.0 / lats["pretrain"].std().item()
    vae.register_to_config(scaling_factor=scale_f, shift_factor=shift_f)
    lats = {s: (v - shift_f) * scale_f for s, v in lats.items()}
    log(f"latents {tuple(lats['pretrain'].shape[1:])}: shift_factor {shift_f:.4f}, scaling_factor {scale_f:.4f}")

    # 5. text embeddings, once
    t0 = time.time()
    emb_dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    all_caps = [c for s in SPLITS for c in caps[s]]
    emb = Embeddings(cond, all_caps, sorted(set(a.t5_lengths) | {demo.T5_MAX}), dev, emb_dtype)
    log(f"text embeddings: {len(emb.uniq)} captions x T5 lengths {sorted(emb.ctx)} precomputed, "
        f"{emb.nbytes() / 1e6:.0f} MB, {time.time() - t0:.1f}s; longest T5 caption {emb.longest_t5} tokens")

    # 6. MMDiT
    val_sets = {}
    for s in ["control/val", "animals/val", "food/val", "pretrain"]:
        if len(caps[s]):
            n = len(caps[s])
            sel = list(range(0, n, max(1, n // a.val_max)))[:a.val_max]   # evenly spaced, deterministic
            ids = emb.ids([caps[s][i] for i in sel], dev)
            val_sets[s] = (lats[s][sel], emb.ctx[demo.T5_MAX][ids], emb.pooled[ids])

    def evaluate(model):
        return ", ".join(f"{s} {fixed_val_loss(model, *v, dev, a.seed + 9, a.shift):.4f}" for s, v in val_sets.items())

    cap_ids = emb.ids(caps["pretrain"], dev)
    mmdit, t_mm, mm_steps = train_mmdit(mmdit, lats["pretrain"], cap_ids, emb, a, dev, log, evaluate)
    mmdit.requires_grad_(False)
    vl = evaluate(mmdit)
    log(f"fixed-noise val loss (EMA, T5 len 256, 8 sigmas; at most {a.val_max} images a split; "
        f"'pretrain' = training images, evenly spaced): {vl}")

    # 7. pipeline: save, reload, check conditioning against diffusers' encode_prompt, sample
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=a.shift)
    save_pipeline(root, mmdit, sched, vae, te1, te2, te3, tl, tg, a)
    pipe = StableDiffusion3Pipeline.from_pretrained(root, torch_dtype=torch.float32).to(dev)
    pipe.set_progress_bar_config(disable=True)
    cond2 = demo.Conditioner(tl, tg, sp, pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3)
    with torch.no_grad():
        pe, _, pp, _ = pipe.encode_prompt(prompts[:3], prompts[:3], prompts[:3], device=dev,
                                          do_classifier_free_guidance=False, max_sequence_length=demo.T5_MAX)
        ctx, pooled = cond2.encode(*(t.to(dev) for t in cond2.tokenize(prompts[:3])))
    d_ctx, d_pool = (pe - ctx).abs().max().item(), (pp - pooled).abs().max().item()
    log(f"reloaded pipeline: encode_prompt vs training conditioning max|diff| context {d_ctx:.2e}, pooled {d_pool:.2e}")
    if d_ctx > 1e-3 or d_pool > 1e-3:
        raise SystemExit("the training conditioning differs from diffusers' encode_prompt (tokenizer mismatch?)")

    t0 = time.time()
    seeds = [0, 1] if a.quick else [0, 1, 2, 3]
    rows = []
    for p in (prompts[:2] if a.quick else prompts):
        out = pipe(prompt=[p] * len(seeds), height=a.size, width=a.size, num_inference_steps=a.sample_steps,
                   guidance_scale=a.cfg, generator=[torch.Generator(dev).manual_seed(s) for s in seeds])
        rows.append(out.images)
    labels = [p + ("  [pretrain]" if i < 2 else "  [held out]") for i, p in enumerate(prompts)]
    grid_png(os.path.join(a.out, "pretrained_samples.png"), rows, labels, a.size)
    log(f"pretrained_samples.png: {len(rows)} prompts x {len(seeds)} seeds, {a.sample_steps} steps, cfg {a.cfg}, "
        f"{time.time() - t0:.1f}s (rows 1-2 pretraining captions, then control, animals, food)")
    with open(os.path.join(a.out, "prompts.txt"), "w") as f:
        f.write("\n".join(prompts) + "\n")

    size = {k: sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fs in os.walk(os.path.join(root, k))
                   for fn in fs) for k in sorted(os.listdir(root)) if os.path.isdir(os.path.join(root, k))}
    log("saved " + root + ": " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in size.items())
        + f"; total {sum(size.values()) / 1e6:.2f} MB ({a.dtype})")
    log(f"summary: vae {t_vae:.0f}s ({vae_steps} steps), mmdit {t_mm:.0f}s ({mm_steps} steps x {a.batch}), "
        f"total {time.time() - t_start:.0f}s; val {vl}")
    logf.close()


if __name__ == "__main__":
    main()
