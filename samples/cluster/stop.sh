#!/usr/bin/env bash
# Stops a cluster started by start.sh: node A first (it answers what it
# accepted, calling model_two through HAProxy as usual), then every B node
# (each drains), then HAProxy. The work dir stays (logs, state dirs); start.sh
# can start it again.
# Usage: stop.sh [DIR]   (or CLUSTER_DIR=DIR); STOP_TIMEOUT: seconds each
# node may take to drain (default 30).
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

dir=$(cluster_dir "${1:-}") || exit 1
# The serve and haproxy that start.sh used.
if [ -f "$dir/cluster.env" ]; then
  # shellcheck disable=SC1091
  . "$dir/cluster.env"
  serve=${CLUSTER_SERVE:-$serve}
  haproxy=${CLUSTER_HAPROXY:-$haproxy}
fi
timeout=${STOP_TIMEOUT:-30}
status=0

for node in "$dir/node-a" "$dir"/node-b*/; do
  node=${node%/}
  [ -e "$node/serve.pid" ] || continue
  # Running while its supervisor holds the lock on serve.pid.
  if ! flock -n -s "$node/serve.pid" true; then
    "$serve" --state-dir "$node" stop --timeout "$timeout" || status=1
  fi
done

if [ -s "$dir/haproxy.pid" ]; then
  pid=$(cat "$dir/haproxy.pid")
  # The master of this cluster's HAProxy, not a process that took its pid.
  if alive "$pid" && grep -qF "$dir/haproxy.cfg" "/proc/$pid/cmdline" 2>/dev/null; then
    kill -USR1 "$pid"  # soft stop: finish the requests in flight, then exit
    for _ in $(seq 100); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      kill -TERM "$pid"
      sleep 0.5
    fi
    echo "haproxy: stopped (pid $pid)"
  fi
  rm -f "$dir/haproxy.pid"
fi

rm -f "$dir/cluster.env"
exit $status
