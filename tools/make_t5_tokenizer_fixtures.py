#!/usr/bin/env python3
"""Golden fixtures for sd-qzo's T5 tokenizer (text_encoders/t5_tokenizer.cc).

The real T5 spiece.model is 792 KB, so this trains a tiny SentencePiece unigram
model (vocab capped at 400; the corpus yields ~150) with T5's special-token layout (pad 0, eos 1, unk 2, no bos)
on the small corpus below (identity normalisation, to keep the file small;
whitespace is still collapsed as in T5) and writes:

  tests/fixtures/tokenizer/t5/spiece.model            (+ tokenizer_config.json)
  tests/fixtures/tokenizer/t5_expected.json

t5_expected.json holds, for each prompt and max_length 32 and 256, the input_ids
that transformers' slow T5Tokenizer (default extra_ids=100, as SD3's tokenizer_3)
gives with padding="max_length", truncation=True, add_special_tokens=True, and
the number of real (non-pad) tokens.

Run: venv/bin/python tools/make_t5_tokenizer_fixtures.py [--out tests/fixtures/tokenizer]
(needs the sentencepiece package and transformers<5 for the slow T5Tokenizer.)
"""
import argparse
import json
import os
import shutil
import tempfile

import sentencepiece as spm
from transformers import T5Tokenizer

CORPUS = """\
a photo of a cat sitting on a red chair
a painting of a mountain landscape at sunset, oil on canvas
portrait of an old man with a long white beard, highly detailed
a futuristic city at night with neon lights and flying cars
two dogs playing in the snow, 4k, high resolution
a bowl of fruit on a wooden table, still life
an astronaut riding a horse on the moon
a watercolor illustration of a small village by the sea
the quick brown fox jumps over the lazy dog
close-up of a flower with dew drops, macro photography
a castle on a hill surrounded by clouds, fantasy art
a street in Paris in the rain, cinematic lighting
a robot reading a book in a library
café au lait in a white cup, morning light
sushi and ramen on a black plate, food photography
a cozy cabin in the forest during winter
an abstract composition of circles and lines in blue and orange
a cute baby owl, digital art, trending on artstation
12 apples and 3 oranges in a basket
the year 2024, a poster with bold typography
"""

PROMPTS = [
    "a photo of a cat",
    "",
    "An astronaut riding a horse on the moon, 4k, highly detailed!",
    "  extra   spaces\tand\ttabs  everywhere   ",
    "numbers: 12 345 6789 3.14159 and 2024-01-01",
    "punctuation!!! ??? ... --- (brackets) [square] {curly} \"quotes\" 'single'",
    "café naïve résumé 東京 🐱 ümlaut",
    "UPPER case Mixed CaSe words",
    "zxqv unknown-ish tokens wqxz",
    "a cozy cabin in the forest during winter, " * 3,
    ("a very long prompt that keeps going: " + "a red castle on a hill with clouds and a robot "
     "reading a book by the sea, " * 12).strip(),
    "a" * 300,
]

MAX_LENS = [32, 256]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/tokenizer")
    args = ap.parse_args()
    model_dir = os.path.join(args.out, "t5")
    os.makedirs(model_dir, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as f:
            f.write(CORPUS)
        spm.SentencePieceTrainer.train(
            input=corpus, model_prefix=os.path.join(tmp, "spiece"), model_type="unigram",
            vocab_size=400, hard_vocab_limit=False, character_coverage=1.0,
            pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
            pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
            # identity: T5's nmt_nfkc charsmap alone is ~240 KB; the rules are libsentencepiece's job.
            normalization_rule_name="identity", num_threads=1, minloglevel=2)
        shutil.copy(os.path.join(tmp, "spiece.model"), os.path.join(model_dir, "spiece.model"))

    with open(os.path.join(model_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "T5Tokenizer", "eos_token": "</s>", "pad_token": "<pad>",
                   "unk_token": "<unk>", "extra_ids": 100, "model_max_length": 512}, f, indent=2)
        f.write("\n")

    tok = T5Tokenizer(vocab_file=os.path.join(model_dir, "spiece.model"), legacy=True)
    print(f"vocab {tok.sp_model.get_piece_size()} (+{len(tok) - tok.sp_model.get_piece_size()} extra ids)")
    cases = []
    for p in PROMPTS:
        case = {"prompt": p}
        for n in MAX_LENS:
            enc = tok(p, padding="max_length", max_length=n, truncation=True, add_special_tokens=True)
            case[f"ids_{n}"] = enc["input_ids"]
            case[f"n_real_{n}"] = sum(enc["attention_mask"])
        cases.append(case)
        print(f"{case['n_real_256']:4d} {p[:50]!r}")
    with open(os.path.join(args.out, "t5_expected.json"), "w", encoding="utf-8") as f:
        json.dump({"max_lens": MAX_LENS, "cases": cases}, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
