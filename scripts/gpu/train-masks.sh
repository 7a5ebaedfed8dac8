#!/usr/bin/env bash
# scripts/gpu/train-masks.sh: the masked-loss end-to-end test (tests/e2e/
# test_train_masks.c) with every run on the GPU: complementary half masks average to
# the unmasked loss, --alpha-mask equals --masks bit for bit, white masks equal no
# masks. Needs the CUDA build of build-and-test.sh in $BUILD_DIR.
# Usage: scripts/gpu/train-masks.sh
set -uo pipefail
. "$(dirname "$0")/env.sh"
SD_QZO_TEST_DEVICE=cuda meson test -C "$BUILD_DIR" --print-errorlogs train_masks
rc=$?
cp "$BUILD_DIR/meson-logs/testlog.txt" "$OUT/train-masks-testlog.txt" 2>/dev/null
exit $rc
