#!/usr/bin/env bash
# Starts (or, with "down", removes) a single-node ScyllaDB with Docker, and waits until it
# answers CQL. Then:
#   SCYLLA_URI=127.0.0.1:9042 cargo test --test scylla_cluster -- --ignored
#   cargo run --release -- --store scylla --scylla-nodes 127.0.0.1:9042
# Needs Docker with a running engine (the project's CI machines have none: CI runs the
# dry-mode tests instead, see tests/scylla_dry.rs).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
compose=(docker compose -f "$here/scylla-compose.yml")

if ! docker info >/dev/null 2>&1; then
  echo "scylla-up: no Docker engine is reachable; start Docker or point SCYLLA_URI at an existing cluster" >&2
  exit 1
fi
if [ "${1:-up}" = down ]; then
  "${compose[@]}" down -v
  exit 0
fi
"${compose[@]}" up -d
echo "waiting for ScyllaDB to accept CQL on 127.0.0.1:9042 (first start takes a minute)..." >&2
for _ in $(seq 1 120); do
  if "${compose[@]}" exec -T scylla cqlsh -e 'SELECT now() FROM system.local' >/dev/null 2>&1; then
    echo "ScyllaDB is up: export SCYLLA_URI=127.0.0.1:9042" >&2
    exit 0
  fi
  sleep 2
done
echo "scylla-up: ScyllaDB did not come up in 4 minutes; see: docker compose -f $here/scylla-compose.yml logs" >&2
exit 1
