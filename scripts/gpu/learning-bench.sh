#!/usr/bin/env bash
# scripts/gpu/learning-bench.sh: the measurements of bench/LEARNING.md in one go on a
# GPU machine (see env.sh; also the learn.sh needs): a CUDA build and the gpu test
# suite, the QZO sweep (bench/learning_sweep.sh) and, beside it on the same GPU, the
# first-order baselines (bench/first_order.py: AdamW through the int4 scales, LoRA
# rank 16) and the zero points (bf16 model, int4 model) on the task and the control
# set, then every sweep checkpoint scored under the first-order script's protocol.
# Usage: DATA=data/emoji64 TASK=animals SWEEP=bench/sweeps/animals.txt scripts/gpu/learning-bench.sh
# SKIP_TESTS=1 leaves out the gpu suite; FO_RUNS="scales-adamw:1e-5 lora:1e-4" picks the
# baselines (empty: none); SWEEP_SECONDS bounds the sweep (bench/learning_sweep.sh).
# Everything ends up in $OUT/learning-$TASK.tar.gz.
set -uo pipefail
. "$(dirname "$0")/env.sh"
: "${DATA:=data/emoji64}" "${TASK:=animals}" "${SWEEP:=bench/sweeps/$TASK.txt}" "${FO_STEPS:=2000}"
ls "$DEPS_DIR"/*.deb >/dev/null 2>&1 && { scripts/gpu/deps.sh unpack; . scripts/gpu/env.sh; }
sq_python_wheels
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
res=$OUT/learning-$TASK; mkdir -p "$res" "$WORK/fo"
# one file back, whatever happens: the device returns few files
trap 'cp -r "$WORK/sweep-$TASK"/*.log "$res/" 2>/dev/null; tar -C "$OUT" -czf "$OUT/learning-$TASK.tar.gz" "learning-$TASK" && rm -rf "$res"' EXIT
if [ ! -x "$BIN" ]; then
    meson setup "$BUILD_DIR" -Dcuda=enabled ${CUDA_ARCH:+-Dgpu_arch=$CUDA_ARCH} > "$WORK/setup.log" 2>&1 || { tail -30 "$WORK/setup.log"; exit 1; }
    ninja -C "$BUILD_DIR" -j "$JOBS" > "$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; exit 1; }
fi
[ -n "${SKIP_TESTS:-}" ] || (meson test -C "$BUILD_DIR" --suite gpu > "$res/gpu-tests.txt" 2>&1; grep -E "^ *[0-9]+/[0-9]+|^Ok|^Fail|^Skipped" "$res/gpu-tests.txt") &
# first-order side: data files, zero points and the two baselines
fo() {
    "$BIN" quantize --model bench/emoji/model --out "$WORK/fo/int4.safetensors" > /dev/null || return 1
    python3 bench/make_fo_data.py --model bench/emoji/model --train-dir "$DATA/$TASK/train" --val-dir "$DATA/$TASK/val" \
        --out "$WORK/fo/$TASK" --t5-len 32 --device cuda > "$res/fo-data.log" 2>&1 || return 1
    python3 bench/make_fo_data.py --model bench/emoji/model --train-dir "$DATA/$TASK/train" --val-dir "$DATA/control/val" \
        --out "$WORK/fo/control" --t5-len 32 --device cuda > "$res/fo-data-control.log" 2>&1 || return 1
    local fo_args=(--int4 "$WORK/fo/int4.safetensors" --model bench/emoji/model --val "$WORK/fo/$TASK/val.safetensors"
                   --train "$WORK/fo/$TASK/train.safetensors" --steps "$FO_STEPS" --batch-size 4 --val-every 200 --device cuda)
    for spec in ${FO_RUNS-scales-adamw:1e-5 scales-adamw:1e-4 lora:1e-4 lora:1e-3}; do
        spec=${spec/:/ }
        set -- $spec
        python3 bench/first_order.py "${fo_args[@]}" --method "$1" --lr "$2" --out "$res/fo-$1-$2.jsonl" \
            ${FO_SAVE:+--save-scales "$WORK/fo/$1-$2.safetensors"} > "$res/fo-$1-$2.log" 2>&1
    done
}
fo &
fo_pid=$!
DATA=$DATA TASK=$TASK bench/learning_sweep.sh "$SWEEP" > "$res/sweep.tsv" 2> "$res/sweep.err"
wait $fo_pid
# every sweep checkpoint and the zero points under one protocol, on the task and the control set
ckpts=$(ls "$WORK/sweep-$TASK"/*/checkpoint.safetensors 2>/dev/null | grep -v /encode/)
for v in "$TASK" control; do
    python3 bench/first_order.py --int4 "$WORK/fo/int4.safetensors" --model bench/emoji/model \
        --val "$WORK/fo/$v/val.safetensors" --device cuda --eval-scales $ckpts --out "$res/eval-$v.jsonl" > "$res/eval-$v.log" 2>&1
done
wait
cat "$res/sweep.tsv"
