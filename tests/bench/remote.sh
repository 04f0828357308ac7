#!/usr/bin/env bash
# R1 of ../shared/BENCH.md: what a remote hop costs. Two nodes of the
# Release build on 127.0.0.1, thread replicas:
#   node B serves model_two (it echoes its body) at /model_two;
#   node A runs `composed` twice: /local calls a local model_two twice, and
#   /remote calls the local one, then model_two on node B through a remote
#   backend (composed's config: first=m2local, second=...). The body
#   {"score": 0.9} makes composed always make its second call.
# One keep-alive client (c=1), p50. The remote hop's cost is
# p50(/remote) - p50(/local): the remote call in place of a local handle
# call. The peer is a client's own HTTP request to node B (p50 of
# /model_two there), measured in the same rep. Goal: hop <= 1.3 x peer.
#   env: DURATION (s per run, default 5), REPS (default 3)
source "$(dirname "$0")/lib.sh"  # cds to the repository root
build_bench
WORK=$(mktemp -d /tmp/serve-bench-remote-XXXXXX)
mkdir -m 700 "$WORK/a" "$WORK/b"
start() { "$SERVE" --state-dir "$1" start --http 127.0.0.1:0 --log-level warn |
  sed -E 's/.*listening on (http:[^ ]+).*/\1/'; }
B=$(start "$WORK/b")
A=$(start "$WORK/a")
trap '"$SERVE" --state-dir "$WORK/a" stop >/dev/null 2>&1 || true
      "$SERVE" --state-dir "$WORK/b" stop >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
b() { "$SERVE" --state-dir "$WORK/b" "$@" >/dev/null; }
a() { "$SERVE" --state-dir "$WORK/a" "$@" >/dev/null; }
b create-backend model_two model_two --isolation thread
b create-endpoint model_two --backend model_two --route /model_two
a create-backend m2local model_two --isolation thread
a create-endpoint m2local --backend m2local
a create-backend model_two --remote "$B/model_two" --max-concurrent-queries 16
a create-endpoint model_two --backend model_two
for where in local remote; do
  second=m2local
  [ "$where" = remote ] && second=model_two
  a create-backend "composed_$where" composed --isolation thread --max-concurrent-queries 16 \
    --config first=m2local --config second="$second"
  a create-endpoint "composed_$where" --backend "composed_$where" --route "/$where"
done
BODY='{"score": 0.9}'
[ "$(curl -s -d "$BODY" "$A/remote")" = '{"model_used": 2, "score": 0.900000}' ] ||
  { echo "remote.sh: /remote does not answer as expected" >&2; exit 1; }

p50() { # $1 URL -> p50 in us; a run with errors fails the script
  "$SERVE" bench "$1" -t 1 -c 1 -d "${DURATION}s" --warmup 1s --data "$BODY" --json |
    /usr/bin/python3 -c '
import json, sys
r = json.load(sys.stdin)
e = r["errors"]
if e["total"] or e["status"]:
    sys.exit("remote.sh: errors: %s" % e)
print("%.1f" % r["latency_us"]["p50"])'
}

echo "R1: a remote hop against a client's own request to the node, c=1, $DURATION s per run ($SERVE)"
for r in $(seq 1 "$REPS"); do
  if ((r % 2)); then
    l=$(p50 "$A/local"); m=$(p50 "$A/remote"); d=$(p50 "$B/model_two")
  else
    d=$(p50 "$B/model_two"); m=$(p50 "$A/remote"); l=$(p50 "$A/local")
  fi
  /usr/bin/python3 -c "
l, m, d = $l, $m, $d
print('rep $r: composed local %.1f us, composed remote %.1f us, hop %.1f us; client to node B %.1f us; hop / client %.2f' % (l, m, m - l, d, (m - l) / d))"
done
echo "remote requests on node A: $(curl -s "$A/metrics" | grep -E '^serve_remote_requests_total' | tr '\n' ' ')"
