#!/usr/bin/env bash
# H1 and H2 of ../shared/BENCH.md with observability off and on, same run:
# three servers side by side (--no-metrics; metrics; metrics + a JSON access
# log to a file), wrk at 64 connections, interleaved, paired ratios.
#   env: DURATION (default 5), REPS (default 3), PEERS_DIR
source "$(dirname "$0")/lib.sh"
need_tools wrk
build_bench
BASE=/tmp/serve-bench-observability
rm -rf "$BASE"
declare -A URL
start() { # $1 name, rest: start options
  local name=$1; shift
  URL[$name]=$("$SERVE" --state-dir "$BASE/$name" start --http 127.0.0.1:0 --http-threads 1 "$@" |
    sed -E 's/.*listening on (http:[^ ]+).*/\1/')
  "$SERVE" --state-dir "$BASE/$name" create-backend echo echo >/dev/null
  "$SERVE" --state-dir "$BASE/$name" create-endpoint echo --backend echo --route /echo >/dev/null
  "$SERVE" --state-dir "$BASE/$name" create-backend echo32 echo --max-batch-size 32 >/dev/null
  "$SERVE" --state-dir "$BASE/$name" create-endpoint echo32 --backend echo32 --route /echo32 >/dev/null
}
trap 'for n in off metrics log; do "$SERVE" --state-dir "$BASE/$n" stop >/dev/null 2>&1 || true; done' EXIT
mkdir -p "$BASE"
start off --no-metrics
start metrics
start log --access-log "$BASE/access.log" --access-log-format json
rps() { timeout $((DURATION + 30)) wrk -t1 -c64 -d"${DURATION}s" -s "$PEERS_DIR/post.lua" "$1" |
  awk '/^Requests\/sec/ {printf "%.0f", $2}'; }
for path in /echo /echo32; do
  echo "== $path at 64 connections (H1: /echo, H2: /echo32)"
  printf '%-4s %10s %10s %10s %9s %9s\n' rep off metrics log metrics/off log/off
  m=(); l=()
  for r in $(seq 1 "$REPS"); do
    a=$(rps "${URL[off]}$path"); b=$(rps "${URL[metrics]}$path"); c=$(rps "${URL[log]}$path")
    qm=$(/usr/bin/python3 -c "print(round($b/$a,3))"); ql=$(/usr/bin/python3 -c "print(round($c/$a,3))")
    m+=("$qm"); l+=("$ql")
    printf '%-4s %10s %10s %10s %9s %9s\n' "$r" "$a" "$b" "$c" "$qm" "$ql"
  done
  /usr/bin/python3 -c "import statistics,sys; print('median: metrics/off %.3f, metrics+access log/off %.3f' % (statistics.median(map(float,sys.argv[1].split())), statistics.median(map(float,sys.argv[2].split()))))" "${m[*]}" "${l[*]}"
done
echo "access log lines written: $(wc -l < "$BASE/access.log")"
