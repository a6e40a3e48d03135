#!/usr/bin/env bash
# The benchmark run: every performance target of the project, measured side by side in one
# run, with the results table, plots and raw outputs written to bench/results/<time>/.
#
#   bench/run.sh                     # RUNS=3 rounds; about 30 minutes
#   bench/run.sh --update-readme     # also rewrites README.md's performance section and
#                                    # the plots it shows (bench/plots/*.svg)
#   bench/run.sh --schemes-only      # only the per-scheme token runs (about 3 minutes)
#   RUNS=5 DURATION=20 bench/run.sh  # longer
#   RUNS=1 DURATION=2 SWEEP_DURATION=1 WARMUP=0 CONNECTIONS="10 100" PIPELINE_CONNECTIONS=10 \
#     IDLE_CONNECTIONS=1000 SCHEMES=md5 SOURCES="1 64" bench/run.sh   # a smoke run, 3 minutes
#
# Each round starts each server fresh, pinned to SERVER_CPU with taskset; every load
# generator is pinned to LOAD_CPU. Per round:
#   video-server  token-autocannon      the seed's exact autocannon command (-c 1000 -p 1)
#                 plaintext-autocannon  the same autocannon against GET /plaintext
#                 token-wrk / video-wrk / plaintext-wrk   wrk -t1 -c100
#                 token-openloop, video-openloop, plaintext-openloop   openloop at RATE req/s
#                 token-openloop at NODE_RATE (the baseline's rate, for the latency curves)
#                 sources-wrk           token bodies with 1, 2, 4, … 64 sources
#                 scheme-wrk            token route, wrk -t1 -c100, one fresh server per
#                                       signing scheme (bench/cdns/<scheme>.json), md5 first
#   minihttp      may_minihttp's hello world: the runtime's ceiling
#   nginx         Debian's nginx, one worker, return 200 (bench/nginx-hello.sh): the anchor
#                 from outside our runtime
#   each of the three, every route it has (plaintext: all three; video, token: ours):
#                 <route>-conns-wrk     wrk -t1 at each of CONNECTIONS without pipelining,
#                                       and at each of PIPELINE_CONNECTIONS with
#                                       PIPELINE_DEPTH requests per write (bench/wrk/
#                                       pipeline.lua); measured over a steady window of
#                                       SWEEP_DURATION s, responses counted by the server
#                 <route>-p10-autocannon   autocannon -c 100 -p 10
#   minihttp, nginx: plaintext-wrk, plaintext-openloop at RATE (the latency tail the machine
#                 allows at that rate)
#   node          the Node/Express baseline (bench/baseline/, checked against video-server
#                 first by bench/baseline/check.py): token-autocannon, token-wrk, video-wrk,
#                 token-openloop at NODE_RATE
# Once: idle keep-alive memory of video-server and of nginx with each of IDLE_CONNECTIONS
# connections (bench/idle_connections.py, waiting IDLE_SETTLE s before reading), and the
# instructions per request of each route under callgrind (bench/instructions.sh).
#
# Server CPU per request = (utime + stime of the server process, from /proc/PID/stat, over
# the scenario) / requests: every thread counts, the batch writer included; for nginx, its
# worker process. Steal time (CPU taken by the hypervisor, from /proc/stat) is recorded per
# scenario, since it, not the server, sets the latency tail on a shared virtual machine.
# Installs what it needs (bench/install.sh): wrk, gnuplot, nginx (Debian), autocannon
# (npm), the Node baseline, and builds openloop and the may_minihttp ceiling. On exit,
# however it exits, every server it started is stopped and its temporary files removed.
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
CONNECTIONS="${CONNECTIONS:-100 1000 10000}"
PIPELINE_DEPTH="${PIPELINE_DEPTH:-16}"
PIPELINE_CONNECTIONS="${PIPELINE_CONNECTIONS:-$CONNECTIONS}"
IDLE_CONNECTIONS="${IDLE_CONNECTIONS:-1000 10000 50000}"
export IDLE_SETTLE="${IDLE_SETTLE:-3}"
SCHEMES="${SCHEMES:-md5 sha256 nginx akamai cloudfront google bunny}"
SERVER_CPU="${SERVER_CPU:-1}"
LOAD_CPU="${LOAD_CPU:-0}"
VS_PORT="${VS_PORT:-3902}"
NODE_PORT="${NODE_PORT:-3903}"
MINI_PORT="${MINI_PORT:-3907}"
NGINX_PORT="${NGINX_PORT:-3908}"

