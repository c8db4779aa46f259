#!/usr/bin/env bash
# Runs the libFuzzer targets of the fuzz build (cmake --preset fuzz; docs/FUZZING.md).
#
#   tools/fuzz.sh TARGET SECONDS [libFuzzer options...]   fuzz TARGET for SECONDS, from its seeds
#   tools/fuzz.sh replay TARGET [FILE...]                  run the known reproducers (or FILEs) once
#   tools/fuzz.sh list                                     the targets
#
# Environment: FUZZ_BUILD     the fuzz build directory (default build-fuzz)
#              FUZZ_CORPUS    the corpus directory new inputs go to (default
#                             $FUZZ_BUILD/fuzz/corpus/TARGET; kept between runs)
#              FUZZ_ARTIFACTS where crashes / timeouts / OOMs are saved (default
#                             $FUZZ_BUILD/fuzz/artifacts/TARGET/)
# Exit status: 0 when nothing was found; libFuzzer's (non-zero) when an input crashed, leaked,
# timed out (30 s per input) or used more than 2 GB.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${FUZZ_BUILD:-$root/build-fuzz}"
targets="safetensors safetensors_index config session token_input tokenizer tokenizer_model tokenizer_meta chat_template api_request"
usage() {
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
binary() {
  local bin="$build/fuzz/fuzz_$1"
  case " $targets " in *" $1 "*) ;; *) echo "unknown target '$1' (targets: $targets)" >&2; exit 2 ;; esac
  if [ ! -x "$bin" ]; then
    echo "$bin is not built: cmake --preset fuzz && cmake --build --preset fuzz" >&2
    exit 2
  fi
  echo "$bin"
}
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
common=(-rss_limit_mb=2048 -timeout=30)

[ $# -ge 1 ] || usage
case "$1" in
  list) echo "$targets"; exit 0 ;;
  replay)
    [ $# -ge 2 ] || usage
    bin="$(binary "$2")"
    shift 2
    files=("$@")
    if [ ${#files[@]} -eq 0 ]; then
      for d in "$build/fuzz/repro/$(basename "$bin" | sed 's/^fuzz_//')" \
               "$root/fuzz/regressions/$(basename "$bin" | sed 's/^fuzz_//')"; do
        [ -d "$d" ] || continue
        for f in "$d"/*; do [ -f "$f" ] && files+=("$f"); done
      done
    fi
    if [ ${#files[@]} -eq 0 ]; then
      echo "no reproducers for $(basename "$bin")"
      exit 0
    fi
    exec "$bin" "${common[@]}" -timeout=120 "${files[@]}"
    ;;
  *)
    [ $# -ge 2 ] || usage
    name="$1"
    secs="$2"
    shift 2
    bin="$(binary "$name")"
    corpus="${FUZZ_CORPUS:-$build/fuzz/corpus/$name}"
    artifacts="${FUZZ_ARTIFACTS:-$build/fuzz/artifacts/$name/}"
    seeds="$build/fuzz/seeds/$name"
    mkdir -p "$corpus" "$artifacts" "$seeds"
    dict=()
    [ -f "$root/fuzz/dict/$name.dict" ] && dict=(-dict="$root/fuzz/dict/$name.dict")
    exec "$bin" "${common[@]}" "${dict[@]}" -max_total_time="$secs" -print_final_stats=1 \
      -artifact_prefix="$artifacts" "$@" "$corpus" "$seeds"
    ;;
esac
