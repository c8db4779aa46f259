#!/usr/bin/env bash
# The test command: builds the release and the ASan+UBSan presets and runs the whole suite under
# both (golden data from ../shared). Usage: tools/test.sh [release|asan|all] (default all).
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:-all}"
jobs=$(nproc)
run() {
  local preset=$1
  echo "== [$preset] configure + build"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j"$jobs"
  echo "== [$preset] test"
  ctest --preset "$preset" -j1 --timeout 900
}
case "$which" in
  release) run release ;;
  asan) run asan ;;
  all) run release; run asan ;;
  *) echo "usage: $0 [release|asan|all]" >&2; exit 2 ;;
esac
