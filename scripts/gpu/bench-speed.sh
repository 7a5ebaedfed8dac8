#!/usr/bin/env bash
# scripts/gpu/bench-speed.sh: the QZO step (one query: two int4 forwards + the update) of
# sd-qzo beside PyTorch eager and torch.compile'd on the same GPU, in one call (issue 22),
# after scripts/gpu/build-and-test.sh has built $BIN: `sd-qzo bench --what mmdit` and
# bench/pytorch_qzo.py --what qzo for each case, then one markdown table of step times,
# images/s (batch > 1), compile seconds and the ratios. JSON and logs in $OUT/bench-speed,
# emptied first (the table also in table.md there). PyTorch needs CUDA and diffusers (from
# the Python environment or wheels in $WHEELS_DIR); without them the table has sd-qzo only.
#
# Settings (environment):
#   CASES="large:1024:1 large:512:1 medium:512:1 large:512:16"   preset:resolution:batch
#   TORCH=both            none | eager | compiled | both (compiled: TORCH_COMPILE_CASES only)
#   TORCH_COMPILE_CASES="large:1024:1 large:512:16"   the cases also timed torch.compile'd (a
#                         Large compile takes minutes per shape); eager and compiled share
#                         one process there (one model build)
#   TORCH_COMPILE_SCOPE=model   model: the whole transformer forward compiled; blocks: each
#                         block on its own (regional, much shorter compile)
#   TORCH_COMPILE_MODE=default  TORCH_COMPILE_CACHE=cold (a fresh inductor cache per case, so
#                         compile_s is a first compile) | shared (one cache for this run:
#                         shorter, later cases reuse kernels)
#   BASE_BIN=path         a baseline sd-qzo binary: a "sd-qzo before" column, same cases
#   COMMIT=abc1234        the commit the table names (default: git's HEAD here)
#   STEPS=3 WARMUP=1      sd-qzo's timed runs / warm-up; TORCH_WARMUP=2 (the first compiled
#                         step compiles, the second shows there is no recompile)
#   DEADLINE_S=560        the whole script's time: each part's timeout is cut to what is left
#                         (10 s kept for the table), a part is skipped when under 20 s remain
# Usage: [CASES=...] [TORCH=...] [BASE_BIN=...] scripts/gpu/bench-speed.sh
set -uo pipefail
. "$(dirname "$0")/env.sh"
: "${CASES:=large:1024:1 large:512:1 medium:512:1 large:512:16}"
: "${TORCH:=both}"
: "${TORCH_COMPILE_CASES:=large:1024:1 large:512:16}"
: "${TORCH_COMPILE_SCOPE:=model}"
: "${TORCH_COMPILE_MODE:=default}"
: "${TORCH_COMPILE_CACHE:=cold}"
: "${BASE_BIN:=}"
: "${STEPS:=3}"
: "${WARMUP:=1}"
: "${TORCH_WARMUP:=2}"
: "${DEADLINE_S:=560}"
: "${PYTHON:=python3}"
res=$OUT/bench-speed
rm -rf "$res"; mkdir -p "$res"
t_start=$SECONDS

