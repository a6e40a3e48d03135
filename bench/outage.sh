#!/usr/bin/env bash
# bench/outage.sh: a ScyllaDB outage under a fixed view rate. Does every accepted view
# survive, how deep does the outbox get, how long does it take to drain, and what does the
# outage do to HTTP latency?
#
# A real CQL node (Apache Cassandra 5.0.9 from scripts/cql-up.sh) under the release server
# (--store scylla), driven by bench/openloop at RATE views/s (default 2000; GET
# /video/12345 over 50 connections, latency from the scheduled send time), in three
# phases:
#   before   BEFORE seconds (default 20) with the node up;
#   outage   OUTAGE seconds (default 60) after the node is killed (SIGKILL, as a crash);
#   after    the node is started again; load goes on until the outbox has drained (at
#            most AFTER seconds, default 120).
# /metrics is sampled every second into bench/results/outage-<time>.csv (time, phase,
# accepted, persisted, spilled, replayed, dropped, failed, outbox depth). At the end:
# views accepted = persisted (in the cluster or the outbox), none dropped or failed; the
# outbox's deepest point and how long it took to drain after the node came back; p99 and
# p99.9 per phase; and the count the server serves against what it accepted.
# The server runs on SERVER_CPU (1), openloop on LOAD_CPU (0); the node's JVM is not pinned.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$root"
source "$here/lib.sh"

rate=${RATE:-2000}
before=${BEFORE:-20}
outage=${OUTAGE:-60}
after=${AFTER:-120}
SERVER_CPU=${SERVER_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
port=${PORT:-3095}
cargo build --release -q
cargo build --release -q --manifest-path "$here/openloop/Cargo.toml"
openloop="$here/openloop/target/release/openloop"
mkdir -p "$here/results"
csv="$here/results/outage-$(date +%Y%m%d-%H%M%S).csv"

cql_bench_up 1
taskset -c "$SERVER_CPU" target/release/video-server --listen "127.0.0.1:$port" \
  --data-dir "$data_dir" --log-level warn --store scylla --scylla-nodes "$SCYLLA_URI" \
  --scylla-keyspace "outage_$(date +%s)" --client-ip hash 2>"$data_dir/server.log" &
server_pid=$!
wait_ready "$port" "$server_pid"

metrics_line() {
  curl -fs "http://127.0.0.1:$port/metrics" | awk '
    $1 == "views_accepted_total" { a = $2 } $1 == "views_persisted_total" { p = $2 }
    $1 == "views_spilled_total" { s = $2 } $1 == "views_replayed_total" { r = $2 }
    $1 == "views_dropped_total" { d = $2 } $1 == "views_failed_total" { f = $2 }
    $1 == "outbox_depth" { o = $2 }
    END { printf "%d,%d,%d,%d,%d,%d,%d\n", a, p, s, r, d, f, o }'
}
elapsed() { # elapsed SINCE [UNTIL]: seconds between two `date +%s.%N` stamps (until now)
  awk -v since="$1" -v until="${2:-$(date +%s.%N)}" 'BEGIN { printf "%.1f", until - since }'
}
echo "time_s,phase,accepted,persisted,spilled,replayed,dropped,failed,outbox_depth" >"$csv"
echo before >"$data_dir/phase"
started=$(date +%s.%N)
(
  while true; do
    line="$(metrics_line 2>/dev/null || echo ",,,,,,")"
    printf "%s,%s,%s\n" "$(elapsed "$started")" "$(cat "$data_dir/phase")" "$line" >>"$csv"
    sleep 1
  done
) &
sampler_pid=$!

load() { # load SECONDS NAME: openloop for SECONDS, its report kept as NAME
  taskset -c "$LOAD_CPU" "$openloop" "http://127.0.0.1:$port/video/12345" --rate "$rate" \
    --connections 50 --duration "$1" --warmup 1 --json "$data_dir/$2.json" >"$data_dir/$2.txt"
}

load "$before" before
echo outage >"$data_dir/phase"
bash scripts/cql-up.sh stop 1 >/dev/null
load "$outage" outage
echo after >"$data_dir/phase"
restarted=$(date +%s.%N)
bash scripts/cql-up.sh start 1 >/dev/null
# Load goes on while the outbox drains: openloop in the background, stopped once drained.
taskset -c "$LOAD_CPU" "$openloop" "http://127.0.0.1:$port/video/12345" --rate "$rate" \
  --connections 50 --duration "$after" --warmup 1 --json "$data_dir/after.json" >"$data_dir/after.txt" &
after_pid=$!
drained=""
deadline=$((SECONDS + after))
sleep 2
while ((SECONDS < deadline)); do
  if [ "$(metric outbox_depth)" = "0" ]; then
    drained=$(date +%s.%N)
    break
  fi
  sleep 0.5
done
wait "$after_pid" || true
# Let the writer finish what it holds, then read the final counts.
for _ in $(seq 1 100); do
  [ "$(metric outbox_depth)" = "0" ] && [ "$(metric views_pending)" = "0" ] && break
  sleep 0.2
done
kill "$sampler_pid" 2>/dev/null || true
sampler_pid=""
final="$(metrics_line)"
curl -fs "http://127.0.0.1:$port/video/12345/views" >/dev/null
sleep 2
served="$(curl -fs "http://127.0.0.1:$port/video/12345/views")"

p() { # p PHASE KEY: a latency percentile of a phase, in ms
  python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['latency_ms'][sys.argv[2]])" "$data_dir/$1.json" "$2"
}
max_depth=$(awk -F, 'NR > 1 && $9 + 0 > max { max = $9 + 0 } END { print max + 0 }' "$csv")
IFS=, read -r accepted persisted spilled replayed dropped failed depth <<<"$final"
echo "ScyllaDB outage at $rate views/s: node killed for $outage s (Cassandra 5.0.9, one node)"
echo "  accepted $accepted, persisted $persisted (spilled to the outbox $spilled, replayed $replayed), dropped $dropped, failed $failed, outbox now $depth"
echo "  outbox deepest $max_depth views; drained $(if [ -n "$drained" ]; then elapsed "$restarted" "$drained"; else echo "not within $after"; fi) s after the node was started again"
for phase in before outage after; do
  echo "  $phase: p50 $(p "$phase" p50) ms, p99 $(p "$phase" p99) ms, p99.9 $(p "$phase" p99.9) ms ($(head -1 "$data_dir/$phase.txt" | sed 's/.*: sent/sent/'))"
done
echo "  served: $served"
echo "  samples: $csv"