# Everything started in the background and every temporary directory, so that an error or
# Ctrl-C leaves no server running and nothing behind but the results.
declare -A running=()
temp_dirs=()
clean_up() {
  local pid
  for pid in "${!running[@]}"; do
    stop_server "$pid"
  done
  if [ ${#temp_dirs[@]} -gt 0 ]; then rm -rf "${temp_dirs[@]}"; fi
}
trap clean_up EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

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
video_server="${CARGO_TARGET_DIR:-$root/target}/release/video-server"
# Their own target directories, whatever CARGO_TARGET_DIR says: they are not the service.
cargo build --release --quiet --manifest-path "$here/minihttp-ceiling/Cargo.toml" \
  --target-dir "$here/minihttp-ceiling/target"
cargo build --release --quiet --manifest-path "$here/openloop/Cargo.toml" \
  --target-dir "$here/openloop/target"
autocannon="$here/node_modules/.bin/autocannon"
openloop="$here/openloop/target/release/openloop"
token_body="$(cat "$here/token-body.json")"
clock_ticks="$(getconf CLK_TCK)"
for count in $SOURCES; do
  python3 "$here/report.py" body "$count" >"$out/bodies/$count.json"
done
python3 "$here/baseline/check.py" "$video_server"

steal_ticks() { # steal time of all CPUs, in clock ticks
  awk '/^cpu / { print $9 }' /proc/stat
}

# start_pinned LOG COMMAND...: COMMAND in the background on SERVER_CPU, its output in LOG;
# sets launched to its pid (taskset and env exec, so it is the server's own).
start_pinned() {
  local log=$1
  shift
  taskset -c "$SERVER_CPU" "$@" >"$log" 2>&1 &
  launched=$!
  running[$launched]=1
}
stop_pinned() { # pid
  stop_server "$1"
  unset "running[$1]"
}

# answered SERVER PORT ROUTE: the responses the server has counted so far on that route:
# video-server's 200s in /metrics, nginx's requests in stub_status, may_minihttp's count.
answered() {
  case "$1" in
    video-server)
      curl -fsS "http://127.0.0.1:$2/metrics" | awk -v series="http_requests_total{route=\"$3\",status=\"200\"}" \
        '$1 == series { print $2; found = 1 } END { if (!found) print 0 }' ;;
    nginx) curl -fsS "http://127.0.0.1:$2/requests" | awk 'NR == 3 { print $3 }' ;;
    minihttp) curl -fsS "http://127.0.0.1:$2/requests" ;;
  esac
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

