#!/usr/bin/env bash
# Proves, as far as one machine can, that tools/setup.sh sets a fresh machine up for the build:
#   (a) every package tools/setup.sh installs has an apt candidate (apt-cache policy);
#   (b) every header, library, CMake / pkg-config package file and build tool the build uses
#       belongs (dpkg -S) to a package that tools/setup.sh names or that the fresh machine image
#       has (FRESH_LIST: lines "apt<TAB>name<TAB>version"); skipped, with a message, when the list
#       is absent. Packages pulled in only as dependencies do not count: setup.sh names each one.
#       What "uses" means: the headers of every translation unit (the compiler's -M over
#       compile_commands.json), the files on every link line, the CMake cache's package config
#       files, libraries and programs, the compiler's own runtime files (libstdc++, crt, OpenMP,
#       the sanitizer and libFuzzer runtimes of the fuzz preset);
#   (c) a fresh `git clone` of the repository (committed files only), with ../shared beside it
#       as a symlink, configures with the release and the fuzz presets, and finds every optional
#       dependency that setup.sh installs (oneDNN, MPI, Google Benchmark, Node).
# (b) runs over the build directories that (c) configures.
#
# Usage: tools/check_setup.sh
# Environment: FRESH_LIST        the fresh-image package list
#                                (default /work/.library/env/packages/installed-cpp.txt)
#              CHECK_SETUP_KEEP  set: keep the temp directory (the clone and its builds)
# Exit status 0 when every check passes; 1 with the failures listed otherwise.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
fresh_list="${FRESH_LIST:-/work/.library/env/packages/installed-cpp.txt}"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/jamba_check_setup.XXXXXX")"
cleanup() { if [ -z "${CHECK_SETUP_KEEP:-}" ]; then rm -rf "$tmp"; else echo "kept $tmp"; fi; }
trap cleanup EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# --- the package list of tools/setup.sh: the words of its `apt-get install` command ------------
setup_pkgs="$(awk '
  /apt-get install/ { on = 1 }
  on { line = $0; cont = sub(/\\[ \t]*$/, "", line); print line; if (!cont) on = 0 }
' "$root/tools/setup.sh" | tr ' \t' '\n\n' |
  grep -E '^[a-z0-9][a-z0-9.+-]+$' | grep -vxE 'apt-get|install|SUDO' | sort -u)"
[ -n "$setup_pkgs" ] || { echo "FAIL: no package list found in tools/setup.sh"; exit 1; }
echo "== tools/setup.sh installs $(echo "$setup_pkgs" | wc -l) packages"

# --- (a) each has an apt candidate ----------------------------------------------------------------
echo "== (a) apt candidates"
for p in $setup_pkgs; do
  cand="$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ { print $2 }')"
  if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then
    fail "(a) tools/setup.sh installs '$p', which apt has no candidate for (apt-get update run?)"
  fi
done

# --- (c) a fresh clone configures ----------------------------------------------------------------
echo "== (c) fresh clone of $root configures"
git clone --quiet "$root" "$tmp/main"
ln -s "$(cd "$root/../shared" && pwd)" "$tmp/shared"
configure() {  # configure PRESET LOG
  if (cd "$tmp/main" && cmake --preset "$1") > "$2" 2>&1; then
    echo "   $1: configured"
    return 0
  fi
  fail "(c) the fresh clone does not configure with --preset $1:"
  tail -20 "$2" | sed 's/^/      /'
  return 1
}
release_ok=0
fuzz_ok=0
configure release "$tmp/release.log" && release_ok=1
if [ -f "$tmp/main/CMakePresets.json" ] && grep -q '"name": "fuzz"' "$tmp/main/CMakePresets.json"; then
  configure fuzz "$tmp/fuzz.log" && fuzz_ok=1
fi
if [ $release_ok = 1 ]; then
  cache="$tmp/main/build/CMakeCache.txt"
  grep -q "oneDNN bf16 matmul on" "$tmp/release.log" ||
    fail "(c) oneDNN not found at configure (libdnnl-dev, ocl-icd-opencl-dev, opencl-c-headers)"
  grep -q "MPI data parallelism on" "$tmp/release.log" ||
    fail "(c) MPI not found at configure (libopenmpi-dev)"
  grep -q "^benchmark_DIR:PATH=/" "$cache" ||
    fail "(c) Google Benchmark not found at configure (libbenchmark-dev)"
  grep -q "^JAMBA_NODE:FILEPATH=/" "$cache" || fail "(c) node not found at configure (nodejs)"
fi

# --- (b) every file the build uses comes from a listed package -----------------------------------
if [ ! -f "$fresh_list" ]; then
  echo "== (b) skipped: no fresh-image package list at $fresh_list (set FRESH_LIST)"
elif [ $release_ok = 0 ]; then
  echo "== (b) skipped: the release configure failed"
