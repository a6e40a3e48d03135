#!/usr/bin/env bash
# bench/view_storage.sh: what raw views cost the embedded store on disk, and what
# --view-retention-days does about it, measured on the release server.
#
#   bench/view_storage.sh                   # about 3 minutes on 2 CPUs, once built
#   PHASES=retention bench/view_storage.sh  # only the second part
#
# 1. Bytes per view. For each count in VIDEOS (default "1 1000": one hot video, and plays
#    spread over a thousand, whose index pages fill less), a fresh data directory with a
#    catalog of that many videos (ids v0000, v0001, … : five characters, as the seed's
#    12345). The server is started and stopped once (the empty file: seed and catalog),
#    then started again under wrk (-t1 -c32, bench/wrk/video-many-videos.lua) for
#    FILL_SECONDS (default 15) and stopped with SIGTERM, which writes every accepted view
#    and checkpoints the log into the file. Bytes per view: the file's growth divided by
#    the views persisted; SQLite's dbstat splits the file between the views table and any
#    index on it (none since schema version 3).
# 2. Retention. The server with the test-only --view-retention-seconds KEEP (default 5)
#    under openloop at a fixed RATE (default 10000 views/s) for RUN_SECONDS (default 40):
#    every SAMPLE seconds (default 4) the database file and its log, the raw rows and the
#    rows deleted; then the same run with retention off. Per run: the rate achieved, the
#    batch writer thread's CPU time per view, the batch write time
#    (view_flush_duration_seconds: mean, and the buckets holding the median, the 99th
#    percentile and the maximum) and, with retention, one step's time
#    (view_retention_step_seconds), during which the writer waits. Times are wall clock:
#    on a shared machine they include waiting for a CPU (the load average is printed).
#
# Needs wrk (Debian, installed here). Builds the release server and bench/openloop. The
# server runs on SERVER_CPU, the load on LOAD_CPU. Removes its data directories.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$root"
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
VIDEOS="${VIDEOS:-1 1000}"
FILL_SECONDS="${FILL_SECONDS:-15}"
KEEP="${KEEP:-5}"
RATE="${RATE:-10000}"
RUN_SECONDS="${RUN_SECONDS:-40}"
SAMPLE="${SAMPLE:-4}"
PHASES="${PHASES:-bytes retention}"
SERVER_CPU="${SERVER_CPU:-1}"
LOAD_CPU="${LOAD_CPU:-0}"
port="${PORT:-3917}"

"$here/install.sh" wrk
echo "building video-server and openloop (release)" >&2
cargo build --release --quiet
cargo build --release --quiet --manifest-path "$here/openloop/Cargo.toml" \
  --target-dir "$here/openloop/target"
openloop="$here/openloop/target/release/openloop"

data_dir=""
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then stop_server "$server_pid"; fi
  if [ -n "$data_dir" ]; then rm -rf "$data_dir"; fi
}
trap cleanup EXIT

database() { echo "$data_dir/video-server.sqlite3"; }
file_bytes() { stat -c %s "$1" 2>/dev/null || echo 0; }

# start_server ARGS...: the release server on $port over $data_dir.
start_server() {
  taskset -c "$SERVER_CPU" target/release/video-server --listen "127.0.0.1:$port" \
    --data-dir "$data_dir" --log-level warn "$@" 2>>"$data_dir/server.log" &
  server_pid=$!
  wait_ready "$port" "$server_pid" /healthz # not a play: it would be a view
}
stop() {
  stop_server "$server_pid"
  server_pid=""
}
# wait_persisted: until the writer has written every accepted view.
wait_persisted() {
  for _ in $(seq 1 600); do
    [ "$(metric views_persisted_total)" = "$(metric views_accepted_total)" ] && return
    sleep 0.1
  done
  echo "views still pending after 60 s" >&2
  return 1
}

# histogram NAME [SCALE UNIT]: "count N, mean X ms, p50 <= …, p99 <= Y ms" from the server's
# /metrics (values times SCALE, default 1000 for seconds as ms).
histogram() {
  curl -fs "http://127.0.0.1:$port/metrics" | python3 -c '
import sys
name, scale, unit = sys.argv[1], float(sys.argv[2]), sys.argv[3]
buckets, count, total = [], 0, 0.0
for line in sys.stdin:
    if line.startswith(name + "_bucket{le="):
        bound = line.split("\"")[1]
        buckets.append((float("inf") if bound == "+Inf" else float(bound), float(line.split()[-1])))
    elif line.startswith(name + "_count "):
        count = int(float(line.split()[-1]))
    elif line.startswith(name + "_sum "):
        total = float(line.split()[-1])
def bound(share):
    for upper, seen in buckets:
        if seen >= share * count:
            return "%g" % (upper * scale)
    return "?"
mean = total / count * scale if count else 0
print("count %d, mean %.2f%s, p50 <= %s%s, p99 <= %s%s, max <= %s%s"
      % (count, mean, unit, bound(0.5), unit, bound(0.99), unit, bound(1.0), unit))
' "$1" "${2:-1000}" "${3:- ms}"
}

