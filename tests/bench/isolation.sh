#!/usr/bin/env bash
# P1 of ../shared/BENCH.md: what process isolation costs. One server of the
# Release build with the same backends twice, `--isolation process` and
# `--isolation thread`; `serve bench` runs the two interleaved (the order
# swaps every rep), and each rep gives the paired ratio process/thread.
#   echo, max batch 1: req/s at c=64 (goal >= 0.9) and p50 at c=1 (goal
#   <= thread + 15 us);
#   B1 (sim, base 2000 us + 20 us per item, max batch 32, c=256): req/s
#   against the ceiling 32 / (2000 + 32 * 20) us = 12121 req/s (goal >= 0.95).
#   env: DURATION (s per run, default 5), REPS (default 3)
source "$(dirname "$0")/lib.sh"  # cds to the repository root
build_bench
WORK=$(mktemp -d /tmp/serve-bench-isolation-XXXXXX)
export SERVE_STATE_DIR=$WORK/state
mkdir -m 700 "$SERVE_STATE_DIR"
URL=$("$SERVE" start --http 127.0.0.1:0 --log-level warn | sed -E 's/.*listening on (http:[^ ]+).*/\1/')
trap '"$SERVE" stop >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
for mode in process thread; do
  "$SERVE" create-backend "echo_$mode" echo --isolation "$mode" >/dev/null
  "$SERVE" create-endpoint "echo_$mode" --backend "echo_$mode" --route "/echo_$mode" >/dev/null
  "$SERVE" create-backend "sim_$mode" sim --isolation "$mode" --max-batch-size 32 \
    --max-queued-requests 4096 --config base_us=2000 --config per_item_us=20 >/dev/null
  "$SERVE" create-endpoint "sim_$mode" --backend "sim_$mode" --route "/sim_$mode" >/dev/null
done

run() { # $1 path $2 connections -> "req/s p50_us"; a run with errors fails the script
  "$SERVE" bench "$URL$1" -t 1 -c "$2" -d "${DURATION}s" --warmup 1s --data 0123456789abcdef --json |
    /usr/bin/python3 -c '
import json, sys
r = json.load(sys.stdin)
e = r["errors"]
if e["total"] or e["status"]:
    sys.exit("isolation.sh: errors: %s" % e)
print("%.0f %.1f" % (r["throughput_rps"], r["latency_us"]["p50"]))'
}

pair() { # $1 label $2 path prefix $3 connections -> one line per rep, then the medians
  local r p t
  for r in $(seq 1 "$REPS"); do
    if ((r % 2)); then
      p=$(run "/${2}_process" "$3"); t=$(run "/${2}_thread" "$3")
    else
      t=$(run "/${2}_thread" "$3"); p=$(run "/${2}_process" "$3")
    fi
    echo "$1 rep $r: process $p thread $t"
  done
}

echo "P1: process against thread isolation, $DURATION s per run ($SERVE)"
{
  pair "echo c=64" echo 64
  pair "echo c=1" echo 1
  pair "B1 c=256" sim 256
} | tee "$WORK/p1.txt"
/usr/bin/python3 - "$WORK/p1.txt" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(.*) rep \d+: process (\S+) (\S+) thread (\S+) (\S+)", line)
    if m:
        rows.setdefault(m.group(1), []).append(tuple(float(x) for x in m.group(2, 3, 4, 5)))
def med(xs):
    return statistics.median(xs)
e64 = rows["echo c=64"]
print("echo c=64: process/thread req/s = %.3f (median of paired reps %s; goal >= 0.9)"
      % (med([p / t for p, _, t, _ in e64]), ", ".join("%.3f" % (p / t) for p, _, t, _ in e64)))
e1 = rows["echo c=1"]
print("echo c=1: p50 process %.1f us, thread %.1f us: +%.1f us (median of paired differences; "
      "goal <= +15 us)" % (med([pp for _, pp, _, _ in e1]), med([tp for _, _, _, tp in e1]),
                           med([pp - tp for _, pp, _, tp in e1])))
b1 = rows["B1 c=256"]
print("B1: process %.3f, thread %.3f of the ceiling 12121 req/s (medians; goal >= 0.95)"
      % (med([p for p, _, _, _ in b1]) / 12121, med([t for _, _, t, _ in b1]) / 12121))
PY