# part NAME TIMEOUT CMD...: runs CMD with its output in $res/NAME.log and its exit status
# in $res/NAME.rc (124: timed out), within what is left of DEADLINE_S.
part() {
    local name=$1 want=$2; shift 2
    local left=$((DEADLINE_S - (SECONDS - t_start) - 10))
    if [ "$left" -lt 20 ]; then echo "skip $name: ${left}s left"; echo skipped > "$res/$name.rc"; return; fi
    [ "$want" -gt "$left" ] && want=$left
    local t0=$SECONDS
    timeout "$want" "$@" > "$res/$name.log" 2>&1
    local rc=$?
    echo $rc > "$res/$name.rc"
    echo "$name: rc=$rc, $((SECONDS - t0)) s (timeout ${want} s)"
    [ $rc -eq 0 ] || tail -5 "$res/$name.log"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$res/gpu.txt"
# COMMIT names what was built: a copy of the working tree on a remote machine may
# carry a .git whose HEAD is not the tree's (that labelled a run with a stale commit)
echo "${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}" > "$res/commit.txt"

# ---- sd-qzo (and the baseline binary) ----
[ -x "$BIN" ] || { echo "no $BIN: run scripts/gpu/build-and-test.sh first"; exit 1; }
for c in $CASES; do
    IFS=: read -r cfg r b <<< "$c"
    tag=${cfg}_${r}_b${b}
    for side in sq ${BASE_BIN:+base}; do
        bin=$BIN; [ "$side" = base ] && bin=$BASE_BIN
        part "${side}_$tag" 120 "$bin" bench --preset "$cfg" --resolution "$r" --batch-size "$b" --steps "$STEPS" \
            --warmup "$WARMUP" --what mmdit --json "$res/${side}_$tag.json"
    done
done

# ---- PyTorch: eager-only cases first, then those also compiled (their eager half is
# written to the JSON before the compilation starts) ----
if [ "$TORCH" != none ]; then
    if ! sq_python_wheels || ! "$PYTHON" -c "import torch, diffusers; assert torch.cuda.is_available(), 'no CUDA'; \
            print('torch', torch.__version__, 'diffusers', diffusers.__version__)"; then
        echo "PyTorch with CUDA and diffusers not found: no PyTorch columns"; TORCH=none
    fi
fi
if [ "$TORCH" != none ]; then
    export PYTHONUNBUFFERED=1
    [ "$TORCH_COMPILE_CACHE" = shared ] && export TORCHINDUCTOR_CACHE_DIR=$WORK/inductor-cache-$$
    plain=() compiled=()
    for c in $CASES; do
        if [ "$TORCH" != eager ] && [[ " $TORCH_COMPILE_CASES " == *" $c "* ]]; then compiled+=("$c")
        elif [ "$TORCH" != compiled ]; then plain+=("$c"); fi
    done
    for c in "${plain[@]}" "${compiled[@]}"; do
        IFS=: read -r cfg r b <<< "$c"
        tag=${cfg}_${r}_b${b}
        mode=off; want=180
        if [[ " ${compiled[*]} " == *" $c "* ]]; then
            mode=both; [ "$TORCH" = compiled ] && mode=only; want=540
            [ "$TORCH_COMPILE_CACHE" = cold ] && export TORCHINDUCTOR_CACHE_DIR=$WORK/inductor-cache-$tag-$$
        fi
        part "torch_$tag" "$want" "$PYTHON" bench/pytorch_qzo.py --config "$cfg" --resolution "$r" --batch "$b" \
            --what qzo --steps "$STEPS" --warmup "$TORCH_WARMUP" --compile "$mode" --compile-mode "$TORCH_COMPILE_MODE" \
            --compile-scope "$TORCH_COMPILE_SCOPE" --json "$res/torch_$tag.json"
        grep -E "^(qzo|check)" "$res/torch_$tag.log" 2>/dev/null
    done
    rm -rf "$WORK"/inductor-cache-*-$$ "$WORK/inductor-cache-$$"
fi

# ---- the table ----
python3 - "$res" "$CASES" "${BASE_BIN:+1}" "$TORCH" "$TORCH_COMPILE_CASES" <<'PY' | tee "$res/table.md"
import json, os, sys
res, cases, base, torch_parts, compile_cases = sys.argv[1], sys.argv[2].split(), bool(sys.argv[3]), sys.argv[4], sys.argv[5].split()

def load(name):
    p = os.path.join(res, name + ".json")
    return json.load(open(p)) if os.path.exists(p) else None

def why(name):   # a missing figure: not run, timed out or failed
    p = os.path.join(res, name + ".rc")
    if not os.path.exists(p):
        return "—"
    rc = open(p).read().strip()
    return {"0": "—", "124": "timed out", "skipped": "skipped"}.get(rc, f"failed (rc {rc})")

def cell(ms, b):
    if ms is None:
        return None
    return f"{ms:.1f} ms" + (f" ({b / (ms * 1e-3):.1f} img/s)" if b > 1 else "")

gpu = (open(os.path.join(res, "gpu.txt")).read().strip().splitlines() or ["GPU unknown"])[0]
commit = open(os.path.join(res, "commit.txt")).read().strip()
tv = None
head = ["case", "sd-qzo"] + (["sd-qzo before", "before ÷ now"] if base else []) + \
       ["PyTorch eager", "PyTorch compiled", "compile", "eager ÷ sd-qzo", "compiled ÷ sd-qzo"]
rows, notes = [], []
for c in cases:
    cfg, r, b = c.split(":"); b = int(b)
    tag = f"{cfg}_{r}_b{b}"
    sq, bs, t = load("sq_" + tag), load("base_" + tag), load("torch_" + tag)
    sq_ms = sq["mmdit"]["qzo_step_ms"]["median"] if sq else None
    bs_ms = bs["mmdit"]["qzo_step_ms"]["median"] if bs else None
    e = (t or {}).get("eager", {}).get("qzo_step_ms", {}).get("median")
    comp = (t or {}).get("compiled", {})
    cm = comp.get("qzo_step_ms", {}).get("median")
    cs = comp.get("compile_s", {}).get("qzo")
    if t:
        tv = f"torch {t['torch']}, diffusers {t['diffusers']}"
        if "compiled" in t.get("modes", []):
            d, chk = comp.get("dynamo", {}).get("qzo"), t.get("compile_check")
            if d or chk:
                notes.append(f"{cfg} {r}² b{b} compiled: " +
                             (f"{d['graphs']} graph(s), {d['graph_breaks']} graph break(s), "
                              f"{d['recompiles_while_timed']} recompile(s) while timed" if d else "") +
                             (f"; L+ eager vs compiled, relative difference {chk['rel_diff']:.1e}" if chk else "") +
                             (f"; peak {comp['peak_gib']['qzo']:.1f} GiB" if comp.get("peak_gib") else ""))
    ratio = lambda x, y: f"{x / y:.2f}×" if x and y else "—"
    row = [f"{cfg} {r}² b{b}", cell(sq_ms, b) or why("sq_" + tag)]
    if base:
        row += [cell(bs_ms, b) or why("base_" + tag), ratio(bs_ms, sq_ms)]
    want_c = torch_parts in ("both", "compiled") and c in compile_cases
    want_e = torch_parts in ("both", "eager")
    row += [cell(e, b) or (why("torch_" + tag) if want_e else "—"),
            cell(cm, b) or (why("torch_" + tag) if want_c else "—"),
            f"{cs:.0f} s" if cs is not None else "—", ratio(e, sq_ms), ratio(cm, sq_ms)]
    rows.append(row)
print(f"\nQZO step (1 query: 2 forwards + update), median of the timed runs; {gpu}; sd-qzo {commit}"
      + (f"; {tv}" if tv else ""))
print("| " + " | ".join(head) + " |")
print("|" + " --- |" * len(head))
for row in rows:
    print("| " + " | ".join(row) + " |")
for n in notes:
    print("- " + n)
PY
echo "logs and JSON: $res ($((SECONDS - t_start)) s)"
