#!/usr/bin/env bash
# scripts/gpu/bench.sh: builds with CUDA and runs the gpu suite
# (scripts/gpu/build-and-test.sh), then `sd-qzo bench` on the real SD3.5 shapes with
# synthetic int4 weights: Medium and Large MMDiT at 1024², VAE encode/decode at 1024².
# Logs and JSON land in $OUT. Usage: scripts/gpu/bench.sh
set -uo pipefail
. "$(dirname "$0")/env.sh"
scripts/gpu/build-and-test.sh 2>&1 | tee "$OUT/gpu-tests.log" | tail -25
. scripts/gpu/env.sh   # picks up dependencies the build unpacked
for cfg in medium large; do
    timeout 150 "$BIN" bench --preset $cfg --resolution 1024 --steps 3 --warmup 1 --what mmdit \
        --json "$OUT/bench_${cfg}_1024.json" 2>&1 | tail -8
done
timeout 120 "$BIN" bench --resolution 1024 --steps 2 --warmup 1 --what vae --json "$OUT/bench_vae_1024.json" 2>&1 | tail -5
