#!/usr/bin/env bash
# bench/hot_day.sh: what one hot video's day costs the ScyllaDB store, in rows and bytes, per
# table, measured on a real CQL cluster (one Apache Cassandra node from scripts/cql-up.sh).
#
# Starts a fresh node and the release server with --store scylla, drives GET /video/12345
# with wrk for DURATION seconds (default 20) from CLIENTS distinct client addresses (default
# 100000, named in X-Forwarded-For), stops the server (SIGTERM: every accepted view is
# written) and restarts the node cleanly (its memtables are flushed to disk), then reads:
#   views        persisted (from the server's own count, and COUNT(*) of view_log)
#   view_log     rows, partitions, the largest partition's rows, bytes on disk per view
#   view_counts  rows of the video (one per writer and day) and bytes on disk
#   view_sketches rows, their sketches' bytes, and bytes on disk
# and the unique viewers the server answers for the day. The cluster is removed at the end.
# Needs wrk (Debian) and cqlsh (PyPI, into bench/.work/cqlsh); both installed here.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$root"
source "$here/lib.sh"

duration=${DURATION:-20}
export CLIENTS=${CLIENTS:-100000}
SERVER_CPU=${SERVER_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
port=${PORT:-3094}
"$here/install.sh" wrk
cqlsh_dir="$here/.work/cqlsh"
if [ ! -x "$cqlsh_dir/bin/cqlsh" ]; then
  echo "installing cqlsh (PyPI, into bench/.work/cqlsh)" >&2
  python3 -m venv "$cqlsh_dir"
  "$cqlsh_dir/bin/pip" install -q 'cqlsh==6.2.2'
fi
cargo build --release -q

cql_bench_up 1
keyspace="hot_$(date +%s)"
taskset -c "$SERVER_CPU" target/release/video-server --listen "127.0.0.1:$port" \
  --data-dir "$data_dir" --log-level warn --store scylla --scylla-nodes "$SCYLLA_URI" \
  --scylla-keyspace "$keyspace" --trusted-proxies 127.0.0.1 --views-cache-ms 100 \
  2>"$data_dir/server.log" &
server_pid=$!
wait_ready "$port" "$server_pid"
taskset -c "$LOAD_CPU" wrk -t1 -c32 -d"${duration}s" -s bench/wrk/video-many-clients.lua \
  "http://127.0.0.1:$port" >/dev/null
# Until the writer has persisted every accepted view, then the count a client is served.
for _ in $(seq 1 300); do
  [ "$(metric views_persisted_total)" = "$(metric views_accepted_total)" ] && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$port/video/12345/views" >/dev/null
sleep 1
answer="$(curl -fs "http://127.0.0.1:$port/video/12345/views")"
persisted=$(metric views_persisted_total)
stop_server "$server_pid"
server_pid=""
bash scripts/cql-up.sh restart 1 >/dev/null

cql() {
  "$cqlsh_dir/bin/cqlsh" 127.0.0.1 9042 --request-timeout=300 -e "$1" 2>/dev/null
}
# The number in the one-row, one-column answer of a cqlsh query.
scalar() {
  cql "$1" | awk 'NR > 3 && $1 ~ /^[0-9]+$/ { print $1; exit }'
}
disk_bytes() {
  du -sb "$root/target/cql/node1/data/$keyspace/$1"-* 2>/dev/null | awk '{ total += $1 } END { print total + 0 }'
}
log_rows=$(scalar "SELECT COUNT(*) FROM $keyspace.view_log WHERE video_id = '12345' ALLOW FILTERING")
partitions=$(cql "SELECT video_id, minute, writer, shard, COUNT(*) FROM $keyspace.view_log GROUP BY video_id, minute, writer, shard" |
  awk -F'|' 'NF >= 5 && $5 ~ /[0-9]/ { n++; gsub(/ /, "", $5); if ($5 + 0 > max) max = $5 + 0 } END { print n + 0, max + 0 }')
count_rows=$(scalar "SELECT COUNT(*) FROM $keyspace.view_counts WHERE video_id = '12345'")
sketch_rows=$(scalar "SELECT COUNT(*) FROM $keyspace.view_sketches WHERE video_id = '12345' ALLOW FILTERING")
sketch_bytes=$(cql "SELECT sketch FROM $keyspace.view_sketches WHERE video_id = '12345' ALLOW FILTERING" |
  awk '$1 ~ /^0x/ { total += (length($1) - 2) / 2 } END { print total + 0 }')

read -r partition_count largest <<<"$partitions"
awk -v dur="$duration" -v persisted="${persisted:-0}" -v log_rows="$log_rows" \
  -v partitions="$partition_count" -v largest="$largest" -v count_rows="$count_rows" \
  -v sketch_rows="$sketch_rows" -v sketch_bytes="$sketch_bytes" \
  -v log_disk="$(disk_bytes view_log)" -v count_disk="$(disk_bytes view_counts)" \
  -v sketch_disk="$(disk_bytes view_sketches)" -v clients="$CLIENTS" -v answer="$answer" '
  BEGIN {
    printf "One hot video, %d s of wrk -c32 from %d client addresses, one Cassandra 5.0.9 node\n", dur, clients
    printf "  views        %d persisted (server), %d rows in view_log\n", persisted, log_rows
    printf "  view_log     %d partitions, the largest %d rows; %d bytes on disk, %.1f bytes per view\n",
      partitions, largest, log_disk, (log_rows > 0 ? log_disk / log_rows : 0)
    printf "  view_counts  %d rows; %d bytes on disk\n", count_rows, count_disk
    printf "  view_sketches %d rows, %d bytes of sketches; %d bytes on disk\n", sketch_rows, sketch_bytes, sketch_disk
    printf "  served       %s\n", answer
  }'