# Runs one scenario against the server with PID $3 (the process whose CPU is counted) on
# port $4 and appends its record. scenario: <what>-<tool>; param: the rate, source count or
# connection count it varies; depth: requests per write (pipelining), 1 without.
measure() { # scenario server pid port round [param] [depth]
  local scenario=$1 server=$2 pid=$3 port=$4 round=$5 param=${6:-} depth=${7:-1}
  local raw="$out/$server-$scenario${param:+-$param}-$round.txt"
  [ "$depth" = 1 ] || raw="$out/$server-$scenario-$param-depth$depth-$round.txt"
  local url="http://127.0.0.1:$port"
  local cpu_before writer_before steal_before started cpu_used writer_used steal_used wall
  local window=() # --requests/--seconds when only a steady window of the run is measured
  local load=(taskset -c "$LOAD_CPU")
  window_begin "$pid"
  case "$scenario" in
    token-autocannon | plaintext-autocannon | *-p10-autocannon)
      # The seed's command (-c 1000 -p 1), or 10 requests in flight on each of 100.
      local in_flight=(-c 1000 -p 1) request=("$url/plaintext")
      [[ "$scenario" == *-p10-* ]] && in_flight=(-c 100 -p 10)
      case "${scenario%%-*}" in
        token) request=(-m POST -b "$token_body" -H 'Content-type: application/json' "$url/video/token") ;;
        video) request=("$url/video/12345") ;;
      esac
      "${load[@]}" "$autocannon" "${in_flight[@]}" -d "$DURATION" --json "${request[@]}" \
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
    *-conns-wrk)
      # Opening 10,000 connections is not steady state: measure a window after 2 s, with
      # the responses counted by the server itself.
      local route=${scenario%-conns-wrk} counted_before
      wrk_script "$route" "$url" "$depth"
      ROUTE=$route "${load[@]}" wrk -t1 -c"$param" -d"$((SWEEP_DURATION + 3))s" --timeout 10s \
        "${wrk_args[@]}" >"$raw" 2>&1 &
      local wrk_pid=$!
      running[$wrk_pid]=1
      sleep 2
      counted_before=$(answered "$server" "$port" "$route")
      window_begin "$pid"
      sleep "$SWEEP_DURATION"
      window_end "$pid"
      window=(--requests "$(($(answered "$server" "$port" "$route") - counted_before))" --seconds "$wall")
      wait "$wrk_pid"
      unset "running[$wrk_pid]" ;;
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
    --param "$param" --depth "$depth" --raw "$raw_parsed" --cpu-ticks "$cpu_used" \
    --writer-ticks "$writer_used" --steal-ticks "$steal_used" --clock-ticks "$clock_ticks" \
    --wall-seconds "$wall" --cpus "$(nproc)" "${window[@]}" >>"$records"
}

# measure_anchored SERVER PID PORT ROUND ROUTE...: the scenarios every server is measured
# with, so that each route can be divided by the anchors': autocannon -p 10, then wrk at each
# of CONNECTIONS, and pipelined at each of PIPELINE_CONNECTIONS.
measure_anchored() {
  local server=$1 pid=$2 port=$3 round=$4 count route
  shift 4
  for route in "$@"; do
    measure "$route-p10-autocannon" "$server" "$pid" "$port" "$round"
    for count in $CONNECTIONS; do
      measure "$route-conns-wrk" "$server" "$pid" "$port" "$round" "$count"
    done
    for count in $PIPELINE_CONNECTIONS; do
      measure "$route-conns-wrk" "$server" "$pid" "$port" "$round" "$count" "$PIPELINE_DEPTH"
    done
  done
}

warm_up() { # port script
  [ "$WARMUP" = 0 ] && return
  taskset -c "$LOAD_CPU" wrk -t1 -c50 -d"${WARMUP}s" -s "bench/wrk/$2.lua" "http://127.0.0.1:$1" >/dev/null
}

start_video_server() { # log [flags…]: a fresh server on VS_PORT with its own data directory
  local log=$1 data_dir
  shift
  data_dir="$(mktemp -d)"
  temp_dirs+=("$data_dir")
  start_pinned "$log" "$video_server" --listen "127.0.0.1:$VS_PORT" --data-dir "$data_dir" \
    --log-level warn "$@"
  wait_ready "$VS_PORT" "$launched"
}

measure_schemes() { # round: a fresh server per signing scheme, the token route under wrk
  local round=$1 scheme vs_pid
  for scheme in $SCHEMES; do
    echo "round $round/$RUNS: video-server signing with $scheme" >&2
    start_video_server "$out/video-server-$scheme-$round.log" --cdns "$here/cdns/$scheme.json"
    vs_pid=$launched
    warm_up "$VS_PORT" token
    measure scheme-wrk video-server "$vs_pid" "$VS_PORT" "$round" "$scheme"
    stop_pinned "$vs_pid"
  done
}

