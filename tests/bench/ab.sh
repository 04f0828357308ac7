#!/usr/bin/env bash
# Two serve builds against each other on H1 (echo, max batch 1): wrk runs
# interleaved, old then new, and the paired ratio new/old per rep.
#   bash tests/bench/ab.sh OLD_BUILD_DIR NEW_BUILD_DIR
#   env: DURATION (default 5), REPS (default 3), CONNS (default "1 64"), PEERS_DIR
# Make the old build from a worktree, e.g.
#   git worktree add /tmp/old-src REV && cmake -S /tmp/old-src -B /tmp/old-build -DCMAKE_BUILD_TYPE=Release
OLD=$(realpath "${1:?usage: ab.sh OLD_BUILD_DIR NEW_BUILD_DIR}")
NEW=$(realpath "${2:?usage: ab.sh OLD_BUILD_DIR NEW_BUILD_DIR}")
source "$(dirname "$0")/lib.sh"  # cds to the repository root
need_tools wrk
start() { # $1 build dir, $2 state dir; prints the URL
  SERVE_STATE_DIR=$2 "$1/serve" stop >/dev/null 2>&1 || true
  rm -rf "$2"
  SERVE_STATE_DIR=$2 "$1/serve" start --http 127.0.0.1:0 --log-level warn |
    sed -E 's/.*listening on (http:[^ ]+).*/\1/'
  SERVE_STATE_DIR=$2 "$1/serve" create-backend echo echo >/dev/null
  SERVE_STATE_DIR=$2 "$1/serve" create-endpoint echo --backend echo --route /echo >/dev/null
}
OLD_URL=$(start "$OLD" /tmp/serve-ab-old)
NEW_URL=$(start "$NEW" /tmp/serve-ab-new)
trap 'SERVE_STATE_DIR=/tmp/serve-ab-old "$OLD/serve" stop >/dev/null 2>&1 || true
      SERVE_STATE_DIR=/tmp/serve-ab-new "$NEW/serve" stop >/dev/null 2>&1 || true' EXIT
rps() { timeout $((DURATION + 30)) wrk -t1 -c"$2" -d"${DURATION}s" -s "$PEERS_DIR/post.lua" "$1/echo" |
  awk '/^Requests\/sec/ {print $2}'; }
for c in ${CONNS:-1 64}; do
  for r in $(seq 1 "$REPS"); do
    o=$(rps "$OLD_URL" "$c"); n=$(rps "$NEW_URL" "$c")
    echo "c=$c rep $r: old $o new $n new/old $(awk -v a="$n" -v b="$o" 'BEGIN {printf "%.3f", a / b}')"
  done
done
