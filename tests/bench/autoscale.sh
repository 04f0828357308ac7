#!/usr/bin/env bash
# A1 of ../shared/BENCH.md (autoscaling follows a load step): see
# tests/bench/autoscale.py for the setup and the goals.
#   env: UP, DOWN (the delays in seconds, default 3 and 10)
source "$(dirname "$0")/lib.sh"  # cds to the repository root
build_bench
python3 tests/bench/autoscale.py "$SERVE"
