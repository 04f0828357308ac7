#!/usr/bin/env bash
# S1 of ../shared/BENCH.md: what the number of endpoints costs. Two servers of
# the same Release build, each with one echo backend: one serves a single
# endpoint, /echo; the other serves /echo among 1000 endpoints, the 999 others
# longer (so a scan, longest route first, would try them all before /echo).
# `serve bench` posts 16 bytes to /echo on each, interleaved (the order swaps
# every rep), and each rep gives the paired ratio 1000/1 of req/s.
#   env: DURATION (s per run, default 5), REPS (default 3), CONNS (default 64)
source "$(dirname "$0")/lib.sh"  # cds to the repository root
build_bench
WORK=$(mktemp -d /tmp/serve-bench-routes-XXXXXX)

deploy_file() { # $1 endpoints -> a deploy file on stdout
  echo "backends:"
  echo "  - name: echo"
  echo "    plugin: echo"
  echo "endpoints:"
  echo "  - {name: echo, route: /echo, backend: echo}"
  for ((i = 1; i < $1; i++)); do
    printf '  - {name: m%04d, route: /v1/models/m%04d/infer, backend: echo}\n' "$i" "$i"
  done
}

start() { # $1 endpoints; prints the URL
  local sd=$WORK/state-$1
  mkdir -m 700 "$sd"
  deploy_file "$1" > "$WORK/deploy-$1.yaml"
  SERVE_STATE_DIR=$sd "$SERVE" start --http 127.0.0.1:0 --log-level warn \
    --deploy "$WORK/deploy-$1.yaml" | sed -E 's/.*listening on (http:[^ ]+).*/\1/'
  local n
  n=$(SERVE_STATE_DIR=$sd "$SERVE" list-endpoints --json |
    /usr/bin/python3 -c 'import json, sys; print(len(json.load(sys.stdin)))')
  [[ $n == "$1" ]] || { echo "routes.sh: the server serves $n endpoints, not $1" >&2; exit 1; }
}
stop_all() {
  for n in 1 1000; do SERVE_STATE_DIR=$WORK/state-$n "$SERVE" stop >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap stop_all EXIT
URL_1=$(start 1)
URL_1000=$(start 1000)

rps() { # $1 URL $2 connections -> req/s; a run with errors fails the script
  "$SERVE" bench "$1/echo" -t 1 -c "$2" -d "${DURATION}s" --data 0123456789abcdef --json |
    /usr/bin/python3 -c '
import json, sys
r = json.load(sys.stdin)
e = r["errors"]
if e["total"] or e["status"]:
    sys.exit("routes.sh: errors: %s" % e)
print("%.0f" % r["throughput_rps"])'
}

echo "S1: /echo with 1000 endpoints against 1, $DURATION s per run ($SERVE)"
for c in ${CONNS:-64}; do
  ratios=()
  for r in $(seq 1 "$REPS"); do
    if ((r % 2)); then
      one=$(rps "$URL_1" "$c"); many=$(rps "$URL_1000" "$c")
    else
      many=$(rps "$URL_1000" "$c"); one=$(rps "$URL_1" "$c")
    fi
    ratio=$(awk -v a="$many" -v b="$one" 'BEGIN {printf "%.3f", a / b}')
    echo "c=$c rep $r: 1 endpoint $one req/s, 1000 endpoints $many req/s, 1000/1 $ratio"
    ratios+=("$ratio")
  done
  /usr/bin/python3 - "$c" "${ratios[@]}" <<'PY'
import statistics, sys
c, ratios = sys.argv[1], [float(x) for x in sys.argv[2:]]
print("c=%s, median of %d reps: 1000/1 = %.3f (spread %.3f-%.3f; goal >= 0.97)"
      % (c, len(ratios), statistics.median(ratios), min(ratios), max(ratios)))
PY
done
