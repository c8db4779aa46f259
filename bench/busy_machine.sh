#!/usr/bin/env bash
# Decode speed on a quiet machine and with one core kept busy by another process (stress-ng):
# the same `jamba demo` speed test, median of REPS runs each, and the busy/quiet ratio.
#   bench/busy_machine.sh [JAMBA_BINARY] [MODEL_DIR ...]
# No MODEL_DIR: the shipped demo model. A MODEL_DIR needs a tokenizer.model (jamba init
# --tokenizer ...). Env: REPS (default 3), GEN (tokens per decode test, default 64),
# BUSY_CORES (default 1). Needs Debian's stress-ng (apt-get install stress-ng).
set -euo pipefail
BIN=${1:-./build/jamba}
shift || true
MODELS=("$@")
[ ${#MODELS[@]} -eq 0 ] && MODELS=(demo)
REPS=${REPS:-3}
GEN=${GEN:-64}
BUSY_CORES=${BUSY_CORES:-1}
command -v stress-ng >/dev/null || { echo "stress-ng not found: apt-get install stress-ng" >&2; exit 1; }

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# One demo speed test: prints "<1-sequence decode t/s> <4-sequence batched t/s>".
speeds() {
  local m=$1 args=(--gen-tokens "$GEN")
  [ "$m" != demo ] && args+=(--model "$m")
  "$BIN" demo "${args[@]}" 2>/dev/null | awk '
    /^speed, 1 sequence/ { for (i = 1; i <= NF; i++) if ($i == "generated") one = $(i + 4) }
    /^speed, 4 sequences/ { for (i = 1; i <= NF; i++) if ($i == "s,") four = $(i + 1) }
    END { print one, four }'
}

measure() {  # model -> "<median 1-seq> <median batched>"
  local m=$1 ones=() fours=()
  for ((r = 1; r <= REPS; r++)); do
    read -r one four < <(speeds "$m")
    ones+=("$one"); fours+=("$four")
    echo "  $(date +%T) $m rep $r: $one / $four t/s" >&2
  done
  echo "$(printf '%s\n' "${ones[@]}" | median) $(printf '%s\n' "${fours[@]}" | median)"
}

echo "| model | decode 1 seq quiet | busy | busy/quiet | 4 seqs quiet | busy | busy/quiet |"
echo "|---|---|---|---|---|---|---|"
for m in "${MODELS[@]}"; do
  read -r q1 q4 < <(measure "$m")
  stress-ng --cpu "$BUSY_CORES" --timeout 3600s >/dev/null 2>&1 &
  spid=$!
  sleep 1
  read -r b1 b4 < <(measure "$m")
  kill "$spid"; wait "$spid" 2>/dev/null || true
  awk -v m="$(basename "$m")" -v q1="$q1" -v b1="$b1" -v q4="$q4" -v b4="$b4" \
    'BEGIN { printf "| %s | %.1f | %.1f | %.0f%% | %.1f | %.1f | %.0f%% |\n", m, q1, b1, 100*b1/q1, q4, b4, 100*b4/q4 }'
done
