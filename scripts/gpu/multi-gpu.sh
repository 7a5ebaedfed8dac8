#!/usr/bin/env bash
# scripts/gpu/multi-gpu.sh: `sd-qzo train` over several GPUs of one host (issue 18), on a
# 2- or 4-GPU machine (see scripts/gpu/env.sh for what it needs; NCCL from the CUDA
# toolkit or PyTorch's nvidia-nccl wheel of the python3 on the path). Three parts:
#   build  a CUDA build with NCCL required (-Dnccl=enabled) in $BUILD_DIR;
#   check  the tiny fixture pipeline (seconds per run) on 1, 2 and 4 GPUs:
#          - --split queries on 2 and 4 GPUs: every run's ranks report identical scale
#            hashes, and the scales equal the 1-GPU run's bit for bit;
#          - exact resume with another GPU count: 4 steps on 4 GPUs, resumed to 8 on 2,
#            equals 8 uninterrupted steps on 1 GPU bit for bit;
#          - --split batch on 2 and 4 GPUs: identical across ranks; the difference to
#            the 1-GPU run (bf16 GEMMs of another batch shape) is printed;
#          - the same 2-GPU run with the exchange on TCP (SQ_EXCHANGE=socket) instead
#            of NCCL: bit-identical;
#          - a rank killed with SIGKILL: the launcher ends, naming it, within seconds;
#   scale  images/s of QZO steps (--split batch, --queries 1: two forwards per step)
#          for SD3.5 Large with synthetic weights (--model synthetic:large) at 1024² and
#          512², batch per GPU 1 and 4, on 1, 2 and 4 GPUs, and the scaling efficiency
#          (images/s on N GPUs / (N × images/s on 1)), as a markdown table for
#          bench/RESULTS.md. Step time = median over the steps after the first, from
#          rank 0's log.jsonl (the exchange's wait included). Runs that use fewer GPUs
#          than the machine has run side by side on disjoint GPUs (CUDA_VISIBLE_DEVICES)
#          to fit the time budget (about 8 minutes on 4 H100s), and without T5-XXL
#          (--no-t5: zeros in its place, still 333 context tokens, so the MMDiT steps
#          are the same; only the start-up is shorter).
#   learn  (not in the default PARTS; needs DATA, the emoji set of bench/LEARNING.md)
#          which split learns faster per wall-clock second on 2 GPUs, each GPU doing the
#          same work per step (batch 4, 4 queries): --split queries with 8 queries of
#          batch 4 against --split batch with 4 queries of batch 8, side by side on GPUs
#          0,1 and 2,3 for LEARN_SECONDS each; prints the validation loss over time.
# NVLink multicast (NVLS) is turned off: a few bytes per step need none of it, and
# some machines' drivers refuse it.
# Usage: [PARTS="build check scale"] [SCALE_STEPS=5] scripts/gpu/multi-gpu.sh
#        PARTS=learn DATA=data/emoji64 [TASK=animals] [LEARN_SECONDS=120] scripts/gpu/multi-gpu.sh
set -uo pipefail
. "$(dirname "$0")/env.sh"
export NCCL_NVLS_ENABLE=0
: "${PARTS:=build check scale}"
: "${SCALE_STEPS:=5}"
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
echo "== $ngpu GPUs; $(nvidia-smi -L 2>/dev/null | head -1); commit $(git rev-parse --short HEAD 2>/dev/null)"
[ "$ngpu" -ge 2 ] || { echo "needs at least 2 GPUs"; exit 1; }
fails=0
t_start=$(date +%s)
stamp() { echo "   [$(( $(date +%s) - t_start )) s]"; }

