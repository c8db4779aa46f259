#!/usr/bin/env bash
# The test command: builds the release and the ASan+UBSan presets and runs the whole suite under
# both (golden data from ../shared), then the fuzz preset (clang + libFuzzer): the known
# reproducers and a short run of every fuzz target (docs/FUZZING.md).
# Usage: tools/test.sh [release|asan|fuzz|all] (default all).
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:-all}"
jobs=$(nproc)
# The server's end-to-end tests (tests/server, run by ctest as `node --test tests/server/`) need
# their npm packages: installed exactly as locked. A failing install (no registry, no npm) stops
# the run here rather than surfacing later as confusing test failures.
node_deps_done=0
node_deps() {
  [[ -f tests/server/package-lock.json && $node_deps_done == 0 ]] || return 0
  echo "== npm ci --prefix tests/server"
  if ! npm ci --prefix tests/server --no-audit --no-fund; then
    echo "error: npm ci --prefix tests/server failed (npm registry reachable? Node 20+ and npm installed?)" >&2
    exit 1
  fi
  node_deps_done=1
}
run() {
  local preset=$1
  echo "== [$preset] configure + build"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j"$jobs"
  # The fuzz preset has no GoogleTest or node suite: its tests are the fuzzers' replays and smoke runs.
  [[ $preset == fuzz ]] || node_deps
  echo "== [$preset] test"
  ctest --preset "$preset" -j1 --timeout 900
}
case "$which" in
  release) run release ;;
  asan) run asan ;;
  fuzz) run fuzz ;;
  all) run release; run asan; run fuzz ;;
  *) echo "usage: $0 [release|asan|fuzz|all]" >&2; exit 2 ;;
esac
