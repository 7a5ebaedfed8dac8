#!/usr/bin/env python3
"""Golden fixtures for sd-qzo's CLIP tokenizer (text_encoders/clip_tokenizer.c).

Real CLIP vocabularies are 1.6 MB each, so this builds a small one in the same
format: the 256 byte symbols of bytes_to_unicode, their "</w>" variants, ~300
merges learnt by a plain BPE pass over the tiny corpus below, then
<|startoftext|> and <|endoftext|>. Two folders mimic SD3.5's tokenizers:

  tests/fixtures/tokenizer/clip_l/  pad <|endoftext|>       (text_encoder's tokenizer/)
  tests/fixtures/tokenizer/clip_g/  pad "!" (id 0, an added  (tokenizer_2/)
                                    special token, as in SD3's tokenizer_config)
  tests/fixtures/tokenizer/clip_cjk/  like clip_l, with merges learnt on a corpus
                                    that adds Chinese, Japanese and Korean

expected.json holds, for each prompt, the input_ids that transformers 5's
CLIPTokenizer (the fast one, backed by the tokenizers library: what diffusers uses,
and what agrees with OpenAI's CLIP on CJK text) gives with padding="max_length",
max_length=77, truncation=True, and the attention-mask length. The corpus holds
some Chinese, Japanese and Korean so that the vocabulary has merges across the
UTF-8 bytes of CJK words.

Run: /work/venv-rel/bin/python tools/make_tokenizer_fixtures.py [--out tests/fixtures/tokenizer]
(needs transformers 5 and tokenizers, see tools/requirements-tokenizer.txt.)
"""
import argparse
import collections
import json
import os

import regex as re

import transformers
from transformers import CLIPTokenizer

N_MERGES = 300
N_MERGES_CJK = 600
MAX_LEN = 77

CORPUS = """
a photo of a cat sitting on a red chair in the living room, highly detailed, 4k
a painting of a dog running through the forest at sunset, oil on canvas
an astronaut riding a horse on the moon, digital art, trending on artstation
the quick brown fox jumps over the lazy dog. it's a beautiful day, isn't it?
portrait of a woman with long hair, studio lighting, sharp focus, photorealistic
a castle on a hill surrounded by mountains and rivers, fantasy landscape, matte painting
there's a little house by the sea where the fisherman lives with his daughter
they've been walking for hours and we'll arrive in the city before the night
a bowl of fresh fruit on a wooden table, still life, natural light, the café
a naïve drawing of a street with people, cars and trees, children's book illustration
close up of the eyes of a tiger, national geographic, wildlife photography
"""

# clip_cjk's corpus adds CJK text, so its vocabulary has merges across the UTF-8
# bytes of CJK words (clip_l and clip_g stay as the pipeline fixtures copy them).
CJK_CORPUS = CORPUS + """
東京タワーの夜景 東京 東京 北京 北京の猫 上海 可愛い猫 猫 猫の写真 서울 서울의 밤 夜景
一只可爱的猫坐在红色的椅子上 富士山 富士山と桜 桜 桜 ときめき さくら サクラ
"""


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


PAT = re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                 re.IGNORECASE)


def learn_merges(text, n_merges):
    benc = bytes_to_unicode()
    words = collections.Counter()
    for w in re.findall(PAT, " ".join(text.split()).lower()):
        syms = [benc[b] for b in w.encode("utf-8")]
        syms[-1] += "</w>"
        words[tuple(syms)] += 1
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for w, c in words.items():
            for p in zip(w, w[1:]):
                pairs[p] += c
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]  # ties broken deterministically
        merges.append(best)
        new = collections.Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] += c
        words = new
    return merges


def write_tokenizer(folder, merges, pad):
    os.makedirs(folder, exist_ok=True)
    base = list(bytes_to_unicode().values())
    vocab = base + [v + "</w>" for v in base] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab))}
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    special = lambda s: {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                         "single_word": False, "special": True}
    added = {str(vocab["<|startoftext|>"]): special("<|startoftext|>"), str(vocab["<|endoftext|>"]): special("<|endoftext|>")}
    if pad != "<|endoftext|>":
        added = {str(vocab[pad]): special(pad), **added}
    cfg = {"add_prefix_space": False, "added_tokens_decoder": added, "bos_token": "<|startoftext|>",
           "clean_up_tokenization_spaces": True, "do_lower_case": True, "eos_token": "<|endoftext|>",
           "errors": "replace", "model_max_length": MAX_LEN, "pad_token": pad, "tokenizer_class": "CLIPTokenizer",
           "unk_token": "<|endoftext|>"}
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)
    if pad != "<|endoftext|>":  # SD3's tokenizer_2 also ships a special_tokens_map.json
        stm = {"bos_token": special("<|startoftext|>"), "eos_token": special("<|endoftext|>"),
               "pad_token": special(pad), "unk_token": special("<|endoftext|>")}
        with open(os.path.join(folder, "special_tokens_map.json"), "w", encoding="utf-8") as f:
            json.dump(stm, f, indent=2)


