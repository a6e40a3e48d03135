#!/usr/bin/env bash
# bench/ab.sh REV [ROUNDS] [SECONDS]: did a change move the cost of a request?
#
# Builds video-server at git revision REV (in a temporary worktree) and from the working
# tree, both release, then measures server CPU per request of POST /video/token and of
# GET /video/12345 (a view persisted) for each binary in turn, alternating round by round
# so that a noisy neighbour hits both alike. Prints each round, the medians and the ratio
# new/old. Same method as bench/run.sh: server pinned to SERVER_CPU (default 1), wrk on
# LOAD_CPU (default 0), -t1 -c50, a 2 s warm-up, CPU = utime + stime from /proc/PID/stat.
# ROUTES (default "token video") picks the routes; CONNS (default 50) the connection
# counts for wrk, one measurement each (the descriptor limit is raised to the hard limit).
# The user-space part of the CPU is reported too: a change to our own code shows there
# first, while the kernel's part, most of a request's cost, moves by a fifth between runs.
# OLD_BINARY=path compares against a binary already built (REV then only names it).
# PIPELINE=16 has wrk write 16 requests at a time (bench/wrk/pipeline.lua), where the
# kernel's share shrinks and our own code, the batch writer's included, shows.
# With RATE set, the load is bench/openloop at RATE requests/s over 100 connections (a 2 s
# warm-up run first) instead of wrk's closed loop: the cost of a request at a fixed rate,
# where threads sleep and wake between requests (a saturated server hardly does).
#
# Example: bench/ab.sh HEAD~3 8 8
#          RATE=20000 bench/ab.sh HEAD~1 3 8
#          ROUTES=token CONNS="100 10000" bench/ab.sh HEAD~1 4 8
#          PIPELINE=16 CONNS=100 ROUTES=video bench/ab.sh HEAD~1 5 8
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$root"
source "$here/lib.sh"

