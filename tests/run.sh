#!/usr/bin/env bash
# tests/run.sh: the README's test command. Builds sd-qzo (CUDA too when nvcc is
# found), runs every suite, then rebuilds CPU-only under ASan+UBSan and runs the
# unit, bad-input, golden and e2e suites again, then the fuzz targets (tests/fuzz/run.sh,
# clang's libFuzzer, ~20 s each; SQ_SKIP_FUZZ=1 leaves them out). Prints the skipped count, then ends with
# one line "N passed, N failed" summed over both builds, and exits non-zero if
# anything failed. GPU tests report "skipped" on a machine without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."

jobs=$(nproc 2>/dev/null || echo 2)
status=0

build() {  # build DIR [meson options...]
    local dir=$1; shift
    if [ ! -f "$dir/build.ninja" ]; then
        mkdir -p "$dir"   # the setup log lives inside the (git-ignored) build folder
        meson setup "$dir" "$@" >"$dir/setup.log" 2>&1 || { cat "$dir/setup.log"; return 1; }
    fi
    ninja -C "$dir" -j "$jobs" || return 1
}

run_suites() {  # run_suites DIR [meson test args...]
    local dir=$1; shift
    meson test -C "$dir" --print-errorlogs --num-processes "$jobs" "$@" || status=1
}

if build build; then
    run_suites build
else
    echo "tests/run.sh: build failed" >&2
    status=1
fi

if [ "${SQ_SKIP_SANITIZE:-0}" != 1 ]; then
    # b_lundef=false: the sanitizer runtimes are linked by the compiler driver.
    if build build-sanitize -Dcuda=disabled -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized; then
        run_suites build-sanitize --suite unit --suite bad-input --suite golden --suite e2e \
            --timeout-multiplier 4
    else
        echo "tests/run.sh: sanitizer build failed" >&2
        status=1
    fi
fi

# The libFuzzer targets (tests/fuzz): each fuzzes ~20 s and counts as one test;
# skipped with a message when clang's libFuzzer is absent.
if [ "${SQ_SKIP_FUZZ:-0}" != 1 ]; then
    tests/fuzz/run.sh
    rc=$?
    if [ $rc = 77 ]; then
        rm -f build-fuzz/meson-logs/testlog.json   # no stale results counted
    elif [ $rc != 0 ]; then
        status=1
    fi
fi

# Count results from meson's JSON logs (one object per test).
python3 - build/meson-logs/testlog.json build-sanitize/meson-logs/testlog.json build-fuzz/meson-logs/testlog.json <<'PY' || status=1
import json, os, sys
passed = failed = skipped = 0
for path in sys.argv[1:]:
    if not os.path.exists(path):
        continue
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        s = r.get("result", "")
        if s in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif s == "SKIP":
            skipped += 1
        else:
            failed += 1
# skipped tests (the gpu suite on a machine without a GPU) are counted on their own
# line; the last line is the CI summary "N passed, N failed"
print(f"{skipped} skipped (gpu tests without a GPU)")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
exit $status