# catalog COUNT: a JSON catalog of COUNT videos v0000…
catalog() {
  python3 -c '
import json, sys
count = int(sys.argv[1])
print(json.dumps([{"videoId": "v%04d" % n, "title": "v%04d" % n, "sources": []} for n in range(count)]))
' "$1"
}

bytes_per_view() {
  echo "== bytes per raw view (wrk -c32 for ${FILL_SECONDS} s, --client-ip hash: 32 characters per view)"
  for videos in $VIDEOS; do
    data_dir="$(mktemp -d)"
    catalog "$videos" >"$data_dir/catalog.json"
    start_server --catalog "$data_dir/catalog.json"
    stop
    empty=$(file_bytes "$(database)")
    start_server
    VIDEOS=$videos taskset -c "$LOAD_CPU" wrk -t1 -c32 -d"${FILL_SECONDS}s" \
      -s bench/wrk/video-many-videos.lua "http://127.0.0.1:$port" >/dev/null
    wait_persisted
    views=$(metric views_persisted_total)
    stop
    full=$(file_bytes "$(database)")
    split=$(sqlite3 "$(database)" "SELECT group_concat(name || ' ' || bytes, ', ') FROM
      (SELECT name, SUM(pgsize) AS bytes FROM dbstat WHERE name = 'views' OR name IN
        (SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'views') GROUP BY name)")
    python3 -c '
import sys
videos, views, empty, full = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
parts = ", ".join("%s %.1f" % (name, int(size) / views) for name, size in
                  (part.rsplit(" ", 1) for part in sys.argv[5].split(", ")))
print("%s videos: %d views, file %d -> %d bytes: %.1f bytes per view (%s)"
      % (videos, views, empty, full, (full - empty) / views, parts))
' "$videos" "$views" "$empty" "$full" "$split"
    rm -rf "$data_dir"
    data_dir=""
  done
}

# run_at_rate LABEL ARGS...: openloop at RATE for RUN_SECONDS against a fresh server.
run_at_rate() {
  local label=$1
  shift
  data_dir="$(mktemp -d)"
  start_server "$@"
  echo "== $label: ${RATE} views/s for ${RUN_SECONDS} s"
  taskset -c "$LOAD_CPU" "$openloop" -r "$RATE" -d "$RUN_SECONDS" --warmup 0 \
    "http://127.0.0.1:$port/video/12345" >"$data_dir/openloop.txt" &
  local load=$! started=$SECONDS
  local writer_before
  writer_before=$(thread_ticks "$server_pid" view-writer)
  printf '%6s %10s %10s %10s %12s %10s\n' second persisted expired rows file_bytes wal_bytes
  while kill -0 "$load" 2>/dev/null; do
    sleep "$SAMPLE"
    printf '%6s %10s %10s %10s %12s %10s\n' $((SECONDS - started)) \
      "$(metric views_persisted_total)" "$(metric views_expired_total)" \
      "$(sqlite3 "$(database)" 'SELECT COUNT(*) FROM views')" \
      "$(file_bytes "$(database)")" "$(file_bytes "$(database)-wal")"
  done
  wait "$load"
  wait_persisted
  local views writer_ticks
  views=$(metric views_persisted_total)
  writer_ticks=$(($(thread_ticks "$server_pid" view-writer) - writer_before))
  echo "load: $(head -1 "$data_dir/openloop.txt"); load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "batch writer CPU: $(python3 -c "import sys; print('%.2f' % ($writer_ticks * 1e6 / $(getconf CLK_TCK) / $views))") µs per view"
  echo "batch writes: $(histogram view_flush_duration_seconds)"
  echo "batch sizes:  $(histogram view_batch_size 1 " views")"
  echo "retention steps: $(histogram view_retention_step_seconds)"
  echo "dropped views: $(metric views_dropped_total)"
  stop
  rm -rf "$data_dir"
  data_dir=""
}

retention_runs() {
  run_at_rate "retention ${KEEP} s" --view-retention-seconds "$KEEP"
  run_at_rate "retention off"
}

for phase in $PHASES; do
  case "$phase" in
    bytes) bytes_per_view ;;
    retention) retention_runs ;;
    *) echo "unknown phase $phase (bytes, retention)" >&2 && exit 2 ;;
  esac
done