PROMPTS = [
    "a photo of a cat",
    "A Photo Of A CAT, Highly Detailed!!",
    "hello! world!? wow!!! (yes) [no] {maybe} <tag> a-b_c/d\\e",
    "numbers 1234 and 3.14, 2024-01-01, x²+y³, ½ cup",
    "it's they've we'll I'm you'd don't isn't O'Neil 'quoted' ''s",
    "café naïve Ñandú Ærøskøbing straße ÉCOLE İstanbul",
    "decomposed: cafe\u0301 CRE\u0300ME Vie\u0323\u0302t Nam",
    "ΑΘΗΝΑ Αθήνα, Москва Київ, ΟΔΟΣ ΣΟΦΟΣ' ΑΣ.Σ",
    "emoji 🐱🔥 👍🏽 family 👨‍👩‍👧 ❤️",
    "東京タワー の 夜景, 北京 and 서울",
    "   lots   of\twhitespace \n\n and\r\nnewlines   ",
    "control\x07chars\x1b and zero\u200bwidth soft\u00adhyphen nbsp\u00a0here",
    "",
    "<|startoftext|>special<|endoftext|> tokens <|ENDOFTEXT|> in text",
    "fullwidth ＡＢＣ１２３ and ℃ ™ © … — “quotes”",
    " ".join(["a painting of a beautiful landscape with mountains, rivers and trees"] * 8),
    "!" * 100,
    # CJK: a run of ideographs or kana is one word, like Latin letters
    "東京",
    "東京タワー",
    "北京の猫",
    "一只可爱的猫坐在红色的椅子上",
    "富士山と桜, sakura 桜 in spring",
    "서울의 밤 and 東京 at night",
    "a cat 猫 ねこ ネコ nekö",
    "中文，标点。还有“引号”！",
    "漢字かな交じり文、カタカナ・ひらがな",
    "ｶﾀｶﾅ半角 and 全角ＡＢＣ",
    "一二三 ４５６ 七八九 〇 百",
    "CJK compatibility 豈 更 and extension 𠀀𠀁",
    "ハングル 한국어 조합: \u1100\u1161\u11a8 ᄀ ᅡ",
    "mixed東京2024年12月photo",
    "東京's tower, 東京-tokyo, (東京)",
    # accents and normalisation
    "Crème Brûlée à la française",
    "decomposed e\u0301 vs composed é, o\u0308 vs ö, A\u030a vs Å",
    "marks out of order: a\u0323\u0302 a\u0302\u0323 q\u0307\u0323",
    "ΣΊΣΥΦΟΣ ΟΔΥΣΣΕΥΣ σοφός",
    "İSTANBUL ıstanbul Iİıi",
    "Ǆ ǅ ǆ Ⅻ ⅻ Ⓐ ⓐ",
    "ﬁ ligature ﬀ ﬃ, ℌ ℍ Ω K Å",
    "Tiếng Việt có dấu: Nguyễn, phở, đường",
    # emoji and symbols
    "emoji 😀😃😄 🐶🐱 🇯🇵 🏳️‍🌈 👩🏽‍💻 #️⃣ 1️⃣",
    "✨ sparkle ✨ ★☆ ♪♫ →←↑↓",
    "\ufffd replacement and \U0001f600 at end😀",
    # whitespace and control edges
    "\u3000ideographic\u3000space\u3000",
    "tab\there\vvertical\fform\x1cfile\x1dgroup\x85next",
    "zero\u200bwidth\u200cnon\u200djoiner\u2060word\ufeffbom",
    "\u2028line\u2029para\u00a0nbsp\u202fnarrow\u205fmath",
    " ",
    "\t\n\r",
    "x",
    "control\x01\x02\x7f\x80\x9f chars",
    "trailing combining \u0301 and leading\u0301",
    "<|endoftext|>! and !<|endoftext|> and <|STARTOFTEXT|>x",
    "a" * 300,
    "東" * 100,
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/tokenizer")
    args = ap.parse_args()
    merges = learn_merges(CORPUS, N_MERGES)
    cjk_merges = learn_merges(CJK_CORPUS, N_MERGES_CJK)
    folders = {"clip_l": "<|endoftext|>", "clip_g": "!", "clip_cjk": "<|endoftext|>"}
    for name, pad in folders.items():
        write_tokenizer(os.path.join(args.out, name), cjk_merges if name == "clip_cjk" else merges, pad)
    cases = []
    for p in PROMPTS:
        case = {"prompt": p}
        for name in folders:
            tok = CLIPTokenizer.from_pretrained(os.path.join(args.out, name))
            enc = tok(p, padding="max_length", max_length=MAX_LEN, truncation=True)
            case[name] = enc["input_ids"]
            case[name + "_n_real"] = sum(enc["attention_mask"])
        cases.append(case)
    out = {"transformers": transformers.__version__, "max_length": MAX_LEN, "n_merges": len(merges), "cases": cases}
    with open(os.path.join(args.out, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(args.out) for f in fs)
    print(f"{len(merges)} merges, {len(cases)} prompts, {size} bytes under {args.out}")


if __name__ == "__main__":
    main()
