#!/usr/bin/env bash
# A handle hop against an HTTP hop, same server, same run (issue: composition).
#   /echo      one HTTP hop to the echo plugin
#   /composed  one HTTP hop, then 1 or 2 handle hops (model_one, then model_two
#              when the score > 0.5: 1.5 hops on average)
# With wrk at c=1 (light load) and c=64 (saturated), per request: HTTP hop =
# mean latency of /echo; handle hop = (mean latency of /composed - mean
# latency of /echo) / 1.5. At c=64 latencies are mostly queueing, so the
# c=1 figures are the cost of a hop itself.
#   env: DURATION (default 5), REPS (default 3), PEERS_DIR
source "$(dirname "$0")/lib.sh"
need_tools wrk
build_bench
export SERVE SERVE_STATE_DIR=/tmp/serve-bench-handles
"$SERVE" stop >/dev/null 2>&1 || true
rm -rf "$SERVE_STATE_DIR"
URL=$("$SERVE" start --http 127.0.0.1:0 --log-level warn | sed -E 's/.*listening on (http:[^ ]+).*/\1/')
trap '"$SERVE" stop >/dev/null 2>&1 || true' EXIT
"$SERVE" create-backend echo echo >/dev/null
"$SERVE" create-endpoint echo --backend echo --route /echo >/dev/null
bash samples/composition/create.sh >/dev/null
# (--log-level warn: model_one logs every request at info level.)
run() { # $1 path $2 connections -> "rps mean_us"
  timeout $((DURATION + 30)) wrk -t1 -c"$2" -d"${DURATION}s" -s "$PEERS_DIR/post.lua" "$URL$1" |
    /usr/bin/python3 -c '
import json, sys
for line in sys.stdin:
    if line.startswith("WRKJSON "):
        j = json.loads(line[8:]); print("%.0f %.1f" % (j["rps"], j["mean_us"])); break'
}
printf '%-4s %-5s %-10s %10s %10s\n' rep conns path req/s mean_us
for c in 1 64; do
  hops=()
  for r in $(seq 1 "$REPS"); do
    read -r e_rps e_mean <<<"$(run /echo "$c")"
    read -r c_rps c_mean <<<"$(run /composed "$c")"
    printf '%-4s %-5s %-10s %10s %10s\n' "$r" "$c" /echo "$e_rps" "$e_mean" "$r" "$c" /composed "$c_rps" "$c_mean"
    hops+=("$e_mean $c_mean")
  done
  /usr/bin/python3 - "$c" "${hops[@]}" <<'PY'
import statistics, sys
conns = sys.argv[1]
pairs = [tuple(map(float, a.split())) for a in sys.argv[2:]]
http = statistics.median(e for e, c in pairs)
handle = statistics.median((c - e) / 1.5 for e, c in pairs)
print("c=%s, median of %d reps: HTTP hop %.1f us, handle hop %.1f us (handle/HTTP %.2f)"
      % (conns, len(pairs), http, handle, handle / http))
PY
done
