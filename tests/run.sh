#!/usr/bin/env bash
# The whole test suite: builds serve three times (normal, ASan+UBSan, TSan)
# and runs every test against each build, then replays the fuzzers' corpus.
# Usage: bash tests/run.sh
# The normal build also compiles the CUDA sample plugin where nvcc exists;
# the TSan build leaves out the torch plugin (its tests then say skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-deps.sh
# promtool (Debian's prometheus package) checks /metrics; the one test that
# needs it says so and skips where it cannot be installed.
command -v promtool >/dev/null ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 ||
  echo "promtool could not be installed: the promtool check will be skipped"
jobs=$(nproc)
run_variant() { # $1 build dir, rest: cmake options
  local dir=$1; shift
  echo "== $dir: $*"
  cmake -S . -B "$dir" "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
  (cd "$dir" && ctest --output-on-failure --timeout 300)
}
run_variant build -DCMAKE_BUILD_TYPE=RelWithDebInfo
# halt_on_error makes the first report fatal; the harness also scans the
# server logs for reports.
ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run_variant build-asan -DCMAKE_BUILD_TYPE=Debug -DSERVE_ASAN=ON -DSERVE_UBSAN=ON -DSERVE_WITH_CUDA=OFF
TSAN_OPTIONS="halt_on_error=1 suppressions=$PWD/tests/tsan.supp" \
  run_variant build-tsan -DCMAKE_BUILD_TYPE=Debug -DSERVE_TSAN=ON -DSERVE_WITH_CUDA=OFF \
  -DSERVE_WITH_TORCH=OFF  # libtorch's OpenMP threads are not TSan-instrumented
# The fuzzers, built with clang, replay their committed corpus (seeds and
# every past finding) once; longer runs: bash tests/fuzz/run.sh SECONDS.
echo "== build-fuzz: corpus replay"
bash tests/fuzz/run.sh 0
echo "all tests passed in every build"