rev=${1:?usage: bench/ab.sh REV [ROUNDS] [SECONDS]}
rounds=${2:-6}
seconds=${3:-8}
SERVER_CPU=${SERVER_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
port=${PORT:-3091}
RATE=${RATE:-}
ROUTES=${ROUTES:-token video}
CONNS=${CONNS:-50}
PIPELINE=${PIPELINE:-1}
if [ -n "$RATE" ] && [ "$PIPELINE" != 1 ]; then
  echo "ab.sh: PIPELINE applies to wrk's closed loop, not to RATE" >&2
  exit 2
fi
ulimit -n "$(ulimit -Hn)"
"$here/install.sh" wrk

work="$here/.work/ab"
mkdir -p "$work"
tree="$(mktemp -d)"
data_dir=""
cleanup() {
  git worktree remove --force "$tree" 2>/dev/null || rm -rf "$tree"
  [ -n "$data_dir" ] && rm -rf "$data_dir"
  # The old revision's build is about 1 GB; only the binaries and results are kept.
  rm -rf "$work/target-old"
}
trap cleanup EXIT
if [ -n "${OLD_BINARY:-}" ]; then
  cp "$OLD_BINARY" "$work/video-server-old"
else
  git worktree add -q --detach "$tree" "$rev"
  echo "building $rev (release)" >&2
  (cd "$tree" && CARGO_TARGET_DIR="$work/target-old" cargo build --release -q)
  cp "$work/target-old/release/video-server" "$work/video-server-old"
fi
echo "building the working tree (release)" >&2
cargo build --release -q
cp target/release/video-server "$work/video-server-new"
if [ -n "$RATE" ]; then
  cargo build --release --quiet --manifest-path "$here/openloop/Cargo.toml" \
    --target-dir "$here/openloop/target"
fi

# load ROUTE SECONDS CONNECTIONS: drives the server for SECONDS; prints the requests
# answered.
load() {
  local route=$1 seconds=$2 connections=$3
  if [ -z "$RATE" ]; then
    wrk_script "$route" "http://127.0.0.1:$port" "$PIPELINE"
    ROUTE="$route" taskset -c "$LOAD_CPU" wrk -t1 -c"$connections" -d"${seconds}s" \
      "${wrk_args[@]}" | awk '/requests in/ { print $1 }'
    return
  fi
  local target=("http://127.0.0.1:$port/video/12345")
  if [ "$route" = token ]; then
    target=(-m POST -H 'Content-Type: application/json' --body-file "$here/token-body.json"
      "http://127.0.0.1:$port/video/token")
  fi
  # Inside $(...) errexit is off: every failure returns explicitly, and a previous run's
  # report is never read for this one.
  rm -f "$work/openloop.json"
  taskset -c "$LOAD_CPU" "$here/openloop/target/release/openloop" -r "$RATE" -c 100 \
    -d "$seconds" --warmup 0 --drain 1 --json "$work/openloop.json" "${target[@]}" \
    >/dev/null || return 1
  # Only 2xx answers count, and a run with errors is refused.
  python3 - "$work/openloop.json" <<'EOF' || return 1
import json, sys
report = json.load(open(sys.argv[1]))
statuses = report.get("statuses", {})
ok = sum(count for status, count in statuses.items() if str(status).startswith("2"))
if report["errors"] or report["unanswered"] or ok != report["completed"]:
    sys.exit(f"openloop: {report['errors']} errors, {report['unanswered']} unanswered, "
             f"statuses {statuses}")
print(ok)
EOF
}

hz=$(getconf CLK_TCK)
# The median of the numbers on standard input.
median() {
  sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# median_of FIELD ROUTE BUILD [CONNS]: the median of the results' FIELD (4: CPU, 5: writer
# per view, 7: user CPU) over the rounds of ROUTE, BUILD and (if given) CONNS.
median_of() {
  awk -v f="$1" -v r="$2" -v b="$3" -v c="${4:-}" \
    '$1 == r && $2 == b && (c == "" || $6 == c) { print $f }' "$results" | median
}

results="$work/results.txt"
: >"$results"
for round in $(seq "$rounds"); do
  for route in $ROUTES; do
    for conns in $CONNS; do
      for build in old new; do
        data_dir="$(mktemp -d)"
        taskset -c "$SERVER_CPU" "$work/video-server-$build" --listen "127.0.0.1:$port" \
          --data-dir "$data_dir" --log-level warn 2>/dev/null &
        pid=$!
        wait_ready "$port" "$pid"
        load "$route" 2 "$conns" >/dev/null
        before=$(cpu_ticks "$pid")
        user_before=$(user_ticks "$pid")
        writer_before=$(thread_ticks "$pid" view-writer)
        requests=$(load "$route" "$seconds" "$conns")
        after=$(cpu_ticks "$pid")
        user_after=$(user_ticks "$pid")
        writer_after=$(thread_ticks "$pid" view-writer)
        stop_server "$pid"
        rm -rf "$data_dir"
        data_dir=""
        awk -v route="$route" -v build="$build" -v round="$round" -v ticks=$((after - before)) \
          -v writer=$((writer_after - writer_before)) -v n="$requests" -v hz="$hz" \
          -v conns="$conns" -v user=$((user_after - user_before)) \
          'BEGIN { printf "%s %s %d %.3f %.3f %d %.3f\n", route, build, round, ticks / hz * 1e6 / n, writer / hz * 1e6 / n, conns, user / hz * 1e6 / n }' |
          tee -a "$results"
      done
    done
  done
done

echo
echo "server CPU per request, µs, all and user space only (median of $rounds rounds; $rev = old, working tree = new; $PIPELINE per write);"
echo "for GET /video/12345, every request is a view: 'writer' is the batch writer thread's CPU per view"
for route in $ROUTES; do
  for conns in $CONNS; do
    old=$(median_of 4 "$route" old "$conns")
    new=$(median_of 4 "$route" new "$conns")
    old_user=$(median_of 7 "$route" old "$conns")
    new_user=$(median_of 7 "$route" new "$conns")
    awk -v r="$route" -v c="$conns" -v o="$old" -v n="$new" -v ou="$old_user" -v nu="$new_user" \
      'BEGIN { printf "%-6s %6d conns  old %.2f  new %.2f  new/old %.3f   user: old %.2f  new %.2f  new/old %.3f\n", r, c, o, n, n / o, ou, nu, (ou > 0) ? nu / ou : 0 }'
  done
done
case " $ROUTES " in *" video "*)
  old=$(median_of 5 video old)
  new=$(median_of 5 video new)
  awk -v o="$old" -v n="$new" 'BEGIN { printf "writer old %.3f  new %.3f  new/old %.3f (per view)\n", o, n, (o > 0) ? n / o : 0 }'
  ;;
esac
