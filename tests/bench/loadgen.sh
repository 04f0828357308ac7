#!/usr/bin/env bash
# G1, B1 and B2 of ../shared/BENCH.md with serve bench.
#   G1: serve bench -c 64 against wrk -t1 -c64, both on nginx, interleaved;
#       serve bench runs with one thread (-t 1) like wrk, and with its default.
#   B1: sim 2000 us + 20 us/item, max batch 32, one replica, serve bench -c 256:
#       the fraction of the ceiling 32 / (2000 + 32 x 20) us = 12121 req/s.
#   B2: the same backend with a 1 ms batch wait, open loop at 10 % of the
#       ceiling: p50 against base + wait + 0.2 ms = 3.2 ms.
#   env: DURATION (default 5), REPS (default 3), PEERS_DIR
source "$(dirname "$0")/lib.sh"
source "$PEERS_DIR/peers_lib.sh"
need_tools wrk nginx
build_bench
export SERVE_STATE_DIR=/tmp/serve-bench-loadgen
"$SERVE" stop >/dev/null 2>&1 || true
rm -rf "$SERVE_STATE_DIR"
trap '"$SERVE" stop >/dev/null 2>&1 || true; stop_peers' EXIT
start_peer nginx >/dev/null
NGINX=http://127.0.0.1:${PORT[nginx]}/

wrk_rps() { timeout $((DURATION + 30)) wrk -t1 -c64 -d"${DURATION}s" "$NGINX" | awk '/^Requests\/sec/ {printf "%.0f", $2}'; }
bench_rps() { "$SERVE" bench "$NGINX" -c 64 -d "${DURATION}s" "$@" --json |
  /usr/bin/python3 -c 'import json,sys; print("%.0f" % json.load(sys.stdin)["throughput_rps"])'; }

echo "== G1: against nginx at 64 connections"
printf '%-4s %10s %14s %14s %8s %8s\n' rep wrk bench_t1 bench_default t1/wrk def/wrk
r1=(); r2=()
for r in $(seq 1 "$REPS"); do
  w=$(wrk_rps); b1=$(bench_rps -t 1); b2=$(bench_rps)
  q1=$(/usr/bin/python3 -c "print(round($b1/$w,3))"); q2=$(/usr/bin/python3 -c "print(round($b2/$w,3))")
  r1+=("$q1"); r2+=("$q2")
  printf '%-4s %10s %14s %14s %8s %8s\n' "$r" "$w" "$b1" "$b2" "$q1" "$q2"
done
/usr/bin/python3 -c "import statistics,sys; a=sys.argv[1].split(); b=sys.argv[2].split(); print('median serve bench/wrk: -t 1 %.3f, default threads %.3f' % (statistics.median(map(float,a)), statistics.median(map(float,b))))" "${r1[*]}" "${r2[*]}"

URL=$("$SERVE" start --http 127.0.0.1:0 --log-level warn | sed -E 's/.*listening on (http:[^ ]+).*/\1/')
"$SERVE" create-backend b1 sim --max-batch-size 32 --max-queued-requests 4096 \
  --config base_us=2000 --config per_item_us=20 >/dev/null
"$SERVE" create-endpoint b1 --backend b1 --route /b1 >/dev/null
"$SERVE" create-backend b2 sim --max-batch-size 32 --batch-wait-timeout-ms 1 \
  --config base_us=2000 --config per_item_us=20 >/dev/null
"$SERVE" create-endpoint b2 --backend b2 --route /b2 >/dev/null

echo "== B1: closed loop, 256 connections (ceiling 12121 req/s)"
for r in $(seq 1 "$REPS"); do
  "$SERVE" bench b1 -c 256 -d "${DURATION}s" --warmup 1s --json | /usr/bin/python3 -c '
import json, sys
j = json.load(sys.stdin); b = j["server"]["backends"]["b1"]
print("rep %s: %.0f req/s = %.3f of the ceiling, mean batch %.2f, p50 %.1f ms" % (sys.argv[1],
      j["throughput_rps"], j["throughput_rps"] / 12121, b["mean_batch_size"], j["latency_us"]["p50"] / 1e3))' "$r"
done

echo "== B2: open loop at 1212 req/s, wait 1 ms (goal p50 <= 3.2 ms)"
for r in $(seq 1 "$REPS"); do
  "$SERVE" bench b2 --rate 1212 -c 64 -d "${DURATION}s" --json | /usr/bin/python3 -c '
import json, sys
j = json.load(sys.stdin); b = j["server"]["backends"]["b2"]
print("rep %s: p50 %.2f ms, p99 %.2f ms, mean batch %.2f, %d late" % (sys.argv[1],
      j["latency_us"]["p50"] / 1e3, j["latency_us"]["p99"] / 1e3, b["mean_batch_size"], j["late"]))' "$r"
done
