#!/usr/bin/env bash
# AB1 of ../shared/BENCH.md (adaptive batching against the best static
# pair, and re-convergence after a change of cost): see
# tests/bench/adaptive.py for the setup and the goals.
#   env: DURATION (s per run, default 5), SVG (default tests/bench/adaptive-ab1.svg)
source "$(dirname "$0")/lib.sh"  # cds to the repository root
build_bench
python3 tests/bench/adaptive.py "$SERVE"
