#!/usr/bin/env bash
# The benchmark run: every performance target of the project, measured side by side in one
# run, with the results table, plots and raw outputs written to bench/results/<time>/.
#
#   bench/run.sh                     # RUNS=3 rounds; about 17 minutes
#   bench/run.sh --update-readme     # also rewrites README.md's performance section and
#                                    # the plots it shows (bench/plots/*.svg)
#   bench/run.sh --schemes-only      # only the per-scheme token runs (about 3 minutes)
#   RUNS=5 DURATION=20 bench/run.sh  # longer
#
# Each round starts each server fresh, pinned to SERVER_CPU with taskset; every load
# generator is pinned to LOAD_CPU. Per round:
#   video-server  token-autocannon      the seed's exact autocannon command (-c 1000 -p 1)
#                 plaintext-autocannon  the same autocannon against GET /plaintext
#                 token-wrk / video-wrk / plaintext-wrk   wrk -t1 -c100
#                 token-openloop, video-openloop, plaintext-openloop   openloop at RATE req/s
#                 token-openloop at NODE_RATE (the baseline's rate, for the latency curves)
#                 sources-wrk           token bodies with 1, 2, 4, … 64 sources
#                 connections-wrk       token route with 10, 100, 1,000, 10,000 connections
#                 scheme-wrk            token route, wrk -t1 -c100, one fresh server per
#                                       signing scheme (bench/cdns/<scheme>.json), md5 first
#   minihttp      plaintext-wrk, plaintext-openloop   may_minihttp's hello world: the
#                 runtime's ceiling, and the latency tail the machine allows at RATE
#   node          token-autocannon, token-wrk, video-wrk, token-openloop at NODE_RATE
# Once: idle keep-alive memory with IDLE_CONNECTIONS connections.
#
# Server CPU per request = (utime + stime of the server process, from /proc/PID/stat, over
# the scenario) / requests: every thread counts, the batch writer included. Steal time (CPU
# taken by the hypervisor, from /proc/stat) is recorded per scenario, since it, not the
# server, sets the latency tail on a shared virtual machine.
# Installs what it needs (bench/install.sh): wrk, gnuplot (Debian), autocannon (npm), the
# Node baseline, and builds openloop and the may_minihttp ceiling.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$root"
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

update_readme=0
schemes_only=0
for argument in "$@"; do
  case "$argument" in
    --update-readme) update_readme=1 ;;
    --schemes-only) schemes_only=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $argument (try --help)" >&2; exit 2 ;;
  esac
done

RUNS="${RUNS:-3}"
DURATION="${DURATION:-10}"
SWEEP_DURATION="${SWEEP_DURATION:-5}"
WARMUP="${WARMUP:-2}"
RATE="${RATE:-20000}"
NODE_RATE="${NODE_RATE:-2000}"
SOURCES="${SOURCES:-1 2 4 8 16 32 64}"
CONNECTIONS="${CONNECTIONS:-10 100 1000 10000}"
IDLE_CONNECTIONS="${IDLE_CONNECTIONS:-10000}"
SCHEMES="${SCHEMES:-md5 sha256 nginx akamai cloudfront google bunny}"
SERVER_CPU="${SERVER_CPU:-1}"
LOAD_CPU="${LOAD_CPU:-0}"
VS_PORT="${VS_PORT:-3902}"
NODE_PORT="${NODE_PORT:-3903}"
MINI_PORT="${MINI_PORT:-3907}"

started_at="$(date -u '+%Y-%m-%d %H:%M UTC')"
out="$here/results/$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$out/bodies"
records="$out/records.jsonl"
: >"$records"
# wrk and the server each hold up to 10,000 sockets in the connection sweep.
ulimit -n "$(ulimit -Hn)"

"$here/install.sh"
echo "building video-server, openloop and the may_minihttp ceiling (release)" >&2
cargo build --release --quiet
cargo build --release --quiet --manifest-path "$here/minihttp-ceiling/Cargo.toml"
cargo build --release --quiet --manifest-path "$here/openloop/Cargo.toml"
autocannon="$here/node_modules/.bin/autocannon"
openloop="$here/openloop/target/release/openloop"
token_body="$(cat "$here/token-body.json")"
clock_ticks="$(getconf CLK_TCK)"
for count in $SOURCES; do
  python3 "$here/report.py" body "$count" >"$out/bodies/$count.json"
done

steal_ticks() { # steal time of all CPUs, in clock ticks
  awk '/^cpu / { print $9 }' /proc/stat
}

