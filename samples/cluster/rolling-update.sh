#!/usr/bin/env bash
# Rolling update of the B nodes, one at a time, without a failed request:
#   1. `serve stop` on the node: /-/healthz answers 503 at once, new requests
#      on open connections get 503 (HAProxy retries them on another node),
#      what the node accepted is answered; HAProxy's next check takes the
#      node out.
#   2. `serve start` again on the same state dir and port with the new
#      deploy file.
#   3. Wait until HAProxy has the node UP again (two good checks) before
#      touching the next one, so one node always serves.
# Usage: rolling-update.sh DIR NEW_DEPLOY_FILE [NAME...]   (names: b1 b2 ...;
# default every B node). STOP_TIMEOUT: seconds a node may take to drain
# (default 30).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -ge 2 ] || die "usage: rolling-update.sh DIR NEW_DEPLOY_FILE [NAME...]"
dir=$(cluster_dir "$1")
file=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
[ -f "$file" ] || die "$2: no such file"
shift 2
load_cluster "$dir"
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for addr in "$dir"/node-b*.addr; do
    [ -e "$addr" ] || continue
    n=${addr##*/node-}
    names+=("${n%.addr}")
  done
fi

for name in "${names[@]}"; do
  [ -f "$dir/node-$name.addr" ] || die "no node $name in $dir"
  addr=$(cat "$dir/node-$name.addr")
  # Never take out the last node that serves.
  wait_until 60 "another node UP in HAProxy" another_up "$name"
  echo "$name: stopping (drain)"
  "$serve" --state-dir "$dir/node-$name" stop --timeout "${STOP_TIMEOUT:-30}"
  echo "$name: starting with $file"
  "$serve" --state-dir "$dir/node-$name" start --http "$addr" --deploy "$file"
  wait_until 60 "$name to answer /-/healthz" curl -fsS -o /dev/null --max-time 2 "http://$addr/-/healthz"
  wait_until 60 "HAProxy to mark $name UP" is_up "$name"
  echo "$name: UP"
done