if [[ " $PARTS " == *" build "* ]]; then
    ls "$DEPS_DIR"/*.deb >/dev/null 2>&1 && { scripts/gpu/deps.sh unpack; . scripts/gpu/env.sh; }
    rm -rf "$BUILD_DIR"
    meson setup "$BUILD_DIR" -Dcuda=enabled -Dnccl=enabled ${CUDA_ARCH:+-Dgpu_arch=$CUDA_ARCH} > "$OUT/setup.log" 2>&1 ||
        { tail -40 "$OUT/setup.log"; exit 1; }
    grep -i "nccl" "$OUT/setup.log" | head -3
    ninja -C "$BUILD_DIR" -j "$JOBS" app/sd-qzo > "$OUT/build.log" 2>&1 || { tail -60 "$OUT/build.log"; exit 1; }
    stamp
fi
[ -x "$BIN" ] || { echo "no $BIN: run with PARTS=build first"; exit 1; }

# Compares the scales of two checkpoints: prints "bitwise" or the max relative difference.
ckpt_diff() {
    python3 - "$1" "$2" <<'PY'
import json, struct, sys
def load(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
    return {k: b[8 + n + v["data_offsets"][0]: 8 + n + v["data_offsets"][1]] for k, v in h.items()}
a, b = load(sys.argv[1]), load(sys.argv[2])
if a.keys() != b.keys(): print("different tensors"); sys.exit()
if all(a[k] == b[k] for k in a): print("bitwise"); sys.exit()
md = mr = 0.0
for k in a:
    x = struct.unpack(f"<{len(a[k]) // 4}f", a[k]); y = struct.unpack(f"<{len(b[k]) // 4}f", b[k])
    md = max(md, max(abs(p - q) for p, q in zip(x, y))); mr = max(mr, max(abs(q) for q in y))
print(f"max rel diff {md / mr:.3g}")
PY
}
verdict() {   # name condition-result message
    if [ "$2" = 0 ]; then echo "PASS $1: $3"; else echo "FAIL $1: $3"; fails=$((fails + 1)); fi
}

if [[ " $PARTS " == *" check "* ]]; then
    echo "== check: tiny pipeline, bench/data at 64 px, batch 4, 4 queries"
    C=$WORK/mgpu-check
    rm -rf "$C"
    mkdir -p "$C"
    tiny() {   # out gpus steps [extra]
        local out=$1 g=$2 steps=$3
        shift 3
        "$BIN" train --model tests/fixtures/pipeline/tiny --images bench/data --captions bench/data/captions.txt \
            --output "$C/$out" --cache-dir "$C/cache" --resolution 64 --group-size 32 --t5-max-length 32 \
            --batch-size 4 --queries 4 --steps "$steps" --save-every 4 --sample-every 0 --val-every 0 \
            --lr 2e-3 --eps 2e-3 --device cuda --gpus "$g" "$@" > "$C/$out.log" 2>&1
    }
    same_ranks() {   # out gpus steps: rc 0 and the ranks' hashes agreed at the last step
        grep -q "step $3: the scales of the $2 processes are identical" "$C/$1.log"
    }
    tiny ref 1 8; verdict "1 GPU" $? "8 steps ($(tail -1 "$C/ref.log"))"
    for g in 2 4; do
        [ "$g" -le "$ngpu" ] || continue
        tiny q$g "$g" 8 --split queries; rc=$?
        same_ranks q$g "$g" 8; verdict "queries, $g GPUs" $((rc | $?)) "ranks identical: $(grep -c 'processes are identical' "$C/q$g.log") hash checks"
        d=$(ckpt_diff "$C/q$g/checkpoint.safetensors" "$C/ref/checkpoint.safetensors")
        [ "$d" = bitwise ]; verdict "queries, $g GPUs = 1 GPU" $? "$d"
        tiny b$g "$g" 8 --split batch; rc=$?
        same_ranks b$g "$g" 8; verdict "batch, $g GPUs" $((rc | $?)) "ranks identical; vs 1 GPU: $(ckpt_diff "$C/b$g/checkpoint.safetensors" "$C/ref/checkpoint.safetensors")"
    done
    rg=$([ "$ngpu" -ge 4 ] && echo 4 || echo 2)
    tiny half "$rg" 4 --split queries; rc=$?
    tiny resumed 2 8 --split queries --resume "$C/half/checkpoint.safetensors"; rc=$((rc | $?))
    d=$(ckpt_diff "$C/resumed/checkpoint.safetensors" "$C/ref/checkpoint.safetensors")
    [ "$rc" = 0 ] && [ "$d" = bitwise ]; verdict "resume $rg -> 2 GPUs" $? "4 steps on $rg GPUs + 4 on 2 vs 8 on 1: $d"
    SQ_EXCHANGE=socket tiny sock 2 8 --split queries; rc=$?
    d=$(ckpt_diff "$C/sock/checkpoint.safetensors" "$C/q2/checkpoint.safetensors")
    [ "$rc" = 0 ] && [ "$d" = bitwise ] && grep -q "exchange over socket" "$C/sock.log" && grep -q "exchange over nccl" "$C/q2.log"
    verdict "TCP = NCCL exchange" $? "$d"
    # a rank killed mid-run: the launcher must end within seconds, naming it
    tiny killed 2 2000 --split queries --rank-timeout 60 &
    lpid=$!   # the shell running `tiny`; its child is the launcher, whose children are the ranks
    for _ in $(seq 600); do [ -s "$C/killed/log.jsonl" ] && [ "$(wc -l < "$C/killed/log.jsonl")" -ge 3 ] && break; sleep 0.1; done
    launcher=$(pgrep -P "$lpid" | head -1)
    ranks=$(pgrep -P "${launcher:-0}" | sort -n)
    victim=$(echo "$ranks" | sed -n 2p)   # rank 1 (started second)
    t0=$(date +%s.%N)
    [ -n "$victim" ] && kill -9 "$victim"
    for _ in $(seq 600); do kill -0 "$lpid" 2>/dev/null || break; sleep 0.1; done
    t1=$(date +%s.%N)
    if kill -0 "$lpid" 2>/dev/null; then
        for p in $ranks $launcher; do kill -9 "$p" 2>/dev/null; done
    fi
    wait "$lpid" 2>/dev/null
    took=$(python3 -c "print(round($t1 - $t0, 1))")
    grep -q "rank 1 (pid $victim) was killed by signal 9" "$C/killed.log" && python3 -c "import sys; sys.exit(not $took < 30)"
    verdict "killed rank" $? "launcher ended ${took} s after rank 1 (pid $victim) was killed: $(grep -m1 'closed its connection\|NCCL\|timed out' "$C/killed.log" | cut -c1-160)"
    cp "$C/killed.log" "$OUT/killed.log" 2>/dev/null; tail -4 "$C/killed.log" | cut -c1-300
    stamp
fi

if [[ " $PARTS " == *" scale "* ]]; then
    echo "== scale: SD3.5 Large synthetic, --split batch, --queries 1, $SCALE_STEPS steps per run"
    S=$WORK/mgpu-scale
    rm -rf "$S"
    mkdir -p "$S/data"
    # 16 pictures (a batch of 4 per GPU on 4 GPUs): copies of one, so one bucket
    for i in $(seq -w 0 15); do
        ln -s "$SQ_ROOT/bench/data/img0.png" "$S/data/img$i.png"
        printf 'img%s.png\ta photo, copy %s\n' "$i" "$i" >> "$S/data/captions.txt"
    done
    big() {   # name gpus batch_per_gpu res devices
        local name=$1 g=$2 b=$3 res=$4 dev=$5
        CUDA_VISIBLE_DEVICES=$dev timeout 400 "$BIN" train --model synthetic:large --encoders tests/fixtures/pipeline/tiny \
            --images "$S/data" --captions "$S/data/captions.txt" --output "$S/$name" --cache-dir "$S/cache-$res" \
            --resolution "$res" --batch-size $((g * b)) --queries 1 --split batch --gpus "$g" --no-t5 \
            --steps "$SCALE_STEPS" --save-every 100000 --sample-every 0 --val-every 0 --device cuda > "$S/$name.log" 2>&1
        echo "   $name: rc=$? $(grep -c 'processes are identical' "$S/$name.log") hash checks; $(grep -m1 'error' "$S/$name.log" | cut -c1-200)"
    }
    # the encode phase once per resolution, into the shared caches (not timed)
    big warm-1024 1 1 1024 0 & big warm-512 1 1 512 1 & wait
    stamp
    if [ "$ngpu" -ge 4 ]; then
        # 1 GPU: four runs side by side; 2 GPUs: two at a time
        big g1-b1-1024 1 1 1024 0 & big g1-b4-1024 1 4 1024 1 & big g1-b1-512 1 1 512 2 & big g1-b4-512 1 4 512 3 & wait
        stamp
        big g2-b1-1024 2 1 1024 0,1 & big g2-b4-1024 2 4 1024 2,3 & wait
        big g2-b1-512 2 1 512 0,1 & big g2-b4-512 2 4 512 2,3 & wait
    else
        # 2 GPUs: the 1-GPU runs two at a time, the 2-GPU runs one after another
        big g1-b1-1024 1 1 1024 0 & big g1-b4-1024 1 4 1024 1 & wait
        big g1-b1-512 1 1 512 0 & big g1-b4-512 1 4 512 1 & wait
        stamp
        for res in 1024 512; do for b in 1 4; do big g2-b$b-$res 2 $b "$res" 0,1; done; done
    fi
    stamp
    if [ "$ngpu" -ge 4 ]; then
        for res in 1024 512; do for b in 1 4; do big g4-b$b-$res 4 $b "$res" 0,1,2,3; done; done
        stamp
    fi
    python3 - "$S" "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" "$(git rev-parse --short HEAD)" <<'PY'
import datetime, json, os, sys
S, gpu, commit = sys.argv[1:4]
def ips(name, g, b):
    p = os.path.join(S, name, "log.jsonl")
    if not os.path.exists(p): return None
    st = [r["seconds"] for r in map(json.loads, open(p)) if r["step"] > 1]
    if not st: return None
    st.sort()
    return g * b / st[len(st) // 2]
print(f"\n{datetime.date.today()}, {gpu}, commit {commit}: QZO steps of SD3.5 Large (synthetic int4 weights, "
      "--split batch, --queries 1: two forwards per step), images/s = images per step / median step time "
      "(rank 0's log, the exchange included); efficiency = images/s on N GPUs / (N x images/s on 1 GPU)\n")
print("| resolution | batch per GPU | 1 GPU | 2 GPUs | 4 GPUs |")
print("| --- | --- | --- | --- | --- |")
for res in (1024, 512):
    for b in (1, 4):
        base = ips(f"g1-b{b}-{res}", 1, b)
        cells = [f"{base:.2f} img/s" if base else "failed"]
        for g in (2, 4):
            v = ips(f"g{g}-b{b}-{res}", g, b)
            cells.append("—" if v is None else f"{v:.2f} img/s ({100 * v / (g * base):.1f} %)" if base else f"{v:.2f} img/s")
        print(f"| {res}² | {b} | " + " | ".join(cells) + " |")
PY
fi
if [[ " $PARTS " == *" learn "* ]]; then
    : "${DATA:=data/emoji64}" "${TASK:=animals}" "${LEARN_SECONDS:=120}"
    echo "== learn: $DATA/$TASK on 2 GPUs per split, ${LEARN_SECONDS} s each"
    L=$WORK/mgpu-learn
    rm -rf "$L"
    mkdir -p "$L"
    common=(--model bench/emoji/model --images "$DATA/$TASK/train" --captions "$DATA/$TASK/train/captions.txt"
            --val-images "$DATA/$TASK/val" --val-captions "$DATA/$TASK/val/captions.txt" --resolution 64
            --t5-max-length 32 --cache-dir "$L/cache" --sample-every 0 --val-every 50 --save-every 100000
            --steps 100000 --device cuda --gpus 2)
    "$BIN" train "${common[@]}" --gpus 1 --steps 1 --output "$L/encode" > "$L/encode.log" 2>&1 || { tail -3 "$L/encode.log"; exit 1; }
    learn() {   # name devices [flags]
        local name=$1 dev=$2
        shift 2
        CUDA_VISIBLE_DEVICES=$dev "$BIN" train "${common[@]}" --output "$L/$name" "$@" > "$L/$name.log" 2>&1 &
        local pid=$!
        sleep "$LEARN_SECONDS"
        kill -INT "$pid"   # the launcher: every rank stops after the same step, rank 0 saves
        wait "$pid"
    }
    if [ "$ngpu" -ge 4 ]; then   # side by side
        learn queries 0,1 --split queries --batch-size 4 --queries 8 &
        learn batch 2,3 --split batch --batch-size 8 --queries 4 &
        wait
    else                         # one after the other on GPUs 0 and 1
        learn queries 0,1 --split queries --batch-size 4 --queries 8
        learn batch 0,1 --split batch --batch-size 8 --queries 4
    fi
    python3 - "$L" "$LEARN_SECONDS" <<'PY'
import json, os, sys
L, secs = sys.argv[1], float(sys.argv[2])
marks = [round(secs * k / 4) for k in (1, 2, 3, 4)]
print("| split (per GPU: batch 4, 4 queries) | steps | " + " | ".join(f"val loss at {t} s" for t in marks) + " |")
print("| --- | --- | --- | --- | --- | --- |")
for name, desc in (("queries", "queries: 8 queries, batch 4"), ("batch", "batch: 4 queries, batch 8")):
    recs = [json.loads(l) for l in open(os.path.join(L, name, "log.jsonl")) if l.strip()]
    t, pts = 0.0, []
    for r in recs:
        t += r["seconds"] or 0
        if r.get("val_loss") is not None: pts.append((t, r["val_loss"]))
    cells = []
    for lim in marks:
        v = [x for s, x in pts if s <= lim]
        cells.append(f"{v[-1]:.5f}" if v else "—")
    print(f"| {desc} | {recs[-1]['step']} | " + " | ".join(cells) + " |")
PY
fi
echo "== $fails failed checks; $(( $(date +%s) - t_start )) s"
exit $((fails > 0))
