#!/usr/bin/env bash
# T1 of ../shared/BENCH.md: the torch plugin serving the samples' MLP, max
# batch 32, at 64 connections (serve bench), against the peers'
# torch_raw.py (raw TorchScript forward rows/s) and the echo backend's
# req/s, all in the same run. The BLAS in use is printed.
#   env: DURATION (default 5), REPS (default 3), PEERS_DIR
source "$(dirname "$0")/lib.sh"
build_bench -DSERVE_WITH_TORCH=ON
[ -f build-bench/plugins/torch.so ] || { echo "the torch plugin was not built (libtorch-dev missing)"; exit 1; }
export SERVE_STATE_DIR=/tmp/serve-bench-torch
"$SERVE" stop >/dev/null 2>&1 || true
rm -rf "$SERVE_STATE_DIR"
trap '"$SERVE" stop >/dev/null 2>&1 || true' EXIT
"$SERVE" start --http 127.0.0.1:0 --log-level warn >/dev/null
"$SERVE" create-backend mlp torch --max-batch-size 32 --batch-wait-timeout-ms 1 --max-queued-requests 4096 \
  --config model="$ROOT/samples/torch/mlp.pt" --config input_shape=64 --config threads=1 >/dev/null
"$SERVE" create-endpoint mlp --backend mlp --route /mlp >/dev/null
"$SERVE" create-backend echo echo >/dev/null
"$SERVE" create-endpoint echo --backend echo --route /echo >/dev/null
ROW=$(/usr/bin/python3 -c 'print([0.01 * i for i in range(64)])')
echo "BLAS: $(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3)"
run() { "$SERVE" bench "$1" -c 64 -d "${DURATION}s" --warmup 1s --data "$ROW" --json |
  /usr/bin/python3 -c 'import json,sys; j=json.load(sys.stdin); print("%.0f %.2f %d" % (j["throughput_rps"], j.get("server",{}).get("mean_batch_size",0), j["errors"]["total"]))'; }
raw() { SECONDS_PER_POINT=2 REPS=1 PEERS_OUT=/tmp/serve-bench-torch-peer /usr/bin/python3 "$PEERS_DIR/torch_raw.py" |
  awk '/threads=1 .*batch=32 / {for (i=1;i<=NF;i++) if ($i == "rows/s=") {print $(i+1); exit}}' | tr -d ','; }
printf '%-4s %12s %10s %8s %12s %12s %10s %10s\n' rep served_rows mean_batch errors raw_rows echo_req served/raw served/echo
for r in $(seq 1 "$REPS"); do
  read -r served batch errors <<<"$(run mlp)"
  read -r echo_rps _ _ <<<"$(run echo)"
  rawv=$(raw)
  printf '%-4s %12s %10s %8s %12s %12s %10s %10s\n' "$r" "$served" "$batch" "$errors" "$rawv" "$echo_rps" \
    "$(/usr/bin/python3 -c "print(round($served/max(float('$rawv' or 1),1),3))")" \
    "$(/usr/bin/python3 -c "print(round($served/max($echo_rps,1),3))")"
done
