#!/usr/bin/env bash
# Benchmarks H1 H2 H3 B1 M1 of ../shared/BENCH.md, each as a ratio against a
# peer measured in the same run. Not a test: run it on purpose.
#   env: DURATION (s per wrk run, default 5), REPS (default 3), PEERS_DIR
# Writes the raw output to $OUT (default /tmp/serve-bench) and prints a summary.
source "$(dirname "$0")/lib.sh"
OUT=${OUT:-/tmp/serve-bench}
mkdir -p "$OUT"
need_tools wrk nginx
# pyserve_uv (H1): Debian's uvicorn with uvloop and httptools
dpkg-query -W python3-uvloop >/dev/null 2>&1 || apt-get install -y -qq python3-uvicorn python3-starlette python3-uvloop python3-httptools >/dev/null
build_bench

ulimit -n "$(ulimit -Hn)"  # 10000 connections for M1
export SERVE_STATE_DIR=$OUT/state
"$SERVE" stop >/dev/null 2>&1 || true
rm -rf "$SERVE_STATE_DIR"
URL=$("$SERVE" start --http 127.0.0.1:0 | sed -E 's/.*listening on (http:[^ ]+).*/\1/')
trap '"$SERVE" stop >/dev/null 2>&1 || true' EXIT
# The server process (serve.pid holds its supervisor's pid).
PID=$("$SERVE" status --json | /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["server_pid"])')
rss_kb() { awk '/VmRSS/ {print $2}' /proc/$PID/status; }
IDLE_RSS=$(rss_kb)

"$SERVE" create-backend echo echo >/dev/null
"$SERVE" create-endpoint echo --backend echo --route /echo >/dev/null
"$SERVE" create-backend echo32 echo --max-batch-size 32 >/dev/null
"$SERVE" create-endpoint echo32 --backend echo32 --route /echo32 >/dev/null
"$SERVE" create-backend sim sim --max-batch-size 32 --max-queued-requests 4096 \
  --config base_us=2000 --config per_item_us=20 >/dev/null
"$SERVE" create-endpoint sim --backend sim --route /sim >/dev/null
echo "serve at $URL (pid $PID), idle RSS ${IDLE_RSS} kB"

echo "== H1/H3: echo, max batch 1, vs nginx, evhttp and pyserve_uv"
DURATION=$DURATION REPS=$REPS CONNS="1 16 64 256" PEERS="nginx evhttp pyserve_uv" \
  bash "$PEERS_DIR/compare_http.sh" "$URL/echo" | tee "$OUT/h1.txt"
echo "== H2: echo, max batch 32, wait 0, vs nginx"
DURATION=$DURATION REPS=$REPS CONNS="64" PEERS="nginx" \
  bash "$PEERS_DIR/compare_http.sh" "$URL/echo32" | tee "$OUT/h2.txt"

echo "== B1: sim base 2000 us + 20 us/item, max batch 32, one replica, 256 connections"
for r in $(seq 1 "$REPS"); do
  timeout $((DURATION + 30)) wrk -t1 -c256 -d"${DURATION}s" -s "$PEERS_DIR/post.lua" "$URL/sim" |
    awk -v r="$r" '/^Requests\/sec/ {printf "rep %s: %.0f req/s = %.3f of the ceiling 12121\n", r, $2, $2 / 12121}'
done | tee "$OUT/b1.txt"

echo "== M1: RSS idle and with 10000 idle keep-alive connections"
HOSTPORT=${URL#http://}
BEFORE=$(rss_kb)
/usr/bin/python3 - "$HOSTPORT" "$PID" <<'PY' | tee "$OUT/m1.txt"
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
pid = sys.argv[2]
def rss():
    for line in open("/proc/%s/status" % pid):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
before = rss()
conns = []
for i in range(10000):
    s = socket.create_connection((host, int(port)))
    s.sendall(b"GET /-/healthz HTTP/1.1\r\nHost: b\r\n\r\n")
    conns.append(s)
for s in conns:
    s.recv(4096)  # each connection has served one request and is now idle
time.sleep(1)
after = rss()
print("RSS before %d kB, with 10000 idle keep-alive connections %d kB: %.2f kB per connection"
      % (before, after, (after - before) / 10000))
for s in conns:
    s.close()
PY
echo "idle RSS at start: ${IDLE_RSS} kB (goal <= 16384 kB)" | tee -a "$OUT/m1.txt"
