#!/usr/bin/env bash
# Quick start: installs what is missing, builds serve, starts a server with
# the sample backends and asks it real questions. The server keeps running.
#   env: SERVE_HTTP (default 127.0.0.1:8000), SERVE_STATE_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"

HTTP=${SERVE_HTTP:-127.0.0.1:8000}
export SERVE_STATE_DIR=${SERVE_STATE_DIR:-$PWD/build/quickstart-state}
serve=./build/serve
$serve stop >/dev/null 2>&1 || true   # a server left from an earlier run
rm -rf "$SERVE_STATE_DIR"
set -x
$serve start --http "$HTTP"
$serve create-backend counter1 counter --max-batch-size 5 --batch-wait-timeout-ms 50
$serve create-endpoint counter1 --backend counter1 --route /increment
$serve create-backend echo echo
$serve create-endpoint echo --backend echo --route /echo
$serve create-backend sim sim --max-batch-size 8 --batch-wait-timeout-ms 2 --config base_us=1000
$serve create-endpoint sim --backend sim --route /sim
set +x

echo "== 20 concurrent POSTs to /increment (batched up to 5, 50 ms wait):"
out=$(mktemp -d)
for i in $(seq 1 20); do
  curl -s -X POST -o "$out/$i" "http://$HTTP/increment" &
done
wait
for i in $(seq 1 20); do cat "$out/$i"; echo; done | sort -n | tr '\n' ' '; echo
rm -rf "$out"
echo "== POST /echo:"
curl -s -H 'Content-Type: application/json' -d '{"hello": "serve"}' "http://$HTTP/echo"; echo
echo "== POST /sim:"
curl -s -X POST "http://$HTTP/sim"; echo
echo "== serve status:"
sleep 1.2  # live figures come from samples the server takes once a second
$serve status
echo
echo "The server is still running (state dir $SERVE_STATE_DIR)."
echo "Stop it with: SERVE_STATE_DIR=$SERVE_STATE_DIR $serve stop"
