#!/usr/bin/env bash
# Adds a B node to a running cluster: starts serve with node-b.yaml (or the
# file given) on PORT, appends it to the cluster's haproxy.cfg, and reloads
# HAProxy (SIGUSR2 to its master: a new worker with the new server list
# takes the listening socket, the old one finishes its requests and exits).
# Returns once HAProxy has the node UP, i.e. it takes its share of traffic.
# Usage: add-node.sh DIR NAME PORT [DEPLOY_FILE]   (NAME: b3, b4, ...)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -ge 3 ] || die "usage: add-node.sh DIR NAME PORT [DEPLOY_FILE]"
dir=$(cluster_dir "$1")
name=$2
port=$3
file=${4:-$here/node-b.yaml}
[[ $name =~ ^b[a-z0-9_-]+$ ]] || die "$name: a B node's name is b followed by letters or digits (b3)"
[[ $port =~ ^[0-9]+$ ]] || die "$port: not a port"
load_cluster "$dir"
[ ! -e "$dir/node-$name.addr" ] || die "$dir has a node $name already"

start_node "$name" "$port" "$file"
echo "127.0.0.1:$port" >"$dir/node-$name.addr"
# backend model_two is the last section of haproxy.cfg: the line joins it.
printf '    server %s 127.0.0.1:%s\n' "$name" "$port" >>"$dir/haproxy.cfg"
"$haproxy" -c -q -f "$dir/haproxy.cfg"
kill -USR2 "$(cat "$dir/haproxy.pid")"
wait_until 30 "HAProxy to mark $name UP" is_up "$name"
echo "$name: UP in HAProxy (127.0.0.1:$port)"
