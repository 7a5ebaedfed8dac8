#!/usr/bin/env bash
# bench/device-train.sh: whole `sd-qzo train` runs of SD3.5's real shapes on the GPU
# machine, with synthetic weights (--model synthetic:...; no download): Large at 1024²
# and Medium at 512², batch 1, a few steps each, through every phase (text encoders,
# VAE, int4 MMDiT QZO steps, checkpoint). Peak GPU memory of the sd-qzo process is
# sampled by nvidia-smi every 50 ms over the whole run (all phases; CUDA context
# included), step times come from log.jsonl.
# Needs build-gpu (tools/device-gpu-tests.sh builds it). Usage: bench/device-train.sh
set -uo pipefail
out=${OUT:-/tmp}
export LD_LIBRARY_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
bin=build-gpu/app/sd-qzo
run() {   # name model resolution steps [extra train flags]
    local name=$1 model=$2 res=$3 steps=$4 extra=${5:-}
    rm -rf /tmp/train-$name
    # per process, so other GPU work on the machine does not count
    nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader,nounits -lms 50 > /tmp/mem-$name.log &
    local smi=$!
    local t0=$(date +%s.%N)
    timeout 300 $bin train --model "$model" --encoders tests/fixtures/pipeline/tiny --images bench/data \
        --captions bench/data/captions.txt --output /tmp/train-$name --resolution "$res" --steps "$steps" \
        --save-every "$steps" --sample-every 0 --val-every 0 --batch-size 1 --device cuda $extra > /tmp/train-$name.log 2>&1
    local rc=$?
    local t1=$(date +%s.%N)
    kill $smi
    local peak=$(grep sd-qzo /tmp/mem-$name.log | awk -F, '{print $3}' | sort -n | tail -1)
    echo "== $name: rc=$rc wall=$(python3 -c "print(round($t1 - $t0, 1))")s peak GPU memory of the sd-qzo process: ${peak} MiB"
    grep -E "info|error" /tmp/train-$name.log | grep -v "^encoding\|^training" | tail -12
    python3 - /tmp/train-$name/log.jsonl <<'PY'
import json, sys
rec = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
st = [r["seconds"] for r in rec if r["step"] > 0]
if st:
    st_sorted = sorted(st[1:] or st)
    print(f"   steps: {len(st)}; first {st[0]*1e3:.0f} ms; median of the rest {st_sorted[len(st_sorted)//2]*1e3:.0f} ms; "
          f"loss {rec[-1]['loss']:.4f}; gpu_mem_gib at last step {rec[-1]['gpu_mem_gib']:.2f}")
PY
    cp /tmp/train-$name.log "$out/train-$name.log"
}
# defaults (--low-vram: text-encoder blocks streamed from host memory)
run large-1024 synthetic:large 1024 4
run large-512 synthetic:large 512 4
run medium-512 synthetic:medium 512 6
# the encoders resident on the GPU instead
run large-1024-resident synthetic:large 1024 4 --no-low-vram
