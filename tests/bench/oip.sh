#!/usr/bin/env bash
# T2 of ../shared/BENCH.md: the torch plugin serving the samples' MLP over
# the Open Inference Protocol, [32, 64] FP32 rows per request at 16
# connections: binary tensor data (the goal) and JSON (reported), against
# the peers' torch_raw.py (raw TorchScript forward rows/s at batch 32, one
# thread) in the same run. Then T1 (one JSON row per request at c=64, and
# the echo backend) on this build and, with OLD_BUILD=DIR, on an older
# build in the same run.
#   env: DURATION (default 5), REPS (default 3), MAX_BATCH (requests per
#        batch, default 4), OLD_BUILD, PEERS_DIR
source "$(dirname "$0")/lib.sh"
build_bench -DSERVE_WITH_TORCH=ON
[ -f build-bench/plugins/torch.so ] || { echo "the torch plugin was not built (libtorch-dev missing)"; exit 1; }
MAX_BATCH=${MAX_BATCH:-4}
BODIES=$(mktemp -d)
/usr/bin/python3 - "$BODIES" <<'PY'
import json, os, struct, sys
rows = [[(c - 32) / 64 + r / 100 for c in range(64)] for r in range(32)]
header = json.dumps({"inputs": [{"name": "input", "shape": [32, 64], "datatype": "FP32",
                                 "parameters": {"binary_data_size": 32 * 256}}],
                     "parameters": {"binary_data_output": True}}).encode()
with open(os.path.join(sys.argv[1], "binary"), "wb") as f:
    f.write(header + b"".join(struct.pack("<64f", *r) for r in rows))
with open(os.path.join(sys.argv[1], "header_len"), "w") as f:
    f.write(str(len(header)))
with open(os.path.join(sys.argv[1], "json"), "w") as f:
    json.dump({"inputs": [{"name": "input", "shape": [32, 64], "datatype": "FP32", "data": rows}]}, f)
with open(os.path.join(sys.argv[1], "row"), "w") as f:
    json.dump([0.01 * i for i in range(64)], f)
PY
HLEN=$(cat "$BODIES/header_len")

start() { # $1 build dir, $2 state dir: the MLP twice (T2's batching, T1's) and echo
  export SERVE_STATE_DIR=$2
  "$1/serve" stop >/dev/null 2>&1 || true
  rm -rf "$SERVE_STATE_DIR"
  "$1/serve" start --http 127.0.0.1:0 --log-level warn | sed -E 's/.*listening on (http:[^ ]+).*/\1/'
  local model=(--config model="$ROOT/samples/torch/mlp.pt" --config input_shape=64 --config threads=1)
  "$1/serve" create-backend mlp torch --max-batch-size 32 --batch-wait-timeout-ms 1 \
    --max-queued-requests 4096 "${model[@]}" >/dev/null
  "$1/serve" create-endpoint mlp --backend mlp --route /mlp >/dev/null
  "$1/serve" create-backend mlp32 torch --max-batch-size "$MAX_BATCH" --batch-wait-timeout-ms 1 \
    --max-queued-requests 4096 "${model[@]}" >/dev/null 2>&1 || true
  "$1/serve" create-endpoint mlp32 --backend mlp32 --route /mlp32 >/dev/null 2>&1 || true
  "$1/serve" create-backend echo echo >/dev/null
  "$1/serve" create-endpoint echo --backend echo --route /echo >/dev/null
}
stop_all() {
  SERVE_STATE_DIR=/tmp/serve-bench-oip "$SERVE" stop >/dev/null 2>&1 || true
  [ -z "${OLD_BUILD:-}" ] || SERVE_STATE_DIR=/tmp/serve-bench-oip-old "$OLD_BUILD/serve" stop >/dev/null 2>&1 || true
  rm -rf "$BODIES"
}
trap stop_all EXIT
URL=$(start build-bench /tmp/serve-bench-oip)
[ -z "${OLD_BUILD:-}" ] || OLD_URL=$(start "$OLD_BUILD" /tmp/serve-bench-oip-old)

# req/s, mean batch, errors of one run: $1 URL, $2 connections, rest: bench options
run() { local url=$1 c=$2; shift 2
  "$SERVE" bench "$url" -c "$c" -d "${DURATION}s" --warmup 1s --json "$@" |
    /usr/bin/python3 -c 'import json,sys; j=json.load(sys.stdin); print("%.0f %.2f %d" % (j["throughput_rps"], 0, j["errors"]["total"]))'; }
raw() { SECONDS_PER_POINT=2 REPS=1 PEERS_OUT=/tmp/serve-bench-oip-peer /usr/bin/python3 "$PEERS_DIR/torch_raw.py" |
  awk '/threads=1 .*batch=32 / {for (i=1;i<=NF;i++) if ($i == "rows/s=") {print $(i+1); exit}}' | tr -d ','; }
ratio() { /usr/bin/python3 -c "print(round($1 / max(float('$2' or 1), 1), 3))"; }

echo "BLAS: $(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3); max batch $MAX_BATCH requests of 32 rows"
echo "T2: rows/s at c=16, [32, 64] FP32 per request"
printf '%-4s %12s %7s %12s %7s %12s %10s %10s\n' rep binary_rows errors json_rows errors raw_rows bin/raw json/raw
for r in $(seq 1 "$REPS"); do
  read -r b _ be <<<"$(run "$URL/v2/models/mlp32/infer" 16 --data @"$BODIES/binary" -H "Inference-Header-Content-Length: $HLEN")"
  read -r j _ je <<<"$(run "$URL/v2/models/mlp32/infer" 16 --data @"$BODIES/json")"
  rawv=$(raw)
  printf '%-4s %12s %7s %12s %7s %12s %10s %10s\n' "$r" $((b * 32)) "$be" $((j * 32)) "$je" "$rawv" \
    "$(ratio $((b * 32)) "$rawv")" "$(ratio $((j * 32)) "$rawv")"
done
echo "T1: one JSON row per request at c=64 (rows/s), and echo (req/s)"
printf '%-4s %-5s %12s %12s %10s\n' rep build served_rows echo_req served/echo
for r in $(seq 1 "$REPS"); do
  for which in new ${OLD_BUILD:+old}; do
    u=$URL; [ "$which" = old ] && u=$OLD_URL
    read -r s _ _ <<<"$(run "$u/mlp" 64 --data @"$BODIES/row")"
    read -r e _ _ <<<"$(run "$u/echo" 64 --data @"$BODIES/row")"
    printf '%-4s %-5s %12s %12s %10s\n' "$r" "$which" "$s" "$e" "$(ratio "$s" "$e")"
  done
done
