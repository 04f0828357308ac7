#!/usr/bin/env bash
# Installs the Debian 12 packages serve builds and tests with, only those
# missing (apt-get update only when something must be installed).
set -euo pipefail
# node-llhttp: llhttp's C sources, the HTTP parser compiled into serve;
# libtorch-dev: the torch plugin; python3-torch: the sample model's script and
# the tests' reference forward; libopenblas0-pthread: without it Debian's
# libtorch runs on the slow reference BLAS; clang and libclang-rt-dev: the
# libFuzzer targets; valgrind: the memcheck test; nginx: the request-smuggling
# test puts a real proxy in front of serve; haproxy: samples/cluster and its
# test balance serve nodes with it (prlimit, for the out-of-descriptors
# test, is in util-linux, which Debian always has).
PACKAGES=(build-essential cmake pkg-config libevent-dev node-llhttp libmsgpack-dev libyaml-dev libsimdjson-dev python3 curl
          mandoc libtorch-dev python3-torch libopenblas0-pthread clang libclang-rt-dev valgrind nginx haproxy)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
