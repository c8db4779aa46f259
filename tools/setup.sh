#!/usr/bin/env bash
# Installs the Debian 12 packages jamba.cpp builds with (nothing is downloaded at build/run time).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends \
  build-essential cmake g++ \
  libopenblas-openmp-dev libomp-dev \
  nlohmann-json3-dev libcli11-dev libsentencepiece-dev sentencepiece \
  libgtest-dev libgmock-dev libbenchmark-dev python3 libdnnl-dev \
  openmpi-bin libopenmpi-dev
