#!/usr/bin/env bash
# scripts/gpu/bench-encode.sh: the encode phase users wait for before training, sd-qzo
# beside PyTorch on the same GPU in one call: the VAE encoder at 1024² (batch 1 and 4)
# and SD3.5's three text encoders at their real shapes (synthetic weights; sd-qzo with
# T5-XXL int8, offloaded and resident; PyTorch bf16 resident). Expects a CUDA build in
# $BUILD_DIR (build-and-test.sh); PyTorch, transformers and diffusers for the other side.
# Results: $OUT/encode_*.json and the log. Usage: scripts/gpu/bench-encode.sh
set -uo pipefail
. "$(dirname "$0")/env.sh"
sq_python_wheels || echo "bench-encode.sh: installing the wheels of $WHEELS_DIR failed" >&2
for b in 1 4; do
    timeout 120 "$BIN" bench --what vae --resolution 1024 --batch-size $b --steps 3 --warmup 1 \
        --json "$OUT/encode_sdqzo_vae_b$b.json" 2>&1 | tail -2
done
timeout 240 "$BIN" bench --what text --encoders tests/fixtures/pipeline/tiny --batch-size 4 --steps 3 --warmup 1 \
    --json "$OUT/encode_sdqzo_text_b4.json" 2>&1 | tail -3
for b in 1 4; do
    timeout 200 python3 bench/pytorch_encode.py --batch-size $b --steps 3 --warmup 1 \
        --json "$OUT/encode_pytorch_b$b.json" 2>&1 | grep -v Warning | tail -4
done
