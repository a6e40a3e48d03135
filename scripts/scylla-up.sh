#!/usr/bin/env bash
# ScyllaDB itself in Docker, one node or three, for the real-cluster suite and for trying
# the server on the engine it targets (scripts/cql-up.sh runs Apache Cassandra without
# Docker; CI uses that one):
#   scripts/scylla-up.sh up [N]    start N nodes (1 or 3, default 1) from
#                                  scripts/scylla-compose.yml and wait until every node
#                                  answers CQL and the first sees N nodes up; prints
#                                  SCYLLA_URI (node i on 127.0.0.i:9042)
#   scripts/scylla-up.sh down      remove the containers and their data
# Then, as with cql-up.sh (three nodes: replication 3, LOCAL_QUORUM):
#   eval "$(scripts/scylla-up.sh up 3)"
#   cargo test --test scylla_cluster -- --ignored
# without CQL_UP: the two tests that stop a node drive cql-up.sh's nodes, so here they
# skip and say so.
# Needs Docker with a running engine and about 1 GB of memory per node.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
compose=(docker compose -f "$here/scylla-compose.yml")

if ! docker info >/dev/null 2>&1; then
  echo "scylla-up: no Docker engine is reachable; start Docker, use scripts/cql-up.sh (Cassandra, no Docker), or point SCYLLA_URI at an existing cluster" >&2
  exit 1
fi
command=${1:-up}
case "$command" in
  down)
    "${compose[@]}" down -v
    exit 0
    ;;
  up) ;;
  *)
    echo "usage: scripts/scylla-up.sh up [1|3] | down" >&2
    exit 2
    ;;
esac
count=${2:-1}
case "$count" in
  1) services=(scylla1) ;;
  3) services=(scylla1 scylla2 scylla3) ;;
  *)
    echo "scylla-up: 1 or 3 nodes, not $count" >&2
    exit 2
    ;;
esac

# Nodes join one at a time (depends_on waits for the previous one's health check).
echo "scylla-up: starting ${services[*]} (the first start pulls the image and takes minutes)" >&2
"${compose[@]}" up -d --wait --wait-timeout 600 "${services[@]}" >&2
for _ in $(seq 1 120); do
  up="$("${compose[@]}" exec -T scylla1 nodetool status 2>/dev/null | grep -c '^UN' || true)"
  if [ "$up" -ge "$count" ]; then
    uris=()
    for i in $(seq 1 "$count"); do uris+=("127.0.0.$i:9042"); done
    echo "scylla-up: ScyllaDB, $count node(s) up and normal" >&2
    echo "export SCYLLA_URI=$(IFS=,; echo "${uris[*]}")"
    exit 0
  fi
  sleep 2
done
echo "scylla-up: the cluster did not show $count nodes up in 4 minutes; see: docker compose -f $here/scylla-compose.yml logs" >&2
exit 1
