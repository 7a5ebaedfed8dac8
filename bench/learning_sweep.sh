#!/usr/bin/env bash
# bench/learning_sweep.sh: the QZO sweep of bench/LEARNING.md on the emoji task. Runs
# `sd-qzo train` on one task of tools/make_emoji_dataset.py's output with the
# pipeline of bench/emoji/model, once per configuration of a sweep file (lines
# "NAME ARGS...", '#' comments), PARALLEL runs at a time on one GPU (the model is
# small; step times of runs that shared the GPU are not wall-clock figures: the
# `timing` sweep runs alone for those), then prints one TSV line per run:
#   name  steps  val(0)  val(steps/4) ... val(end)  best  seconds/step
# Needs a CUDA build of sd-qzo ($BIN) and the data set (DATA). Usage:
#   DATA=data/emoji64 TASK=animals STEPS=2000 PARALLEL=6 bench/learning_sweep.sh SWEEP_FILE
# SWEEP_SECONDS=N stops starting runs after N seconds and interrupts those still going.
set -uo pipefail
. "$(dirname "$0")/../scripts/gpu/env.sh"
sweep=${1:?usage: bench/learning_sweep.sh SWEEP_FILE}
: "${DATA:=data/emoji64}" "${TASK:=animals}" "${STEPS:=2000}" "${PARALLEL:=6}" "${VAL_EVERY:=200}"
: "${MODEL:=bench/emoji/model}" "${RUNS:=$WORK/sweep-$TASK}" "${SWEEP_SECONDS:=0}"
start=$(date +%s)
mkdir -p "$RUNS"
common=(--model "$MODEL" --images "$DATA/$TASK/train" --captions "$DATA/$TASK/train/captions.txt"
        --val-images "$DATA/$TASK/val" --val-captions "$DATA/$TASK/val/captions.txt"
        --resolution 64 --t5-max-length 32 --batch-size 4 --cache-dir "$WORK/cache-$TASK"
        --sample-every 0 --val-every "$VAL_EVERY" --save-every "$STEPS" --steps "$STEPS" --device cuda --overwrite)
# the encode phase once, before the parallel runs share the cache
"$BIN" train "${common[@]}" --output "$RUNS/encode" --steps 1 > "$RUNS/encode.log" 2>&1 || { tail -5 "$RUNS/encode.log"; exit 1; }
run_one() {
    local name=$1; shift
    "$BIN" train "${common[@]}" --output "$RUNS/$name" "$@" > "$RUNS/$name.log" 2>&1
    echo "$name rc=$?" >> "$RUNS/done.txt"
}
: > "$RUNS/done.txt"
while read -r name args; do
    case "$name" in ''|'#'*) continue ;; esac
    while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do sleep 0.5; done
    if [ "$SWEEP_SECONDS" -gt 0 ] && [ $(( $(date +%s) - start )) -ge "$SWEEP_SECONDS" ]; then break; fi
    # shellcheck disable=SC2086
    run_one "$name" $args &
done < "$sweep"
# SWEEP_SECONDS > 0: runs still going then are stopped (SIGINT: each saves a checkpoint
# and its log so far, which the summary reads)
if [ "$SWEEP_SECONDS" -gt 0 ]; then
    while [ -n "$(jobs -rp)" ] && [ $(( $(date +%s) - start )) -lt "$SWEEP_SECONDS" ]; do sleep 1; done
    for p in $(jobs -rp); do pkill -INT -P "$p" 2>/dev/null; done
fi
wait
python3 - "$RUNS" "$sweep" <<'PY'
import json, os, sys
runs, sweep = sys.argv[1], sys.argv[2]
for line in open(sweep):
    f = line.split()
    if not f or f[0].startswith('#'): continue
    p = os.path.join(runs, f[0], "log.jsonl")
    if not os.path.exists(p): print(f"{f[0]}\tmissing"); continue
    recs = [json.loads(l) for l in open(p) if l.strip()]
    val = [(r["step"], r["val_loss"]) for r in recs if r.get("val_loss") is not None]
    secs = [r["seconds"] for r in recs if r["step"] > 0]
    disc = sum(1 for r in recs if r.get("discarded"))
    clip = recs[-1].get("clipped_share")
    zero = [r.get("zero_share") for r in recs if r.get("zero_share") is not None]
    best = min(v for _, v in val) if val else float("nan")
    print("\t".join([f[0], str(recs[-1]["step"])] + [f"{s}:{v:.5f}" for s, v in val] +
                    [f"best={best:.5f}", f"s/step={sum(secs)/max(len(secs),1):.4f}", f"discarded={disc}",
                     f"clipped={clip}", f"zero={zero[-1] if zero else None}"]))
PY