for round in $(seq 1 "$RUNS"); do
  measure_schemes "$round"
  [ "$schemes_only" = 1 ] && continue
  echo "round $round/$RUNS: video-server" >&2
  start_video_server "$out/video-server-$round.log"
  vs_pid=$launched
  warm_up "$VS_PORT" token
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
  measure_anchored video-server "$vs_pid" "$VS_PORT" "$round" plaintext video token
  stop_pinned "$vs_pid"

  echo "round $round/$RUNS: may_minihttp ceiling" >&2
  start_pinned "$out/minihttp-$round.log" \
    "$here/minihttp-ceiling/target/release/minihttp-ceiling" "127.0.0.1:$MINI_PORT"
  mini_pid=$launched
  wait_ready "$MINI_PORT" "$mini_pid" /plaintext
  warm_up "$MINI_PORT" plaintext
  measure plaintext-wrk minihttp "$mini_pid" "$MINI_PORT" "$round"
  measure plaintext-openloop minihttp "$mini_pid" "$MINI_PORT" "$round" "$RATE"
  measure_anchored minihttp "$mini_pid" "$MINI_PORT" "$round" plaintext
  stop_pinned "$mini_pid"

  echo "round $round/$RUNS: nginx" >&2
  nginx_prefix="$(mktemp -d)"
  temp_dirs+=("$nginx_prefix")
  start_pinned "$out/nginx-$round.log" "$here/nginx-hello.sh" "$NGINX_PORT" "$nginx_prefix" \
    "$out/nginx.conf"
  nginx_pid=$launched # the master (the script execs nginx); the worker does the work
  wait_ready "$NGINX_PORT" "$nginx_pid" /plaintext
  nginx_worker="$(children "$nginx_pid")"
  warm_up "$NGINX_PORT" plaintext
  measure plaintext-wrk nginx "$nginx_worker" "$NGINX_PORT" "$round"
  measure plaintext-openloop nginx "$nginx_worker" "$NGINX_PORT" "$round" "$RATE"
  measure_anchored nginx "$nginx_worker" "$NGINX_PORT" "$round" plaintext
  stop_pinned "$nginx_pid"

  echo "round $round/$RUNS: node baseline" >&2
  start_pinned "$out/node-$round.log" env -C "$here/.work/baseline" PORT="$NODE_PORT" node server.js
  node_pid=$launched
  wait_ready "$NODE_PORT" "$node_pid"
  warm_up "$NODE_PORT" token
  for scenario in token-autocannon token-wrk video-wrk; do
    measure "$scenario" node "$node_pid" "$NODE_PORT" "$round"
  done
  measure token-openloop node "$node_pid" "$NODE_PORT" "$round" "$NODE_RATE"
  stop_pinned "$node_pid"
done

if [ "$schemes_only" = 0 ]; then
  for server in video-server nginx; do
    for count in $IDLE_CONNECTIONS; do
      echo "idle keep-alive connections: $server, $count" >&2
      python3 "$here/idle_connections.py" --server "$server" --binary "$video_server" "$count" \
        >"$out/idle-$server-$count.txt" &
      idle_pid=$!
      running[$idle_pid]=1
      wait "$idle_pid"
      unset "running[$idle_pid]"
      grep '^IDLE_JSON ' "$out/idle-$server-$count.txt" | sed 's/^IDLE_JSON //' >>"$records"
    done
  done
  echo "instructions per request (bench/instructions.sh)" >&2
  # A route over its tolerance is reported in the table, not a reason to lose the run.
  bash "$here/instructions.sh" --anchors >"$out/instructions.txt" 2>&1 ||
    echo "bench/instructions.sh failed or found a route grown; see $out/instructions.txt" >&2
  grep '^INSTRUCTIONS_JSON ' "$out/instructions.txt" | sed 's/^INSTRUCTIONS_JSON //' >>"$records" || true
fi

settings="RUNS=$RUNS DURATION=$DURATION SWEEP_DURATION=$SWEEP_DURATION RATE=$RATE NODE_RATE=$NODE_RATE CONNECTIONS=\"$CONNECTIONS\" PIPELINE_DEPTH=$PIPELINE_DEPTH PIPELINE_CONNECTIONS=\"$PIPELINE_CONNECTIONS\" IDLE_SETTLE=$IDLE_SETTLE SERVER_CPU=$SERVER_CPU LOAD_CPU=$LOAD_CPU"
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
