#!/usr/bin/env bash
# The King James Bible (Debian packages bible-kjv + bible-kjv-text, public domain) as one verse
# per line, verse numbers and chapter headings removed: the corpus of the built-in demo model.
# Usage: tools/kjv/make_corpus.sh OUT.txt
set -euo pipefail
out=${1:?usage: make_corpus.sh OUT.txt}
command -v bible >/dev/null || { echo "needs the 'bible' program: apt-get install -y bible-kjv bible-kjv-text" >&2; exit 1; }
bible -l100000 "Gen1:1-Rev22:21" </dev/null | sed -n 's/^ *[0-9][0-9]* //p' > "$out.tmp"
mv "$out.tmp" "$out"
echo "$out: $(wc -l < "$out") verses, $(wc -c < "$out") bytes" >&2
