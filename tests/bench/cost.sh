#!/usr/bin/env bash
# H4: the cost of one request, noise-free. For each serve build given, and
# for the evhttp and nginx peers in the same run: instructions per request
# (callgrind over the whole server process) and syscalls per request
# (strace -c -f over the whole server process), echo with max batch 1 and
# one keep-alive client posting 16 bytes. serve's figures cover every
# process it runs: the supervisor, the server and the replica process
# (`--isolation process`, the default; ISOLATION=thread for threads). Each figure is (count for N2
# requests - count for N1) / (N2 - N1), so start-up and shutdown cancel out.
#   bash tests/bench/cost.sh BUILD_DIR [BUILD_DIR...]
#   env: N1 (default 1000), N2 (default 5000), PEERS (default "evhttp nginx"),
#        ISOLATION (process or thread, default process)
set -euo pipefail
(($#)) || { echo "usage: cost.sh BUILD_DIR [BUILD_DIR...]" >&2; exit 2; }
BUILDS=()
for b in "$@"; do BUILDS+=("$(realpath "$b")"); done
source "$(dirname "$0")/lib.sh"  # cds to the repository root
source "$PEERS_DIR/peers_lib.sh"
N1=${N1:-1000}
N2=${N2:-5000}
PEERS_RUN=(${PEERS:-evhttp nginx})
ISOLATION=${ISOLATION:-process}
need_tools valgrind strace nginx
WORK=$(mktemp -d /tmp/serve-cost-XXXXXX)
trap 'rm -rf "$WORK"' EXIT

client() { # $1 port $2 path $3 requests: one keep-alive connection
  /usr/bin/python3 - "$1" "$2" "$3" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
req = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\n0123456789abcdef" % sys.argv[2].encode()
buf = b""
for _ in range(int(sys.argv[3])):
    s.sendall(req)
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    head, buf = buf.split(b"\r\n\r\n", 1)
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(buf) < length:
        buf += s.recv(4096)
    buf = buf[length:]
PY
}

wait_port() { # $1 port
  for _ in $(seq 300); do port_busy "$1" && return 0; sleep 0.1; done
  echo "nothing listens on $1" >&2; return 1
}

# $1 tool (callgrind|strace) $2 what (a build dir, evhttp, nginx) $3 requests
# Prints the tool's total: instructions, or syscalls.
measure() {
  local tool=$1 what=$2 n=$3 port=$((20000 + RANDOM % 20000)) out=$WORK/out.$RANDOM pid
  local wrap path=/
  if [[ $tool == callgrind ]]; then
    # One file per process (the supervisor's fork, the replica it spawns).
    wrap=(valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$out.%p")
  else
    wrap=(strace -c -f -o "$out")
  fi
  case $what in
    evhttp)
      build_evhttp
      "${wrap[@]}" "$BUILD/evhttp_echo" "$port" >/dev/null 2>&1 & pid=$! ;;
    nginx)
      mkdir -p "$WORK/nginx"
      sed "s/@PORT@/$port/; s/worker_processes.*/worker_processes 1;/" "$HERE/nginx.conf" > "$WORK/nginx/nginx.conf"
      # One worker, no master: the whole server is one process to count.
      "${wrap[@]}" nginx -p "$WORK/nginx/" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" \
        -g 'master_process off;' >/dev/null 2>&1 & pid=$! ;;
    *)
      local sd=$WORK/sd.$RANDOM
      mkdir -m 700 "$sd"
      SERVE_STATE_DIR=$sd "${wrap[@]}" "$what/serve" start --foreground --http 127.0.0.1:$port \
        --no-metrics --log-level warn >/dev/null 2>&1 & pid=$!
      for _ in $(seq 300); do [ -S "$sd/control.sock" ] && break; sleep 0.1; done
      SERVE_STATE_DIR=$sd "$what/serve" create-backend echo echo --isolation "$ISOLATION" >/dev/null
      SERVE_STATE_DIR=$sd "$what/serve" create-endpoint echo --backend echo --route /echo >/dev/null
      path=/echo ;;
  esac
  wait_port "$port"
  client "$port" "$path" "$n"
  case $what in
    evhttp|nginx) # strace writes its summary once the traced server has exited
      if [[ $tool == strace ]]; then pkill -TERM -P "$pid"; else kill -TERM "$pid"; fi ;;
    *) SERVE_STATE_DIR=$sd "$what/serve" stop >/dev/null ;;
  esac
  wait "$pid" 2>/dev/null || true
  if [[ $tool == callgrind ]]; then
    cat "$out".* | awk '/^totals:/ {sum += $2} END {print sum}'
  else
    awk '$NF == "total" {print $(NF-2)}' "$out" # calls column of the total line
  fi
}

per_request() { # $1 tool $2 what
  local a b
  a=$(measure "$1" "$2" "$N1")
  b=$(measure "$1" "$2" "$N2")
  /usr/bin/python3 -c "print(round(($b - $a) / ($N2 - $N1), 1))"
}

echo "serve: echo backend with --isolation $ISOLATION"
printf '%-40s %14s %14s\n' server instructions syscalls
for what in "${BUILDS[@]}" "${PEERS_RUN[@]}"; do
  printf '%-40s %14s %14s\n' "$what" "$(per_request callgrind "$what")" "$(per_request strace "$what")"
done
