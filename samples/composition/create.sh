#!/usr/bin/env bash
# Creates the composition example on a running server, with the `serve` on
# PATH (or $SERVE) and the state dir of SERVE_STATE_DIR.
set -euo pipefail
serve=${SERVE:-serve}
$serve create-backend model_one model_one
$serve create-backend model_two model_two
$serve create-backend composed composed --max-concurrent-queries 10
$serve create-endpoint model_one --backend model_one          # handle only
$serve create-endpoint model_two --backend model_two          # handle only
$serve create-endpoint composed --backend composed --route /composed
