#!/usr/bin/env bash
# scripts/gpu/bench-train.sh: whole `sd-qzo train` runs of SD3.5's real shapes on a GPU
# machine, with synthetic weights (--model synthetic:...; no download): Large at 1024²
# and 512², Medium at 512², batch 1, a few steps each, through every phase (text
# encoders, VAE, int4 MMDiT QZO steps, checkpoint). Peak GPU memory of the sd-qzo
# process is sampled by nvidia-smi every 50 ms over the whole run (all phases; CUDA
# context included), step times come from log.jsonl.
# Needs $BUILD_DIR (scripts/gpu/build-and-test.sh builds it).
# Usage: [TRAIN_RUNS="large-1024 medium-512"] scripts/gpu/bench-train.sh
# TRAIN_RUNS picks runs by name (default: all four; large-1024-resident keeps the
# text encoders on the GPU instead of streaming their blocks from host memory).
set -uo pipefail
. "$(dirname "$0")/env.sh"
runs=" ${TRAIN_RUNS:-large-1024 large-512 medium-512 large-1024-resident} "
run() {   # name model resolution steps [extra train flags]
    local name=$1 model=$2 res=$3 steps=$4 extra=${5:-}
    [[ "$runs" == *" $name "* ]] || return 0
    local dir=$WORK/train-$name
    rm -rf "$dir"
    # per process, so other GPU work on the machine does not count
    nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader,nounits -lms 50 > "$WORK/mem-$name.log" &
    local smi=$!
    local t0=$(date +%s.%N)
    timeout 300 "$BIN" train --model "$model" --encoders tests/fixtures/pipeline/tiny --images bench/data \
        --captions bench/data/captions.txt --output "$dir" --resolution "$res" --steps "$steps" \
        --save-every "$steps" --sample-every 0 --val-every 0 --batch-size 1 --device cuda $extra > "$WORK/train-$name.log" 2>&1
    local rc=$?
    local t1=$(date +%s.%N)
    kill $smi
    local peak=$(grep sd-qzo "$WORK/mem-$name.log" | awk -F, '{print $3}' | sort -n | tail -1)
    echo "== $name: rc=$rc wall=$(python3 -c "print(round($t1 - $t0, 1))")s peak GPU memory of the sd-qzo process: ${peak} MiB"
    grep -E "info|error" "$WORK/train-$name.log" | grep -v "^encoding\|^training" | tail -12
    python3 - "$dir/log.jsonl" <<'PY'
import json, sys
rec = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
st = [r["seconds"] for r in rec if r["step"] > 0]
if st:
    st_sorted = sorted(st[1:] or st)
    print(f"   steps: {len(st)}; first {st[0]*1e3:.0f} ms; median of the rest {st_sorted[len(st_sorted)//2]*1e3:.0f} ms; "
          f"loss {rec[-1]['loss']:.4f}; gpu_mem_gib at last step {rec[-1]['gpu_mem_gib']:.2f}")
PY
    cp "$WORK/train-$name.log" "$OUT/train-$name.log"
}
# defaults (--low-vram: text-encoder blocks streamed from host memory)
run large-1024 synthetic:large 1024 4
run large-512 synthetic:large 512 4
run medium-512 synthetic:medium 512 6
# the encoders resident on the GPU instead
run large-1024-resident synthetic:large 1024 4 --no-low-vram