token_requests() { # port: POST /video/token requests answered 200 so far (from /metrics)
  curl -fsS "http://127.0.0.1:$1/metrics" |
    awk '/^http_requests_total\{route="token",status="200"\}/ { print $2; found = 1 } END { if (!found) print 0 }'
}

# Server CPU, writer CPU, steal and wall clock at the start and end of a measurement.
window_begin() { # pid
  cpu_before=$(cpu_ticks "$1")
  writer_before=$(thread_ticks "$1" view-writer)
  steal_before=$(steal_ticks)
  started=$EPOCHREALTIME
}
window_end() { # pid
  cpu_used=$(($(cpu_ticks "$1") - cpu_before))
  writer_used=$(($(thread_ticks "$1" view-writer) - writer_before))
  steal_used=$(($(steal_ticks) - steal_before))
  wall=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')
}

# Runs one scenario against the server with PID $3 on port $4 and appends its record.
# scenario: <what>-<tool>; param: the rate, source count or connection count it varies.
measure() { # scenario server pid port round [param]
  local scenario=$1 server=$2 pid=$3 port=$4 round=$5 param=${6:-}
  local raw="$out/$server-$scenario${param:+-$param}-$round.txt"
  local url="http://127.0.0.1:$port"
  local cpu_before writer_before steal_before started cpu_used writer_used steal_used wall
  local window=() # --requests/--seconds when only a steady window of the run is measured
  local load=(taskset -c "$LOAD_CPU")
  window_begin "$pid"
  case "$scenario" in
    token-autocannon)
      "${load[@]}" "$autocannon" -m POST -b "$token_body" -H 'Content-type: application/json' \
        -c 1000 -p 1 -d "$DURATION" --json "$url/video/token" >"$raw" 2>"$raw.stderr" ;;
    plaintext-autocannon)
      "${load[@]}" "$autocannon" -c 1000 -p 1 -d "$DURATION" --json "$url/plaintext" \
        >"$raw" 2>"$raw.stderr" ;;
    token-wrk | video-wrk | plaintext-wrk)
      "${load[@]}" wrk -t1 -c100 -d"${DURATION}s" -s "bench/wrk/${scenario%-wrk}.lua" "$url" \
        >"$raw" 2>&1 ;;
    scheme-wrk)
      "${load[@]}" wrk -t1 -c100 -d"${SWEEP_DURATION}s" -s bench/wrk/token.lua "$url" \
        >"$raw" 2>&1 ;;
    sources-wrk)
      BODY_FILE="$out/bodies/$param.json" "${load[@]}" wrk -t1 -c100 -d"${SWEEP_DURATION}s" \
        -s bench/wrk/body.lua "$url" >"$raw" 2>&1 ;;
    connections-wrk)
      # Opening 10,000 connections is not steady state: measure a window after 2 s, with
      # the requests counted by the server itself.
      "${load[@]}" wrk -t1 -c"$param" -d"$((SWEEP_DURATION + 3))s" --timeout 10s \
        -s bench/wrk/token.lua "$url" >"$raw" 2>&1 &
      local wrk_pid=$! counted_before
      sleep 2
      counted_before=$(token_requests "$port")
      window_begin "$pid"
      sleep "$SWEEP_DURATION"
      window_end "$pid"
      window=(--requests "$(($(token_requests "$port") - counted_before))" --seconds "$wall")
      wait "$wrk_pid" ;;
    token-openloop)
      "${load[@]}" "$openloop" -r "$param" -d "$DURATION" --warmup "$WARMUP" -m POST \
        -H 'Content-Type: application/json' --body-file "$here/token-body.json" \
        --json "$raw.json" "$url/video/token" >"$raw" 2>&1 ;;
    video-openloop | plaintext-openloop)
      local path=/video/12345
      [ "$scenario" = plaintext-openloop ] && path=/plaintext
      "${load[@]}" "$openloop" -r "$param" -d "$DURATION" --warmup "$WARMUP" \
        --json "$raw.json" "$url$path" >"$raw" 2>&1 ;;
    *) echo "unknown scenario $scenario" >&2; exit 1 ;;
  esac
  [ ${#window[@]} -eq 0 ] && window_end "$pid"
  local raw_parsed="$raw"
  [ -f "$raw.json" ] && raw_parsed="$raw.json"
  python3 "$here/report.py" record --scenario "$scenario" --server "$server" --round "$round" \
    --param "$param" --raw "$raw_parsed" --cpu-ticks "$cpu_used" --writer-ticks "$writer_used" \
    --steal-ticks "$steal_used" --clock-ticks "$clock_ticks" --wall-seconds "$wall" \
    --cpus "$(nproc)" "${window[@]}" >>"$records"
}

measure_schemes() { # round: a fresh server per signing scheme, the token route under wrk
  local round=$1 scheme data_dir vs_pid
  for scheme in $SCHEMES; do
    echo "round $round/$RUNS: video-server signing with $scheme" >&2
    data_dir="$(mktemp -d)"
    taskset -c "$SERVER_CPU" target/release/video-server --listen "127.0.0.1:$VS_PORT" \
      --data-dir "$data_dir" --cdns "$here/cdns/$scheme.json" --log-level warn \
      2>"$out/video-server-$scheme-$round.log" &
    vs_pid=$!
    wait_ready "$VS_PORT" "$vs_pid"
    taskset -c "$LOAD_CPU" wrk -t1 -c50 -d"${WARMUP}s" -s bench/wrk/token.lua "http://127.0.0.1:$VS_PORT" >/dev/null
    measure scheme-wrk video-server "$vs_pid" "$VS_PORT" "$round" "$scheme"
    stop_server "$vs_pid"
    rm -rf "$data_dir"
  done
}

for round in $(seq 1 "$RUNS"); do
  measure_schemes "$round"
  [ "$schemes_only" = 1 ] && continue
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
      curl -fsS "http://127.0.0.1:$VS_PORT/metrics" >"$out/video-server-metrics-$round.txt"
      python3 "$here/report.py" views --round "$round" \
        --metrics "$out/video-server-metrics-$round.txt" >>"$records"
    fi
  done
  for scenario in token-openloop video-openloop plaintext-openloop; do
    measure "$scenario" video-server "$vs_pid" "$VS_PORT" "$round" "$RATE"
  done
  measure token-openloop video-server "$vs_pid" "$VS_PORT" "$round" "$NODE_RATE"
  for count in $SOURCES; do
    measure sources-wrk video-server "$vs_pid" "$VS_PORT" "$round" "$count"
  done
  for count in $CONNECTIONS; do
    measure connections-wrk video-server "$vs_pid" "$VS_PORT" "$round" "$count"
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
  measure plaintext-openloop minihttp "$mini_pid" "$MINI_PORT" "$round" "$RATE"
  stop_server "$mini_pid"

  echo "round $round/$RUNS: node baseline" >&2
  (cd "$here/.work/baseline" && PORT="$NODE_PORT" exec taskset -c "$SERVER_CPU" node server.js) \
    >"$out/node-$round.log" 2>&1 &
  node_pid=$! # the subshell execs taskset, which execs node: this is node itself
  wait_ready "$NODE_PORT" "$node_pid"
  taskset -c "$LOAD_CPU" wrk -t1 -c50 -d"${WARMUP}s" -s bench/wrk/token.lua "http://127.0.0.1:$NODE_PORT" >/dev/null
  for scenario in token-autocannon token-wrk video-wrk; do
    measure "$scenario" node "$node_pid" "$NODE_PORT" "$round"
  done
  measure token-openloop node "$node_pid" "$NODE_PORT" "$round" "$NODE_RATE"
  stop_server "$node_pid"
done

if [ "$schemes_only" = 0 ]; then
  echo "idle keep-alive connections: $IDLE_CONNECTIONS" >&2
  python3 "$here/idle_connections.py" "$IDLE_CONNECTIONS" >"$out/idle.txt"
  grep '^IDLE_JSON ' "$out/idle.txt" | sed 's/^IDLE_JSON //' >>"$records"
fi

settings="RUNS=$RUNS DURATION=$DURATION SWEEP_DURATION=$SWEEP_DURATION RATE=$RATE NODE_RATE=$NODE_RATE SERVER_CPU=$SERVER_CPU LOAD_CPU=$LOAD_CPU"
[ "$schemes_only" = 1 ] && settings="$settings --schemes-only"
machine="$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'))"
python3 "$here/report.py" report --records "$records" --out "$out" --machine "$machine" \
  --settings "$settings" \
  --run-dir "bench/results/$(basename "$out")" --date "$started_at"
for plot in "$out"/*.gp; do
  [ -e "$plot" ] || continue # a --schemes-only run draws no plot
  (cd "$out" && gnuplot "$(basename "$plot")")
done
cat "$out/performance.md"
if [ "$update_readme" = 1 ] && [ "$schemes_only" = 1 ]; then
  echo "--update-readme needs the whole run: README.md left as it is" >&2
elif [ "$update_readme" = 1 ]; then
  mkdir -p "$here/plots"
  cp "$out"/*.svg "$here/plots/"
  python3 "$here/report.py" readme --section "$out/performance.md" --readme README.md
  echo "README.md performance section and bench/plots/ updated" >&2
fi
echo "results: $out" >&2
