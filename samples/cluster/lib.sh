# shellcheck shell=bash
# Helpers of start.sh, stop.sh, rolling-update.sh and add-node.sh (sourced).
# The cluster's work dir holds: cluster.env (its addresses), a state dir per
# node (node-a, node-b1, ...: serve.log is in each), node-NAME.addr
# (HOST:PORT of each B node), node-a.yaml, haproxy.cfg, haproxy.pid and
# haproxy.log.

serve=${SERVE:-serve}
haproxy=${HAPROXY:-haproxy}
if ! command -v "$haproxy" >/dev/null && [ -x /usr/sbin/haproxy ]; then
  haproxy=/usr/sbin/haproxy
fi
# shellcheck disable=SC2034  # used by the scripts that source this file
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() {
  echo "$(basename "$0"): $*" >&2
  exit 1
}

# cluster_dir DIR: the work dir given as argument or CLUSTER_DIR, absolute.
cluster_dir() {
  local dir=${1:-${CLUSTER_DIR:-}}
  [ -n "$dir" ] || die "give the cluster's work dir (argument or CLUSTER_DIR)"
  [ -d "$dir" ] || die "$dir: no such folder"
  (cd "$dir" && pwd)
}

# load_cluster DIR: the addresses start.sh chose, exported (haproxy -c and a
# reload read them from the environment).
load_cluster() {
  [ -f "$1/cluster.env" ] || die "$1 holds no running cluster (no cluster.env)"
  set -a
  # shellcheck disable=SC1091
  . "$1/cluster.env"
  set +a
  serve=${CLUSTER_SERVE:-$serve} # the programs start.sh used
  haproxy=${CLUSTER_HAPROXY:-$haproxy}
}

# server_status NAME: HAProxy's word for server NAME of backend model_two
# (UP, DOWN, "UP 1/2", MAINT ...), from the stats page's CSV.
server_status() {
  curl -fsS --max-time 2 "http://127.0.0.1:${HAPROXY_STATS_PORT}/stats;csv" 2>/dev/null |
    awk -F, -v s="$1" '$1 == "model_two" && $2 == s { print $18 }'
}

# wait_until SECONDS WHAT COMMAND...: runs COMMAND every 0.1 s until it
# succeeds; fails after SECONDS.
wait_until() {
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || die "gave up after ${seconds} s waiting for $what"
    sleep 0.1
  done
}

# alive PID: the process runs (a zombie its parent has not reaped yet counts
# as gone).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

is_up() { [ "$(server_status "$1")" = UP ]; }

# another_up NAME: some server of model_two other than NAME is UP.
another_up() {
  curl -fsS --max-time 2 "http://127.0.0.1:${HAPROXY_STATS_PORT}/stats;csv" 2>/dev/null |
    awk -F, -v s="$1" '$1 == "model_two" && $2 != s && $2 != "BACKEND" && $18 == "UP" { n++ }
                       END { exit n ? 0 : 1 }'
}

# start_node NAME PORT FILE: a serve node with state dir DIR/node-NAME.
start_node() {
  local name=$1 port=$2 file=$3
  [ -d "$CLUSTER_DIR/node-$name" ] || mkdir -m 700 "$CLUSTER_DIR/node-$name"
  "$serve" --state-dir "$CLUSTER_DIR/node-$name" start --http "127.0.0.1:$port" --deploy "$file"
}
