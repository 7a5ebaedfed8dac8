#!/usr/bin/env bash
# bench/device-run.sh: one device-machine call (through the device tool, carrying
# .deps): builds with CUDA, runs the gpu suite, then `sd-qzo bench` on the real
# SD3.5 shapes with synthetic int4 weights (Medium and Large MMDiT at 1024², VAE
# encode/decode at 1024²). Logs and JSON land in $OUT. Usage: bench/device-run.sh
set -uo pipefail
export PATH=/usr/local/cuda/bin:$PATH
out=${OUT:-/tmp}
tools/device-gpu-tests.sh 2>&1 | tee "$out/gpu-tests.log" | tail -25
export LD_LIBRARY_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
bin=build-gpu/app/sd-qzo
for cfg in medium large; do
    timeout 150 $bin bench --preset $cfg --resolution 1024 --steps 3 --warmup 1 --what mmdit \
        --json "$out/bench_${cfg}_1024.json" 2>&1 | tail -8
done
timeout 120 $bin bench --resolution 1024 --steps 2 --warmup 1 --what vae --json "$out/bench_vae_1024.json" 2>&1 | tail -5
