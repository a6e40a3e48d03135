#!/usr/bin/env bash
# video-server against the Node/Express baseline, the same load one after the other.
#
#   bench/compare.sh                  # 3 rounds, 10 s per scenario
#   RUNS=5 DURATION=20 bench/compare.sh
#
# Each round starts each server fresh, pinned to SERVER_CPU with taskset, and runs every
# scenario with the load generator pinned to LOAD_CPU:
#   token-autocannon  the seed's exact command: autocannon POST /video/token -c 1000 -p 1
#   token-wrk         wrk -t1 -c100 POST /video/token (the contract's body)
#   video-wrk         wrk -t1 -c100 GET /video/12345 (records a view per request)
#   plaintext-wrk     wrk -t1 -c100 GET /plaintext (video-server only: its own ceiling)
#   plaintext-autocannon  autocannon -c 1000 -p 1 GET /plaintext (video-server only): what
#                     the same autocannon reaches when the server does almost nothing
#   plaintext-wrk on "minihttp": may_minihttp 0.1.11's hello world (bench/minihttp-ceiling),
#                     the leanest server on our runtime: the ceiling our HTTP layer is
#                     measured against
# Server CPU per request = (utime + stime from /proc/PID/stat over the scenario) / requests,
# so it counts every thread of the server (the batch writer included).
# The table of medians goes to stdout and bench/results/<timestamp>/compare.md, with every
# raw tool output beside it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$root"

RUNS="${RUNS:-3}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
SERVER_CPU="${SERVER_CPU:-1}"
LOAD_CPU="${LOAD_CPU:-0}"
VS_PORT="${VS_PORT:-3902}"
NODE_PORT="${NODE_PORT:-3903}"

out="$here/results/$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$out"
records="$out/records.jsonl"
: >"$records"

"$here/install.sh"
echo "building video-server and the may_minihttp ceiling (release)" >&2
cargo build --release --quiet
cargo build --release --quiet --manifest-path "$here/minihttp-ceiling/Cargo.toml"
MINI_PORT="${MINI_PORT:-3907}"
autocannon="$here/node_modules/.bin/autocannon"
token_body="$(cat "$here/token-body.json")"
clock_ticks="$(getconf CLK_TCK)"

cpu_ticks() { # utime + stime of a process, in clock ticks
  sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

wait_ready() { # port pid
  local deadline=$((SECONDS + 30))
  until curl -fs -o /dev/null "http://127.0.0.1:$1/video/12345"; do
    kill -0 "$2" 2>/dev/null || { echo "server exited during start" >&2; return 1; }
    ((SECONDS < deadline)) || { echo "server not ready after 30 s" >&2; return 1; }
    sleep 0.1
  done
}

stop_server() { # pid
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# Runs one scenario against the server with PID $2 on port $3, appends a record.
measure() { # scenario server pid port round
  local scenario=$1 server=$2 pid=$3 port=$4 round=$5
  local raw="$out/$server-$scenario-$round.txt"
  local before after
  before=$(cpu_ticks "$pid")
  case "$scenario" in
    token-autocannon)
      taskset -c "$LOAD_CPU" "$autocannon" -m POST -b "$token_body" \
        -H 'Content-type: application/json' -c 1000 -p 1 -d "$DURATION" --json \
        "http://127.0.0.1:$port/video/token" >"$raw" 2>"$raw.stderr"
      ;;
    plaintext-autocannon)
      taskset -c "$LOAD_CPU" "$autocannon" -c 1000 -p 1 -d "$DURATION" --json \
        "http://127.0.0.1:$port/plaintext" >"$raw" 2>"$raw.stderr"
      ;;
    token-wrk | video-wrk | plaintext-wrk)
      taskset -c "$LOAD_CPU" wrk -t1 -c100 -d"${DURATION}s" -s "bench/wrk/${scenario%-wrk}.lua" \
        "http://127.0.0.1:$port" >"$raw" 2>&1
      ;;
  esac
  after=$(cpu_ticks "$pid")
  python3 "$here/report.py" record "$scenario" "$server" "$round" "$raw" \
    "$((after - before))" "$clock_ticks" >>"$records"
}

for round in $(seq 1 "$RUNS"); do
  echo "round $round/$RUNS: video-server" >&2
  data_dir="$(mktemp -d)"
  taskset -c "$SERVER_CPU" target/release/video-server --listen "127.0.0.1:$VS_PORT" \
    --data-dir "$data_dir" --log-level warn 2>"$out/video-server-$round.log" &
  vs_pid=$!
  wait_ready "$VS_PORT" "$vs_pid"
  taskset -c "$LOAD_CPU" wrk -t1 -c50 -d"${WARMUP}s" -s bench/wrk/token.lua "http://127.0.0.1:$VS_PORT" >/dev/null
  for scenario in token-autocannon plaintext-autocannon token-wrk video-wrk plaintext-wrk; do
    measure "$scenario" video-server "$vs_pid" "$VS_PORT" "$round"
    if [ "$scenario" = video-wrk ]; then
      sleep 0.5 # one flush interval and then some: let the writer catch up before reading
      curl -fsS "http://127.0.0.1:$VS_PORT/metrics" | grep -E '^views_' >"$out/video-server-views-metrics-$round.txt"
    fi
  done
  stop_server "$vs_pid"
  rm -rf "$data_dir"

  echo "round $round/$RUNS: may_minihttp ceiling" >&2
  taskset -c "$SERVER_CPU" "$here/minihttp-ceiling/target/release/minihttp-ceiling" \
    "127.0.0.1:$MINI_PORT" >"$out/minihttp-$round.log" 2>&1 &
  mini_pid=$!
  until curl -fs -o /dev/null "http://127.0.0.1:$MINI_PORT/plaintext"; do sleep 0.1; done
  taskset -c "$LOAD_CPU" wrk -t1 -c50 -d"${WARMUP}s" -s bench/wrk/plaintext.lua "http://127.0.0.1:$MINI_PORT" >/dev/null
  measure plaintext-wrk minihttp "$mini_pid" "$MINI_PORT" "$round"
  stop_server "$mini_pid"

  echo "round $round/$RUNS: node baseline" >&2
  (cd "$here/.work/express" && PORT="$NODE_PORT" exec taskset -c "$SERVER_CPU" node server.js) \
    >"$out/node-$round.log" 2>&1 &
  node_pid=$!
  wait_ready "$NODE_PORT" "$node_pid"
  # The subshell execs into taskset, which execs node: $node_pid is node itself.
  taskset -c "$LOAD_CPU" wrk -t1 -c50 -d"${WARMUP}s" -s bench/wrk/token.lua "http://127.0.0.1:$NODE_PORT" >/dev/null
  for scenario in token-autocannon token-wrk video-wrk; do
    measure "$scenario" node "$node_pid" "$NODE_PORT" "$round"
  done
  stop_server "$node_pid"
done

{
  echo "# video-server vs Node/Express baseline"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')),"
  echo "servers on CPU $SERVER_CPU, load generator on CPU $LOAD_CPU (taskset), $RUNS rounds of ${DURATION} s per scenario; medians."
  echo
  python3 "$here/report.py" table "$records"
  echo
  echo "video-server /metrics after the last GET run:"
  echo
  echo '```'
  cat "$out/video-server-views-metrics-$RUNS.txt"
  echo '```'
} | tee "$out/compare.md"
echo "raw outputs: $out" >&2
