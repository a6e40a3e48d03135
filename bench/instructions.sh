#!/usr/bin/env bash
# Instructions per request of each route, counted by valgrind's callgrind: a measure that
# does not wobble on a shared, noisy machine (it counts instructions, not time), so that
# a change which makes a route more expensive is caught in CI, not in a benchmark weeks on.
#
#   bench/instructions.sh            # count, print, and fail if a route grew more than
#                                    # TOLERANCE_PERCENT (5) over bench/instructions.expected
#   bench/instructions.sh --record   # count and write bench/instructions.expected
#   REQUESTS=4000 WINDOWS=5 bench/instructions.sh
#   BINARY=path bench/instructions.sh # count another build (an older revision's) instead
#                                    # of building the working tree's; not with --record
#
# How: the release binary runs under callgrind with one worker, counting only inside the
# functions that do a request's work: the connection's coroutine (`serve`: read, parse,
# route, respond, write, hand the view to the bus) and, for the view writer, its `flush`
# (one batch into SQLite). What runs between them (the runtime's scheduler waiting on
# epoll, the writer waking for each view) costs instructions in proportion to how long
# it waits, which is the wobble this measure exists to avoid. For each route, after a
# warm-up, callgrind's counters are zeroed (callgrind_control), REQUESTS requests are sent
# on one keep-alive connection (bench/instructions_client.py) and the counters dumped;
# WINDOWS (3) times. The median window over REQUESTS is the cost of one request: windows
# agree within about 1 %, but now and then one takes a few hundred thousand instructions
# more (a heap growing, say), which the median leaves out. Opening the connection, the
# one fixed cost of a window, is lost in 2,000 requests. Routes:
#   plaintext, plaintext-pipelined    GET /plaintext, one request per write, or 16
#   video, video-pipelined            GET /video/12345: the HTTP side, the view handed
#                                     to the bus; one request per write, or 16
#   not-found                         GET /video/<unknown id>: 404
#   token, token-pipelined            POST /video/token with bench/token-body.json
#   view-writer                       the batch writer's instructions per view, batches
#                                     of 1,000 views, the default --batch-size (GET
#                                     /video/12345 drives it)
# With --anchors, also the anchor of issue 18's pipelined targets: may_minihttp's hello
# world (bench/minihttp-ceiling) beside our /plaintext, each counted the same way: every
# instruction a coroutine runs (may's run_coroutine: the connection's work and the
# switches into and out of it; minihttp inlines its connection loop, so `serve` has no
# counterpart there). Printed, and reported by bench/run.sh, but not checked (nor
# measured with --record).
# Idle connections are never parked (--park-idle-ms 0): a parked connection resumes in a
# new coroutine. Requests are answered on the coroutine's own stack (--no-hot-stack):
# callgrind follows calls by the stack pointer, and the switch to the worker's hot stack
# looks to it like a return from `serve`, which stops the counting (every route then
# reads 0, which fails the check). The switch itself, left out, is a few dozen
# instructions per wake-up; what it saves (cache misses) is not counted in instructions.
# The counts depend on the compiler and the dependencies' versions (Cargo.lock): record
# them again (--record) when either changes on purpose.
# Needs valgrind (scripts/install-test-tools.sh installs it) and python3.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$root"
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

record=0
anchors=0
for argument in "$@"; do
  case "$argument" in
    --record) record=1 ;;
    --anchors) anchors=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $argument (try --help)" >&2; exit 2 ;;
  esac
done

REQUESTS="${REQUESTS:-2000}"
WARMUP="${WARMUP:-200}"
WINDOWS="${WINDOWS:-3}"
TOLERANCE_PERCENT="${TOLERANCE_PERCENT:-5}"
# The writer's batch: the server's default --batch-size, so that the count is that of the
# batches a loaded server writes (a smaller batch binds more of its views row by row,
# which costs about half as much again per view).
WRITER_BATCH=1000
if [ $((REQUESTS % WRITER_BATCH)) -ne 0 ]; then
  echo "instructions.sh: REQUESTS must be a multiple of $WRITER_BATCH (the writer's batch)" >&2
  exit 2
fi
expected_file="$here/instructions.expected"
client="$here/instructions_client.py"

for tool in valgrind callgrind_control python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "instructions.sh: $tool is missing (scripts/install-test-tools.sh installs valgrind)" >&2
    exit 1
  fi
done

