# PyTorch reference side of the encode-phase benchmark (`sd-qzo bench --what vae|text`):
# SD3.5's three text encoders (transformers' CLIPTextModelWithProjection for CLIP-L and
# CLIP-G, T5EncoderModel for T5-XXL) and the SD3 VAE encoder (diffusers' AutoencoderKL),
# all with random weights at the real shapes, resident on one CUDA GPU. This is what a
# diffusers user's encode step costs on the same GPU without offloading (the fastest
# PyTorch setting; sd-qzo's default keeps T5 in int8 and offloads its blocks).
# Text: batch of B prompts, 77 CLIP tokens and 256 T5 tokens (SD3.5's max_sequence_length),
# CLIP hidden_states[-2] as SD3's pipeline takes them. VAE: B images of R x R, encode only
# (the latent distribution's mean), in float32 (what sd-qzo runs) and bfloat16.
import argparse
import json
import statistics

import torch

GIB = 1024 ** 3


def time_it(fn, warmup, steps):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        out.append(start.elapsed_time(end))
    return {"median": statistics.median(out), "min": min(out), "max": max(out)}


def text_encoders(dtype):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel
    clip_l = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                            num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                            projection_dim=768)
    clip_g = CLIPTextConfig(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                            num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu",
                            projection_dim=1280)
    t5 = T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                  feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                  relative_attention_max_distance=128, is_encoder_decoder=False)
    with torch.device("cuda"):
        models = (CLIPTextModelWithProjection(clip_l).to(dtype).eval(),
                  CLIPTextModelWithProjection(clip_g).to(dtype).eval(),
                  T5EncoderModel(t5).to(dtype).eval())
    return models


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--what", choices=["text", "vae", "all"], default="all")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--resolution", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    torch.manual_seed(0)
    B = a.batch_size
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "batch": B}
    with torch.inference_mode():
        if a.what in ("text", "all"):
            torch.cuda.reset_peak_memory_stats()
            clip_l, clip_g, t5 = text_encoders(torch.bfloat16)
            ids77 = torch.randint(0, 49407, (B, 77), device="cuda")
            ids256 = torch.randint(0, 32100, (B, 256), device="cuda")

            def encode():
                ol = clip_l(ids77, output_hidden_states=True)
                og = clip_g(ids77, output_hidden_states=True)
                ctx = torch.cat([ol.hidden_states[-2], og.hidden_states[-2]], dim=-1)
                ctx = torch.nn.functional.pad(ctx, (0, 4096 - ctx.shape[-1]))
                h = t5(ids256).last_hidden_state
                return torch.cat([ctx, h], dim=-2), torch.cat([ol.text_embeds, og.text_embeds], dim=-1)

            t = time_it(encode, a.warmup, a.steps)
            res["text_bf16_resident"] = {"encode_ms": t, "prompts_per_s": B / (t["median"] * 1e-3),
                                         "peak_gib": torch.cuda.max_memory_allocated() / GIB}
            print(f"pytorch text encoders bf16 resident, batch {B}: median {t['median']:.1f} ms (min {t['min']:.1f}) "
                  f"-> {B / (t['median'] * 1e-3):.1f} prompts/s, peak {torch.cuda.max_memory_allocated() / GIB:.2f} GiB")
            del clip_l, clip_g, t5
            torch.cuda.empty_cache()
        if a.what in ("vae", "all"):
            from diffusers import AutoencoderKL
            for dtype in (torch.float32, torch.bfloat16):
                torch.cuda.reset_peak_memory_stats()
                with torch.device("cuda"):
                    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16,
                                        down_block_types=("DownEncoderBlock2D",) * 4,
                                        up_block_types=("UpDecoderBlock2D",) * 4,
                                        block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                                        norm_num_groups=32, use_quant_conv=False,
                                        use_post_quant_conv=False).to(dtype).eval()
                img = torch.randn(B, 3, a.resolution, a.resolution, device="cuda", dtype=dtype)
                t = time_it(lambda: vae.encode(img).latent_dist.mean, a.warmup, a.steps)
                name = "f32" if dtype == torch.float32 else "bf16"
                res[f"vae_encode_{name}"] = {"encode_ms": t, "images_per_s": B / (t["median"] * 1e-3),
                                             "peak_gib": torch.cuda.max_memory_allocated() / GIB}
                print(f"pytorch vae encode {name} {a.resolution}x{a.resolution} batch {B}: median {t['median']:.1f} ms "
                      f"(min {t['min']:.1f}) -> {B / (t['median'] * 1e-3):.2f} images/s, "
                      f"peak {torch.cuda.max_memory_allocated() / GIB:.2f} GiB")
                del vae, img
                torch.cuda.empty_cache()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
