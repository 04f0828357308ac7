#!/usr/bin/env bash
# tests/fuzz/run.sh [SECONDS] [TARGET...] - builds the libFuzzer targets with
# clang (ASan+UBSan, in build-fuzz/) and runs each for SECONDS (default 60),
# starting from the committed seeds in tests/fuzz/corpus/TARGET; SECONDS 0
# runs each committed input once and stops (what tests/run.sh does). New inputs
# go to build-fuzz/corpus/TARGET; a crash, leak or timeout stops the run
# with the input in build-fuzz/findings/ and a non-zero exit. Turn a finding
# into a regression test by copying it into tests/fuzz/corpus/TARGET.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_http fuzz_control fuzz_deploy fuzz_tensors fuzz_remote)

CC=clang CXX=clang++ cmake -S . -B build-fuzz -DSERVE_FUZZ=ON -DSERVE_WITH_TORCH=OFF -DSERVE_WITH_CUDA=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]}" >/dev/null

mkdir -p build-fuzz/findings
status=0
for target in "${targets[@]}"; do
    mkdir -p "build-fuzz/corpus/$target"
    extra=()
    case $target in
        fuzz_http | fuzz_remote) extra=(-max_len=16384 -timeout=15) ;;
        *) extra=(-max_len=8192 -timeout=10) ;;
    esac
    log="build-fuzz/findings/$target.log"
    if [ "$seconds" = 0 ]; then
        how=(-runs=0 "tests/fuzz/corpus/$target")
    else
        how=(-max_total_time="$seconds" "build-fuzz/corpus/$target" "tests/fuzz/corpus/$target")
    fi
    if "build-fuzz/tests/fuzz/$target" -print_final_stats=1 \
        -artifact_prefix="build-fuzz/findings/$target-" "${extra[@]}" "${how[@]}" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "$target: ${seconds}s, $runs executions, no finding"
    else
        rc=$?
        # A signal libFuzzer does not catch (SIGPIPE, SIGKILL) leaves no report.
        ((rc > 128)) && echo "$target: killed by signal $((rc - 128)), with no libFuzzer report"
        echo "$target: FINDING (see $log and build-fuzz/findings/)"
        grep -m3 -E "ERROR|SUMMARY|fuzz_[a-z]+:" "$log" || true
        status=1
    fi
done
exit $status
