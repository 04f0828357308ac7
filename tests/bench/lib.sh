# lib.sh - sourced by every benchmark here: the repository root, the peers,
# the run length, the tools, and a Release build of serve in build-bench/.
#   env: DURATION (seconds per run, default 5), REPS (default 3), PEERS_DIR
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/peers}
DURATION=${DURATION:-5}
REPS=${REPS:-3}
SERVE=$ROOT/build-bench/serve

need_tools() { # Debian packages named like their commands (wrk, nginx)
  local missing=() p
  for p in "$@"; do command -v "$p" >/dev/null || missing+=("$p"); done
  if ((${#missing[@]})); then apt-get install -y -qq "${missing[@]}" >/dev/null; fi
}

build_bench() { # extra cmake options may follow
  cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
    -DSERVE_WITH_CUDA=OFF "$@" >/dev/null
  cmake --build build-bench -j"$(nproc)" >/dev/null
}