if [ -n "${BINARY:-}" ] && [ "$record" = 1 ]; then
  echo "instructions.sh: --record records the working tree's build, not BINARY's" >&2
  exit 2
fi
if [ -n "${BINARY:-}" ]; then
  # Another build (an older revision's, say), counted without building this one.
  binary="$(realpath "$BINARY")"
else
  cargo build --release --quiet --bin video-server
  binary="${CARGO_TARGET_DIR:-$root/target}/release/video-server"
fi

work="$(mktemp -d)"
server_pid=""
stop_running_server() {
  [ -z "$server_pid" ] || stop_server "$server_pid"
  server_pid=""
}
trap 'stop_running_server; rm -rf "$work"' EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_under_callgrind NAME FUNCTION READY-PATH COMMAND...: COMMAND (which listens on
# $port) under callgrind, counting inside FUNCTION only, once READY-PATH answers.
start_under_callgrind() {
  local name=$1 function=$2 ready=$3
  shift 3
  out="$work/$name.callgrind"
  valgrind --tool=callgrind --callgrind-out-file="$out" --dump-instr=no --dump-line=no \
    --collect-atstart=no --toggle-collect="$function" "$@" >"$work/$name.log" 2>&1 &
  server_pid=$!
  # Valgrind starts the binary slowly: up to two minutes on a busy machine.
  if ! wait_ready "$port" "$server_pid" "$ready" 120; then
    echo "instructions.sh: $name under valgrind did not start; its log:" >&2
    cat "$work/$name.log" >&2
    exit 1
  fi
}

# start_server NAME FUNCTION EXTRA-FLAGS...: video-server with one worker, counted inside
# FUNCTION.
start_server() {
  local name=$1 function=$2
  shift 2
  port="$(free_port)"
  start_under_callgrind "$name" "$function" /healthz \
    "$binary" --listen "127.0.0.1:$port" --data-dir "$work/$name-data" --workers 1 \
    --no-pin --park-idle-ms 0 --no-hot-stack --log-level warn "$@"
}

# window ROUTE COUNT SETTLE: instructions counted (inside the server's FUNCTION) while COUNT
# requests of ROUTE are answered and SETTLE seconds after, for work done behind the response.
window() {
  local route=$1 count=$2 settle=$3 before
  callgrind_control --zero "$server_pid" >/dev/null 2>&1
  python3 "$client" "$port" "$route" "$count"
  sleep "$settle"
  before="$(ls "$out".* 2>/dev/null | wc -l)"
  callgrind_control --dump "$server_pid" >/dev/null 2>&1
  # The newest dump's totals line: instructions (Ir) since the counters were zeroed.
  local dump
  dump="$(ls -v "$out".* | tail -1)"
  if [ "$(ls "$out".* | wc -l)" -le "$before" ]; then
    echo "instructions.sh: callgrind wrote no dump for $route" >&2
    exit 1
  fi
  awk '/^(totals|summary):/ { print $2; exit }' "$dump"
}

# measure NAME ROUTE SETTLE: instructions per request of ROUTE, reported as NAME: the
# median of WINDOWS windows, over REQUESTS.
measure() {
  local name=$1 route=$2 settle=$3 totals=()
  python3 "$client" "$port" "$route" "$WARMUP"
  for _ in $(seq 1 "$WINDOWS"); do
    totals+=("$(window "$route" "$REQUESTS" "$settle")")
  done
  local median
  median="$(printf '%s\n' "${totals[@]}" | sort -n | sed -n "$(((WINDOWS + 1) / 2))p")"
  echo "$name $((median / REQUESTS))"
}

results="$work/results"
: >"$results"
echo "counting instructions per request with callgrind (median of $WINDOWS windows of $REQUESTS requests per route)" >&2
start_server http 'video_server::http::server::serve' --flush-interval-ms 60000 --batch-size 1000000
for route in plaintext plaintext-pipelined video video-pipelined not-found token token-pipelined; do
  measure "$route" "$route" 0.2 | tee -a "$results"
done
stop_running_server
# Batches of exactly WRITER_BATCH views (never flushed by age), a warm-up of one batch,
# and windows of whole batches.
start_server writer 'video_server::views::writer::BatchWriter*::flush' \
  --flush-interval-ms 60000 --batch-size "$WRITER_BATCH"
WARMUP="$WRITER_BATCH" measure view-writer video 1 | tee -a "$results"
stop_running_server

anchor_results="$work/anchors"
: >"$anchor_results"
# The anchors are reported, not checked: a failure among them (a build, a slow start) is
# said and leaves the checked counts above to be compared and printed. They run in a
# subshell of their own, which stops its own server however it ends.
# (Not `if ! ( ... )`: bash ignores errexit inside a condition, so the subshell would go
# on after a failure.)
if [ "$anchors" -eq 1 ] && [ "$record" -eq 0 ]; then
  set +e
  (
    set -e
    trap 'stop_running_server' EXIT
    echo "anchors: video-server and may_minihttp, every instruction run in coroutines" >&2
    cargo build --release --quiet --manifest-path "$here/minihttp-ceiling/Cargo.toml" \
      --target-dir "$here/minihttp-ceiling/target"
    start_server anchor-video-server 'may::coroutine_impl::run_coroutine' \
      --flush-interval-ms 60000 --batch-size 1000000
    for route in plaintext plaintext-pipelined; do
      measure "video-server $route" "$route" 0.2 | tee -a "$anchor_results"
    done
    stop_running_server
    port="$(free_port)"
    start_under_callgrind anchor-minihttp 'may::coroutine_impl::run_coroutine' /requests \
      "$here/minihttp-ceiling/target/release/minihttp-ceiling" "127.0.0.1:$port"
    for route in plaintext plaintext-pipelined; do
      measure "may_minihttp $route" "$route" 0.2 | tee -a "$anchor_results"
    done
  )
  anchors_status=$?
  set -e
  if [ "$anchors_status" -ne 0 ]; then
    echo "instructions.sh: the anchors could not be measured; see the lines above" >&2
    : >"$anchor_results"
  fi
fi

if [ "$record" -eq 1 ]; then
  {
    echo "# Instructions per request by route, written by bench/instructions.sh --record on"
    echo "# $(date -u +%Y-%m-%d) with $(rustc --version), checked by bench/instructions.sh."
    cat "$results"
  } >"$expected_file"
  echo "recorded in $expected_file" >&2
  exit 0
fi

if [ ! -f "$expected_file" ]; then
  echo "instructions.sh: no $expected_file to compare with (run with --record)" >&2
  exit 1
fi
python3 - "$expected_file" "$results" "$TOLERANCE_PERCENT" "$anchor_results" <<'EOF'
import json
import sys

def table(path):
    rows = {}
    for line in open(path):
        if line.strip() and not line.startswith("#"):
            route, count = line.split()
            rows[route] = int(count)
    return rows

expected, measured, tolerance = table(sys.argv[1]), table(sys.argv[2]), float(sys.argv[3])
failed = []
records = []  # for bench/run.sh's report
print(f"{'route':<22}{'recorded':>10}{'now':>10}{'change':>9}")
for route, now in measured.items():
    was = expected.get(route)
    if was is None:
        print(f"{route:<22}{'-':>10}{now:>10}{'new':>9}")
        failed.append(f"{route} has no recorded count")
        continue
    change = (now - was) / was * 100
    print(f"{route:<22}{was:>10}{now:>10}{change:>+8.1f}%")
    records.append({"kind": "instructions", "route": route, "per_request": now,
                    "recorded": was})
    if change > tolerance:
        failed.append(f"{route} grew {change:.1f}% (more than {tolerance:g}%)")
    elif now < was / 2:
        # No change halves a route: callgrind lost track of the counted function.
        failed.append(f"{route} counted {now} against {was}: the measure is broken")
anchors = {}
for line in open(sys.argv[4]):
    server, route, count = line.split()
    anchors.setdefault(route, {})[server] = int(count)
for route, counts in anchors.items():
    ours, theirs = counts.get("video-server"), counts.get("may_minihttp")
    if ours and theirs:
        print(f"in coroutines, {route}: video-server {ours}, may_minihttp {theirs}: "
              f"{ours / theirs:.2f}x")
        records.append({"kind": "instructions-anchor", "route": route,
                        "video_server": ours, "minihttp": theirs})
for record in records:
    print("INSTRUCTIONS_JSON " + json.dumps(record))
for route in expected.keys() - measured.keys():
    failed.append(f"{route} was recorded but not measured")
if failed:
    print("instructions.sh: " + "; ".join(failed), file=sys.stderr)
    print("If the growth is intended, record the new counts: bench/instructions.sh --record",
          file=sys.stderr)
    sys.exit(1)
print(f"every route within {tolerance:g}% of its recorded count")
EOF
