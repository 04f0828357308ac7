#!/usr/bin/env bash
# The JSON library for Open Inference Protocol documents (SPEC 1), chosen
# by measurement: those of Debian 12 (jansson, json-c, cJSON, simdjson) decode an
# infer request with an FP32 [32, 64] input (data flat and nested) into
# floats and encode an infer answer with an FP32 [32, 64] output, FP32 at
# the 9 digits that round-trip where the library allows it. Each library is
# built into a binary of its own (jansson and json-c share symbol names).
#   env: REPS (documents per round, default 500)
set -euo pipefail
cd "$(dirname "$0")/../.."
REPS=${REPS:-500}
missing=()
for p in libjansson-dev libjson-c-dev libcjson-dev libsimdjson-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then apt-get install -y -qq "${missing[@]}" >/dev/null; fi
WORK=$(mktemp -d /tmp/serve-bench-json-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
echo "FP32 [32, 64] per document, best of 5 rounds of $REPS:"
for lib in JANSSON:-ljansson JSONC:-ljson-c CJSON:-lcjson; do
  cc -O2 -std=c11 -Wall -Wextra -Werror -DUSE_${lib%%:*} -o "$WORK/json" tests/bench/json_libs.c "${lib##*:}"
  "$WORK/json" "$REPS"
done
# simdjson through serve's shim, as the runtime reads documents.
c++ -O2 -std=c++17 -Wall -Wextra -Werror -c -Iruntime -o "$WORK/json_dom.o" runtime/json_dom.cpp
cc -O2 -std=c11 -Wall -Wextra -Werror -DUSE_SIMDJSON -Iruntime -c -o "$WORK/json_libs.o" tests/bench/json_libs.c
c++ -o "$WORK/json" "$WORK/json_libs.o" "$WORK/json_dom.o" -lsimdjson
"$WORK/json" "$REPS"
