#!/usr/bin/env bash
# tests/fuzz/run.sh: builds the libFuzzer targets of tests/fuzz (clang,
# -fsanitize=fuzzer,address,undefined; the libraries with fuzzer-no-link coverage)
# in build-fuzz/ and runs each for SQ_FUZZ_SECONDS (default 20) as meson suite
# 'fuzz'. Exits 77 with a message when clang or its libFuzzer runtime is absent
# (Debian: clang and libclang-rt-XX-dev). tests/run.sh calls it.
set -uo pipefail
cd "$(dirname "$0")/../.."
CC=${FUZZ_CC:-clang}
CXX=${FUZZ_CXX:-clang++}
jobs=$(nproc 2>/dev/null || echo 2)

probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' \
    >"$probe/p.c"
if ! command -v "$CC" >/dev/null || ! command -v "$CXX" >/dev/null ||
   ! "$CC" -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" >/dev/null 2>&1; then
    echo "tests/fuzz/run.sh: skipped: $CC with libFuzzer (-fsanitize=fuzzer) is not available (install clang and libclang-rt-dev)"
    exit 77
fi

san=(-Db_sanitize=address,undefined -Db_lundef=false -Dc_args=-fsanitize=fuzzer-no-link -Dcpp_args=-fsanitize=fuzzer-no-link)
if [ ! -f build-fuzz/build.ninja ]; then
    mkdir -p build-fuzz
    CC=$CC CXX=$CXX meson setup build-fuzz -Dcuda=disabled -Dfuzz=true -Dbuildtype=debugoptimized "${san[@]}" \
        >build-fuzz/setup.log 2>&1 || { cat build-fuzz/setup.log; exit 1; }
fi
targets=$(cd tests/fuzz && ls fuzz_*.c | sed 's/\.c$//' | sed 's|^|tests/fuzz/|')
# shellcheck disable=SC2086
ninja -C build-fuzz -j "$jobs" $targets || { echo "tests/fuzz/run.sh: build failed" >&2; exit 1; }
meson test -C build-fuzz --suite fuzz --no-rebuild --print-errorlogs
