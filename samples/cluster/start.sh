#!/usr/bin/env bash
# Starts the composition sample (samples/composition) over three serve nodes
# and HAProxy, all on 127.0.0.1:
#
#   client -> node A :8000 /composed      composed, model_one, model_two (remote)
#                 |  model_two calls
#                 v
#             HAProxy :8080 /model_two    health checks, retries (stats :8404)
#              /        \
#   node B1 :8001      node B2 :8002      model_two at /model_two
#
# Usage: start.sh [DIR]   (or CLUSTER_DIR=DIR start.sh; default: a new
# temporary folder, printed at the end). DIR gets a state dir per node
# (serve.log inside), haproxy.cfg, haproxy.log and cluster.env.
# Ports: NODE_A_PORT, NODE_B1_PORT, NODE_B2_PORT, HAPROXY_PORT,
# HAPROXY_STATS_PORT (defaults above). Binaries: SERVE (default serve on
# PATH), HAPROXY (default haproxy); plugins by bare name, through
# SERVE_PLUGIN_PATH or beside the serve binary.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

dir=${1:-${CLUSTER_DIR:-}}
if [ -z "$dir" ]; then
  dir=$(mktemp -d "${TMPDIR:-/tmp}/serve-cluster.XXXXXX")
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
[ ! -e "$dir/cluster.env" ] || die "$dir holds a cluster already (stop.sh $dir first)"
command -v "$haproxy" >/dev/null || die "haproxy not found (apt-get install haproxy, or set HAPROXY)"

export CLUSTER_DIR=$dir
export NODE_A_PORT=${NODE_A_PORT:-8000}
export NODE_B1_PORT=${NODE_B1_PORT:-8001}
export NODE_B2_PORT=${NODE_B2_PORT:-8002}
export HAPROXY_PORT=${HAPROXY_PORT:-8080}
export HAPROXY_STATS_PORT=${HAPROXY_STATS_PORT:-8404}
cat >"$dir/cluster.env" <<EOF
CLUSTER_DIR=$dir
NODE_A_PORT=$NODE_A_PORT
NODE_B1_PORT=$NODE_B1_PORT
NODE_B2_PORT=$NODE_B2_PORT
HAPROXY_PORT=$HAPROXY_PORT
HAPROXY_STATS_PORT=$HAPROXY_STATS_PORT
EOF
# The programs too, so that stop.sh and the others use the same ones.
printf 'CLUSTER_SERVE=%q\nCLUSTER_HAPROXY=%q\n' "$(command -v "$serve" || echo "$serve")" \
  "$(command -v "$haproxy" || echo "$haproxy")" >>"$dir/cluster.env"

# Whatever fails from here, stop what was started.
started=
trap '[ -n "$started" ] || { echo "start.sh: failed; stopping what was started" >&2; "$here/stop.sh" "$dir" >&2 || true; }' EXIT

# 1. Nodes B1 and B2: model_two at /model_two (nodes add-node.sh added
#    to an earlier run are not in haproxy.cfg any more: forget them).
rm -f "$dir"/node-b*.addr
for b in b1 b2; do
  port_var=NODE_${b^^}_PORT
  echo "127.0.0.1:${!port_var}" >"$dir/node-$b.addr"
  start_node "$b" "${!port_var}" "$here/node-b.yaml"
done

# 2. HAProxy in front of them, in master-worker mode: the master (pid in
#    haproxy.pid) stays, reloads on SIGUSR2, soft-stops on SIGUSR1.
cp "$here/haproxy.cfg" "$dir/haproxy.cfg"
"$haproxy" -c -q -f "$dir/haproxy.cfg"
setsid "$haproxy" -W -f "$dir/haproxy.cfg" -p "$dir/haproxy.pid" >>"$dir/haproxy.log" 2>&1 </dev/null &
haproxy_pid=$!
haproxy_ready() {
  alive "$haproxy_pid" || die "haproxy exited: $(tail -5 "$dir/haproxy.log")"
  is_up b1 && is_up b2
}
wait_until 30 "HAProxy to see B1 and B2 up" haproxy_ready

# 3. Node A, its model_two pointing at HAProxy.
sed "s|http://127.0.0.1:8080/|http://127.0.0.1:$HAPROXY_PORT/|" "$here/node-a.yaml" >"$dir/node-a.yaml"
start_node a "$NODE_A_PORT" "$dir/node-a.yaml"
started=1

cat <<EOF

cluster running; work dir $dir
  node A    http://127.0.0.1:$NODE_A_PORT/composed      (serve --state-dir $dir/node-a ...)
  HAProxy   http://127.0.0.1:$HAPROXY_PORT/model_two     (stats http://127.0.0.1:$HAPROXY_STATS_PORT/stats)
  node B1   http://127.0.0.1:$NODE_B1_PORT/model_two     (serve --state-dir $dir/node-b1 ...)
  node B2   http://127.0.0.1:$NODE_B2_PORT/model_two     (serve --state-dir $dir/node-b2 ...)
try:  curl -d hello http://127.0.0.1:$NODE_A_PORT/composed
stop: $here/stop.sh $dir
EOF
