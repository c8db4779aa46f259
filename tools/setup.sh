#!/usr/bin/env bash
# Installs the Debian 12 packages jamba.cpp builds, tests and serves with (nothing is downloaded
# at build/run time; the Node packages of the server tests come from npm, see tools/test.sh).
# Every package the build uses is named here, even where another package would pull it in:
# tools/check_setup.sh checks this list against the fresh-image package list.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "$@" \
  build-essential cmake g++ pkgconf \
  libopenblas-openmp-dev libomp-dev \
  nlohmann-json3-dev libcli11-dev libsentencepiece-dev sentencepiece \
  libgtest-dev libgmock-dev libbenchmark-dev python3 \
  libdnnl-dev ocl-icd-opencl-dev opencl-c-headers opencl-clhpp-headers \
  openmpi-bin libopenmpi-dev \
  libcpp-httplib-dev libssl-dev zlib1g-dev libbrotli-dev \
  clang libclang-rt-14-dev \
  nodejs chromium