else
  echo "== (b) packages of the files the build uses (fresh image: $fresh_list)"
  builds=("$tmp/main/build")
  [ $fuzz_ok = 1 ] && builds+=("$tmp/main/build-fuzz")
  files="$tmp/used-files.txt"
  : > "$files"
  # Headers: the compiler's dependency list (-M) of every translation unit, two at a time.
  for b in "${builds[@]}"; do
    python3 - "$b/compile_commands.json" "$tmp/deps" > "$tmp/pp-cmds.txt" <<'PY'
import json, os, shlex, sys
entries = json.load(open(sys.argv[1]))
os.makedirs(sys.argv[2], exist_ok=True)
for i, e in enumerate(entries):
    args = e.get("arguments") or shlex.split(e["command"])
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "-o":
            skip = True
            continue
        if a in ("-c",) or a.startswith("-fsanitize"):
            continue
        out.append(a)
    dep = os.path.join(sys.argv[2], "%s-%d.d" % (os.path.basename(os.path.dirname(sys.argv[1])), i))
    print("cd %s && %s -M -MF %s" % (shlex.quote(e["directory"]), shlex.join(out), shlex.quote(dep)))
PY
    tr '\n' '\0' < "$tmp/pp-cmds.txt" | xargs -0 -P2 -n1 sh -c 'eval "$0" >/dev/null 2>&1 || echo "preprocess failed: $0" >&2'
  done
  cat "$tmp"/deps/*.d 2>/dev/null | tr ' \\' '\n\n' | grep '^/' >> "$files" || true
  for b in "${builds[@]}"; do
    cxx="$(awk -F= '/^CMAKE_CXX_COMPILER:/ { print $2 }' "$b/CMakeCache.txt")"
    # Link lines: absolute library paths and -l names.
    find "$b" -name link.txt -print0 | xargs -0 cat | tr ' ' '\n' > "$tmp/link-words.txt"
    grep -E '^/.*\.(a|so)(\.[0-9]+)*$' "$tmp/link-words.txt" >> "$files" || true
    for l in $(grep -E '^-l[A-Za-z0-9_+.-]+$' "$tmp/link-words.txt" | sed 's/^-l//' | sort -u); do
      f="$("$cxx" -print-file-name="lib$l.so")"
      [ "$f" = "lib$l.so" ] && f="$("$cxx" -print-file-name="lib$l.a")"
      case "$f" in /*) echo "$f" >> "$files" ;; esac
    done
    # The compiler driver's own files on every link: C++ runtime, C library, start files.
    for n in libstdc++.so libgcc_s.so libgcc.a libc.so libm.so crt1.o crti.o crtbeginS.o; do
      f="$("$cxx" -print-file-name="$n")"
      case "$f" in /*) [ -e "$f" ] && echo "$f" >> "$files" ;; esac
    done
    if grep -q -- '-fopenmp' "$tmp/link-words.txt" "$b/CMakeCache.txt" 2>/dev/null; then
      for n in libgomp.so libomp.so; do
        f="$("$cxx" -print-file-name="$n")"
        case "$f" in /*) [ -e "$f" ] && echo "$f" >> "$files" ;; esac
      done
    fi
    if grep -q -- '-fsanitize=fuzzer' "$tmp/link-words.txt"; then
      rt="$("$cxx" --print-runtime-dir 2>/dev/null || true)"
      for n in fuzzer asan ubsan_standalone; do
        ls "$rt"/libclang_rt."$n"-x86_64.a >> "$files" 2>/dev/null ||
          fail "(b) $cxx has no libclang_rt.$n runtime in '$rt' (libclang-rt-14-dev)"
      done
    fi
    # The CMake cache: compilers, archiver, make, pkg-config, found libraries / programs, and the
    # config files of the CMake packages found (X_DIR).
    grep -E '^[A-Za-z0-9_]+:(FILEPATH|PATH|STRING|INTERNAL)=/' "$b/CMakeCache.txt" |
      grep -vE '^(CMAKE_(ADDR2LINE|NM|OBJCOPY|OBJDUMP|READELF|STRIP|DLLTOOL|INSTALL_PREFIX|FIND_PACKAGE_REDIRECTS_DIR|CACHEFILE_DIR|HOME_DIRECTORY|COMMAND|CPACK_COMMAND|CTEST_COMMAND|EDIT_COMMAND|ROOT)|MPIEXEC_EXECUTABLE|jamba_cpp_[A-Z]+_DIR|JAMBA_OPENBLAS_OMP_INCLUDE)' |
      while IFS= read -r line; do
        name="${line%%:*}"
        value="${line#*=}"
        IFS=';' read -r -a vals <<< "$value"
        for v in "${vals[@]}"; do
          [ -e "$v" ] || continue
          case "$v" in "$tmp"/*|"$root"/*) continue ;; esac
          if [ -d "$v" ]; then
            case "$name" in
              *_DIR) find "$v" -maxdepth 1 \( -name '*onfig.cmake' -o -name '*-config.cmake' \) >> "$files" ;;
            esac
          else
            echo "$v" >> "$files"
          fi
        done
      done
    # pkg-config modules (pkg_check_modules): their .pc files.
    for m in $(grep -oE '^[A-Z0-9_]+_MODULE_NAME:INTERNAL=[^;]+' "$b/CMakeCache.txt" | sed 's/.*=//' | sort -u); do
      pc="$(pkg-config --variable=pcfiledir "$m" 2>/dev/null)/$m.pc"
      [ -f "$pc" ] && echo "$pc" >> "$files"
    done
    for t in cmake make; do command -v "$t" >> "$files" || true; done
  done
  # fuzz/make_seeds.sh runs python3: Debian's (a python3 earlier on PATH is this machine's own).
  if [ -x /usr/bin/python3 ]; then echo /usr/bin/python3 >> "$files"
  else fail "(b) /usr/bin/python3 is missing (package python3)"; fi
  # The project's own files (sources, generated headers) are not packages.
  grep -v -e "^$tmp/" -e "^$root/" "$files" | sort -u > "$files.sorted" || true
  mv "$files.sorted" "$files"
  echo "   $(wc -l < "$files") files"

  # Owner of each file: the path as used (a -dev package's .so symlink), else the merged-/usr
  # twin (/lib <-> /usr/lib), else the resolved path.
  owners="$tmp/owners.txt"
  : > "$owners"
  unowned=()
  # One dpkg -S over all paths (lines "pkg[:arch][, pkg2]: /path"), then one path at a time for
  # the rest.
  tr '\n' '\0' < "$files" | xargs -0 dpkg -S 2>/dev/null | grep -v '^diversion' |
    sed -E 's/^([^/]*): (\/.*)$/\1\t\2/' > "$tmp/dpkg-batch.txt" || true
  owner_of() {
    local p="$1" q out
    out="$(awk -F'\t' -v p="$p" '$2 == p { print $1; exit }' "$tmp/dpkg-batch.txt")"
    [ -n "$out" ] && { echo "$out"; return 0; }
    for q in "${p/#\/usr\/lib\//\/lib\/}" "${p/#\/lib\//\/usr\/lib\/}" "${p/#\/usr\/bin\//\/bin\/}" \
             "$(readlink -f "$p")"; do
      [ "$q" = "$p" ] && continue
      out="$(dpkg -S "$q" 2>/dev/null | grep -v '^diversion' | head -1)" &&
        [ -n "$out" ] && { echo "${out%%: /*}"; return 0; }
    done
    return 1
  }
  while IFS= read -r f; do
    if o="$(owner_of "$f")"; then
      for pkg in $(echo "$o" | tr ',' ' '); do echo "${pkg%%:*} $f" >> "$owners"; done
    else
      unowned+=("$f")
    fi
  done < "$files"
  listed="$tmp/listed.txt"
  { echo "$setup_pkgs"; awk -F'\t' '$1 == "apt" { sub(/:.*/, "", $2); print $2 }' "$fresh_list"; } |
    sort -u > "$listed"
  used="$(awk '{ print $1 }' "$owners" | sort -u)"
  echo "   $(echo "$used" | wc -l) packages provide them: $(echo $used)"
  # A package only a listed one depends on directly (apt-cache depends: a -dev package's runtime
  # library, e.g. libdnnl-dev -> libdnnl2, whose versioned .so an imported CMake target links)
  # is installed with it: accepted, and said so.
  apt-cache depends $setup_pkgs 2>/dev/null |
    awk '$1 == "Depends:" || $1 == "|Depends:" { sub(/:any$/, "", $2); print $2 }' |
    grep -v '^<' | sort -u > "$tmp/depends.txt"
  missing=""
  for p in $(echo "$used" | comm -23 - "$listed"); do
    if grep -qx "$p" "$tmp/depends.txt"; then
      echo "   $p: not named in tools/setup.sh, a direct Depends of a package it names (apt-cache depends)"
    else
      missing="$missing $p"
    fi
  done
  for p in $missing; do
    fail "(b) package '$p' is used by the build but neither installed by tools/setup.sh nor in the fresh image, e.g. $(awk -v p="$p" '$1 == p { print $2; exit }' "$owners")"
  done
  for f in "${unowned[@]}"; do
    fail "(b) no package owns $f, which the build uses (installed by hand? a fresh machine lacks it)"
  done
fi

if [ $failures -gt 0 ]; then
  echo "check_setup: $failures check(s) failed"
  exit 1
fi
echo "check_setup: all checks passed"
