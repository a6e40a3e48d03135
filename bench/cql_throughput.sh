#!/usr/bin/env bash
# bench/cql_throughput.sh [NODES]: how many views per second one server persists into a real
# CQL cluster (Apache Cassandra from scripts/cql-up.sh, 1 or 3 nodes), and what each view
# costs the server and the cluster in CPU.
#
# Starts a fresh cluster of NODES (default 1; replication NODES, writes at QUORUM) and the
# release server with --store scylla, drives GET /video/12345 with wrk for DURATION seconds
# (default 20; each request records a view), then reads from /metrics and /proc:
#   offered    views accepted by the server per second (wrk's rate, less drops)
#   persisted  views the batch writer got into the cluster per second in that window
#   dropped    views refused because the writer fell behind (the bounded queue was full)
#   spilled    views sent to the outbox because the cluster failed or timed out
#   CPU/view   server process, its writer threads (view-writer + scylla driver), and the
#              cluster's JVMs, in µs per persisted view
# The server is pinned to SERVER_CPU (1) and wrk to LOAD_CPU (0); the cluster's JVMs are
# not pinned: on a 2-CPU machine they share both CPUs with the server and wrk, so these
# are figures for this machine, not for a real deployment. The cluster is stopped and
# removed at the end.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$root"
source "$here/lib.sh"

nodes=${1:-1}
duration=${DURATION:-20}
SERVER_CPU=${SERVER_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
port=${PORT:-3093}
"$here/install.sh" wrk
cargo build --release -q

cql_bench_up "$nodes"
consistency=quorum
taskset -c "$SERVER_CPU" target/release/video-server --listen "127.0.0.1:$port" \
  --data-dir "$data_dir" --log-level warn --store scylla --scylla-nodes "$SCYLLA_URI" \
  --scylla-keyspace "bench_$(date +%s)" --scylla-replication "simple:$nodes" \
  --scylla-write-consistency "$consistency" 2>"$data_dir/server.log" &
server_pid=$!
wait_ready "$port" "$server_pid"

hz=$(getconf CLK_TCK)
cluster_ticks() {
  local total=0 i
  for i in $(seq 1 "$nodes"); do
    total=$((total + $(cpu_ticks "$(cat "target/cql/node$i/pid")")))
  done
  echo "$total"
}
snapshot() {
  echo "$(metric views_accepted_total) $(metric views_persisted_total) $(metric views_dropped_total) \
$(metric views_spilled_total) $(cpu_ticks "$server_pid") $(thread_ticks "$server_pid" view-writer) $(thread_ticks "$server_pid" scylla) \
$(cluster_ticks) $(date +%s.%N)"
}

# Warm up (the driver's connections, the JIT of the cluster's JVMs).
taskset -c "$LOAD_CPU" wrk -t1 -c32 -d3s -s bench/wrk/video.lua "http://127.0.0.1:$port" >/dev/null
sleep 2
read -r a0 p0 d0 s0 server0 writer0 driver0 cluster0 t0 <<<"$(snapshot)"
taskset -c "$LOAD_CPU" wrk -t1 -c32 -d"${duration}s" -s bench/wrk/video.lua "http://127.0.0.1:$port" >/dev/null
read -r a1 p1 d1 s1 server1 writer1 driver1 cluster1 t1 <<<"$(snapshot)"

awk -v nodes="$nodes" -v hz="$hz" -v a="$((a1 - a0))" -v p="$((p1 - p0))" -v d="$((d1 - d0))" \
  -v s="$((s1 - s0))" -v server="$((server1 - server0))" -v writer="$((writer1 - writer0))" \
  -v driver="$((driver1 - driver0))" -v cluster="$((cluster1 - cluster0))" -v t0="$t0" -v t1="$t1" '
  BEGIN {
    t = t1 - t0
    printf "Apache Cassandra, %d node(s), replication %d, QUORUM writes; %.1f s of wrk -c32 GET /video/12345\n", nodes, nodes, t
    printf "  offered    %9.0f views/s accepted (%d dropped: the writer fell behind)\n", a / t, d
    printf "  persisted  %9.0f views/s into the cluster (%d spilled to the outbox)\n", p / t, s
    if (p > 0) {
      printf "  CPU/view   server %.1f µs (writer thread %.1f, driver runtime %.1f), cluster %.1f µs\n",
        server / hz * 1e6 / p, writer / hz * 1e6 / p, driver / hz * 1e6 / p, cluster / hz * 1e6 / p
    }
  }'
