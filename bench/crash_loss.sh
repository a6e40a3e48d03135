#!/usr/bin/env bash
# The crash guarantee, measured: how many views answered 200 are lost when the server is
# killed with SIGKILL (no chance to flush) in the middle of a GET load.
#
#   bench/crash_loss.sh            # RUNS=3, each: 3 s of load, then kill -9
#
# Per run: a fresh data directory; the server on SERVER_CPU, wrk (-t1 -c100, GET /video/
# 12345) on LOAD_CPU; after KILL_AFTER seconds `kill -9`; wrk's count of responses is the
# views answered (plus the one readiness check); then the server is started again on the
# same directory and its count (read from the database at start) is what was persisted.
# Prints answered, persisted and lost per run. Cleans up its data directories.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$root"
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
RUNS="${RUNS:-3}"
KILL_AFTER="${KILL_AFTER:-3}"
SERVER_CPU="${SERVER_CPU:-1}"
LOAD_CPU="${LOAD_CPU:-0}"
PORT="${PORT:-3911}"
FLAGS="${FLAGS:-}"

"$here/install.sh" wrk
cargo build --release --quiet
data_dirs=()
cleanup() { rm -rf "${data_dirs[@]}"; }
trap cleanup EXIT

for run in $(seq 1 "$RUNS"); do
  data="$(mktemp -d)"
  data_dirs+=("$data")
  # shellcheck disable=SC2086 # FLAGS is a list of options
  taskset -c "$SERVER_CPU" target/release/video-server --listen "127.0.0.1:$PORT" \
    --data-dir "$data" --log-level warn $FLAGS 2>/dev/null &
  pid=$!
  wait_ready "$PORT" "$pid" /healthz # not a play: it would be a view
  out="$(mktemp)"
  taskset -c "$LOAD_CPU" wrk -t1 -c100 -d"$((KILL_AFTER + 2))s" -s bench/wrk/video.lua \
    "http://127.0.0.1:$PORT" >"$out" 2>&1 &
  load=$!
  sleep "$KILL_AFTER"
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
  wait "$load" || true
  answered=$(sed -n 's/^WRK_JSON //p' "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
  rm -f "$out"
  target/release/video-server --listen "127.0.0.1:$PORT" --data-dir "$data" --log-level warn 2>/dev/null &
  pid=$!
  wait_ready "$PORT" "$pid" /healthz
  persisted=$(curl -fsS "http://127.0.0.1:$PORT/video/12345/views" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["views"])')
  stop_server "$pid"
  lost=$((answered - persisted))
  rate=$(python3 -c "print(round($answered / $KILL_AFTER))")
  echo "run $run: $answered views answered in ~${KILL_AFTER} s (~$rate/s), $persisted persisted, $lost lost at kill -9"
done
