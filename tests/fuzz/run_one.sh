#!/usr/bin/env bash
# tests/fuzz/run_one.sh EXE NAME FUZZ_DIR BUILD_DIR: runs one libFuzzer target for
# SQ_FUZZ_SECONDS (default 20) from a scratch copy of its seeds (corpus/NAME/,
# regressions/NAME/), so the source tree is never written. A crash, leak, sanitizer
# report or timeout fails the test; the input is kept under
# BUILD_DIR/artifacts/NAME/ and the message says where to commit it.
set -uo pipefail
exe=$1 name=$2 fuzz_dir=$3 build_dir=$4
secs=${SQ_FUZZ_SECONDS:-20}
work=$(mktemp -d "${TMPDIR:-/tmp}/sdqzo_fuzz_${name}_XXXXXX")
trap 'rm -rf "$work"' EXIT
artifacts="$build_dir/artifacts/$name"
mkdir -p "$artifacts" "$work/corpus"
seeds=("$fuzz_dir/corpus/$name")
[ -d "$fuzz_dir/regressions/$name" ] && seeds+=("$fuzz_dir/regressions/$name")
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1
"$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len=65536 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "$work/corpus" "${seeds[@]}" 2>&1 | tail -n 60
rc=${PIPESTATUS[0]}
if [ "$rc" != 0 ]; then
    echo "fuzz_$name: FAILED (exit $rc); the input is kept in $artifacts/:" >&2
    ls -1 "$artifacts" >&2
    echo "fix the bug, then commit the input as tests/fuzz/regressions/$name/<short-name> (replayed by the bad-input suite)" >&2
fi
exit "$rc"
