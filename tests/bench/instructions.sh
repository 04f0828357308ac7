#!/usr/bin/env bash
# Instructions per HTTP request (echo, max batch 1, one keep-alive client),
# counted exactly by callgrind over the whole server process: the count for
# N2 requests less the count for N1, over N2 - N1. Noise-free, so it compares
# two builds of a hot path where wrk cannot.
#   bash tests/bench/instructions.sh BUILD_DIR [N1 N2]   (default 1000 5000)
BUILD=$(realpath "${1:?usage: instructions.sh BUILD_DIR [N1 N2]}")
source "$(dirname "$0")/lib.sh"  # cds to the repository root
N1=${2:-1000}
N2=${3:-5000}
need_tools valgrind
count() { # $1 requests; prints the instructions of the whole run
  local sd out port
  sd=$(mktemp -d /tmp/serve-callgrind-XXXXXX)
  out=$sd/callgrind.out
  port=$((20000 + RANDOM % 20000))
  SERVE_STATE_DIR=$sd valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$BUILD/serve" start --foreground --http 127.0.0.1:$port --no-metrics --log-level warn \
    >/dev/null 2>"$sd/valgrind.err" &
  for _ in $(seq 150); do [ -S "$sd/control.sock" ] && break; sleep 0.2; done
  SERVE_STATE_DIR=$sd "$BUILD/serve" create-backend echo echo >/dev/null
  SERVE_STATE_DIR=$sd "$BUILD/serve" create-endpoint echo --backend echo --route /echo >/dev/null
  /usr/bin/python3 - "$port" "$1" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
req = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\n0123456789abcdef"
for _ in range(int(sys.argv[2])):
    s.sendall(req)
    buf = b""
    while not buf.endswith(b"0123456789abcdef"):
        buf += s.recv(4096)
PY
  SERVE_STATE_DIR=$sd "$BUILD/serve" stop >/dev/null
  wait
  awk '/^totals:/ {print $2}' "$out"
  rm -rf "$sd"
}
a=$(count "$N1")
b=$(count "$N2")
echo "$BUILD: $(( (b - a) / (N2 - N1) )) instructions per request ($N1 requests: $a, $N2: $b)"
