#!/usr/bin/env bash
# A real CQL cluster on this machine, for the ScyllaDB store's real-cluster tests: Apache
# Cassandra (the engine whose CQL and wire protocol ScyllaDB implements), fetched from
# Maven Central, one JVM per node on loopback addresses. No Docker, no root.
#
#   scripts/cql-up.sh up [N]     start N nodes (1 or 3, default 1) and wait until every
#                                node answers CQL and sees the others; prints SCYLLA_URI
#   scripts/cql-up.sh down       stop the nodes it started and remove their folder
#   scripts/cql-up.sh status     which nodes run
#   scripts/cql-up.sh stop I     kill node I (SIGKILL, as a crash would; its data stays,
#                                but for writes of the last commitlog_sync_period, 10 s)
#   scripts/cql-up.sh halt I     stop node I cleanly (SIGTERM: it flushes first)
#   scripts/cql-up.sh start I    start node I again on its data
#   scripts/cql-up.sh restart I  stop node I cleanly (SIGTERM: it flushes) and start it again
#
# CQL_TLS=1 with `up`: the nodes speak TLS only (client_encryption_options, optional:
# false) and require a client certificate. A throwaway CA, a node certificate for
# 127.0.0.1-3 (IP subject alternative names), a client certificate and a second CA that
# signed nothing of this cluster are made with openssl into target/cql/tls/, valid two
# days; `up` then also prints CQL_TLS_DIR. For tests/scylla_tls.rs.
#
# Node i listens on 127.0.0.i (CQL 9042, storage 7000) with its data, commit log and
# caches under target/cql/node<i>/ (CQL_RUN_DIR to move it). Cassandra and its
# dependencies are copied by `mvn dependency:copy-dependencies` from the pinned POM
# scripts/cassandra/pom.xml into target/cassandra/lib/ (CQL_CACHE_DIR to move it), once.
# Every wait is bounded; a failure names the step and the log to read.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
run_dir="${CQL_RUN_DIR:-$root/target/cql}"
cache_dir="${CQL_CACHE_DIR:-$root/target/cassandra}"
lib_dir="$cache_dir/lib"
pom="$here/cassandra/pom.xml"
version="$(sed -n 's:.*<cassandra.version>\(.*\)</cassandra.version>.*:\1:p' "$pom")"
heap="${CQL_HEAP:-768m}"
start_timeout="${CQL_START_TIMEOUT:-240}"
tls=""
[ "${CQL_TLS:-0}" = 0 ] || tls=1
tls_dir="$run_dir/tls"

fail() {
  echo "cql-up: $*" >&2
  exit 1
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Java 17 and Maven, from Debian's packages when the machine lacks them.
ensure_tools() {
  local missing=()
  command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null 2>&1 || missing+=(maven)
  if [ -n "$tls" ]; then command -v openssl >/dev/null 2>&1 || missing+=(openssl); fi
  if [ ${#missing[@]} -gt 0 ]; then
    echo "cql-up: installing ${missing[*]} (Debian packages)" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
      fail "step 'install Java and Maven': apt-get could not install ${missing[*]}"
  fi
}

fetch() {
  if [ -f "$lib_dir/cassandra-all-$version.jar" ]; then
    return
  fi
  echo "cql-up: fetching Apache Cassandra $version and its dependencies from Maven Central" >&2
  mkdir -p "$cache_dir"
  if ! timeout 900 mvn -q -B -f "$pom" dependency:copy-dependencies \
    -DoutputDirectory="$lib_dir" >"$cache_dir/mvn.log" 2>&1; then
    rm -rf "$lib_dir"
    fail "step 'fetch Cassandra $version with mvn' failed; read $cache_dir/mvn.log"
  fi
}

# The certificates of CQL_TLS=1 (EC P-256, two days): ca.pem signs node.pem (every node's,
# IP SANs 127.0.0.1-3) and client.pem; other-ca.pem signs nothing here. The nodes read
# node.p12 (key and chain) and truststore.p12 (ca.pem, to check client certificates).
make_tls() {
  local cnf="$tls_dir/openssl.cnf" name serial=1
  mkdir -p "$tls_dir"
  command -v keytool >/dev/null 2>&1 || fail "step 'make TLS certificates': keytool (from Java) is missing"
  cat >"$cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = video-server test
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[node]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, IP:127.0.0.2, IP:127.0.0.3
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
CNF
  # Each step logs to make.log; the first to fail stops `up`, naming it.
  tls_step() {
    "$@" >>"$tls_dir/make.log" 2>&1 || fail "step 'make TLS certificates': $1 $2 failed; read $tls_dir/make.log"
  }
  for name in ca other-ca node client; do
    tls_step openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tls_dir/$name-key.pem"
  done
  for name in ca other-ca; do
    tls_step openssl req -x509 -new -key "$tls_dir/$name-key.pem" -config "$cnf" -extensions ca \
      -subj "/CN=video-server test $name" -days 2 -out "$tls_dir/$name.pem"
  done
  for name in node client; do
    serial=$((serial + 1))
    tls_step openssl req -new -key "$tls_dir/$name-key.pem" -config "$cnf" \
      -subj "/CN=video-server test $name" -out "$tls_dir/$name.csr"
    tls_step openssl x509 -req -in "$tls_dir/$name.csr" -CA "$tls_dir/ca.pem" \
      -CAkey "$tls_dir/ca-key.pem" -set_serial "$serial" -days 2 -extfile "$cnf" \
      -extensions "$name" -out "$tls_dir/$name.pem"
  done
  tls_step openssl pkcs12 -export -in "$tls_dir/node.pem" -inkey "$tls_dir/node-key.pem" \
    -certfile "$tls_dir/ca.pem" -name node -out "$tls_dir/node.p12" -passout pass:cassandra
  tls_step keytool -importcert -noprompt -storetype PKCS12 -keystore "$tls_dir/truststore.p12" \
    -storepass cassandra -alias ca -file "$tls_dir/ca.pem"
}

node_dir() { echo "$run_dir/node$1"; }
node_address() { echo "127.0.0.$1"; }

# cassandra.yaml for node $1 of $2: small caches and memtables for a 2-core machine, no
# auto-bootstrap (a fresh cluster has no data to stream), the first node the only seed.
write_config() {
  local i=$1 nodes=$2 dir
  dir="$(node_dir "$i")"
  mkdir -p "$dir"/{data,commitlog,saved_caches,hints,cdc_raw,triggers}
  cat >"$dir/cassandra.yaml" <<YAML
cluster_name: video-server-test
num_tokens: 16
allocate_tokens_for_local_replication_factor: $(( nodes < 3 ? nodes : 3 ))
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
auto_bootstrap: false
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "$(node_address 1):7000"
listen_address: $(node_address "$i")
rpc_address: $(node_address "$i")
storage_port: 7000
native_transport_port: 9042
start_native_transport: true
endpoint_snitch: SimpleSnitch
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
data_file_directories:
  - $dir/data
commitlog_directory: $dir/commitlog
saved_caches_directory: $dir/saved_caches
hints_directory: $dir/hints
cdc_raw_directory: $dir/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 8MiB
memtable_heap_space: 64MiB
memtable_offheap_space: 64MiB
key_cache_size: 8MiB
counter_cache_size: 0MiB
concurrent_reads: 8
concurrent_writes: 16
concurrent_counter_writes: 4
concurrent_compactors: 1
auto_snapshot: false
snapshot_before_compaction: false
read_request_timeout: 10000ms
write_request_timeout: 5000ms
range_request_timeout: 20000ms
request_timeout: 20000ms
YAML
  if [ -n "$tls" ]; then
    cat >>"$dir/cassandra.yaml" <<YAML
client_encryption_options:
  enabled: true
  optional: false
  keystore: $tls_dir/node.p12
  keystore_password: cassandra
  require_client_auth: true
  truststore: $tls_dir/truststore.p12
  truststore_password: cassandra
  store_type: PKCS12
YAML
  fi
  cat >"$dir/logback.xml" <<XML
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>$dir/system.log</file>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE" /></root>
  <logger name="org.apache.cassandra" level="INFO" />
</configuration>
XML
}

start_node() {
  local i=$1 dir options
  dir="$(node_dir "$i")"
  [ -f "$dir/cassandra.yaml" ] || fail "node $i has no configuration under $dir: run 'up' first"
  # One option per line, as Cassandra's own scripts read them; `--add-opens X` becomes
  # `--add-opens=X` so that each is one argument.
  # Where this start's log lines begin, so that waits read only what this start wrote.
  if [ -f "$dir/system.log" ]; then wc -c <"$dir/system.log"; else echo 0; fi >"$dir/log_offset"
  mapfile -t options < <(grep -v '^\s*#' "$here/cassandra/jvm17-server.options" |
    grep -v '^\s*$' | sed 's/^\(--add-[a-z]*\) /\1=/')
  # A fresh cluster of loopback nodes: no need to wait for gossip to settle or for a
  # ring delay meant for real networks.
  nohup java -Xms"$heap" -Xmx"$heap" -Xss256k -XX:+CrashOnOutOfMemoryError "${options[@]}" \
    -Dcassandra.config="file://$dir/cassandra.yaml" \
    -Dcassandra.storagedir="$dir" \
    -Dcassandra.logdir="$dir" \
    -Dcassandra.triggers_dir="$dir/triggers" \
    -Dlogback.configurationFile="$dir/logback.xml" \
    -Dcassandra-foreground=yes \
    -Dcassandra.skip_wait_for_gossip_to_settle=0 \
    -Dcassandra.ring_delay_ms=1000 \
    -Dcassandra.superuser_setup_delay_ms=0 \
    -Dcassandra.consistent.rangemovement=false \
    -cp "$lib_dir/*" org.apache.cassandra.service.CassandraDaemon \
    >"$dir/stdout.log" 2>&1 &
  echo $! >"$dir/pid"
}

node_running() {
  local pid_file
  pid_file="$(node_dir "$1")/pid"
  [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

# Whether node $1 accepts connections on its CQL port.
cql_open() {
  (exec 3<>"/dev/tcp/$(node_address "$1")/9042") 2>/dev/null
}

wait_cql() {
  local i=$1 deadline=$((SECONDS + start_timeout)) dir
  dir="$(node_dir "$i")"
  until cql_open "$i"; do
    node_running "$i" || fail "step 'start node $i' failed: the JVM exited; read $dir/system.log and $dir/stdout.log"
    ((SECONDS < deadline)) || fail "step 'start node $i': no CQL on $(node_address "$i"):9042 after ${start_timeout}s; read $dir/system.log"
    sleep 1
  done
}

# Waits until node $1's log, since its last start, says that every other running node of
# $2 is UP.
wait_peers() {
  local i=$1 nodes=$2 deadline=$((SECONDS + start_timeout)) dir offset j
  dir="$(node_dir "$i")"
  offset="$(cat "$dir/log_offset" 2>/dev/null || echo 0)"
  for j in $(seq 1 "$nodes"); do
    [ "$j" = "$i" ] && continue
    node_running "$j" || continue
    until tail -c +"$((offset + 1))" "$dir/system.log" 2>/dev/null |
      grep -q "/$(node_address "$j"):7000 is now UP"; do
      ((SECONDS < deadline)) || fail "step 'wait for the ring': node $i does not see node $j UP after ${start_timeout}s; read $dir/system.log"
      sleep 1
    done
  done
}

uri() {
  local nodes=$1 list=() i
  for i in $(seq 1 "$nodes"); do list+=("$(node_address "$i"):9042"); done
  (IFS=,; echo "${list[*]}")
}

up() {
  local nodes=${1:-1} started=$SECONDS i
  [ "$nodes" = 1 ] || [ "$nodes" = 3 ] || fail "up takes 1 or 3 nodes, not $nodes"
  for i in 1 2 3; do
    node_running "$i" && fail "node $i already runs (pid $(cat "$(node_dir "$i")/pid")); run 'down' first"
  done
  ensure_tools
  fetch
  rm -rf "$run_dir"
  mkdir -p "$run_dir"
  echo "$nodes" >"$run_dir/nodes"
  if [ -n "$tls" ]; then make_tls; fi
  for i in $(seq 1 "$nodes"); do
    write_config "$i" "$nodes"
  done
  # The seed first; the others join it one at a time, as Cassandra wants.
  for i in $(seq 1 "$nodes"); do
    start_node "$i"
    wait_cql "$i"
    echo "cql-up: node $i answers CQL on $(node_address "$i"):9042 after $((SECONDS - started)) s" >&2
  done
  for i in $(seq 1 "$nodes"); do
    wait_peers "$i" "$nodes"
  done
  echo "cql-up: Apache Cassandra $version, $nodes node(s)${tls:+ (TLS only, client certificates)}, ready in $((SECONDS - started)) s" >&2
  echo "export SCYLLA_URI=$(uri "$nodes")"
  if [ -n "$tls" ]; then echo "export CQL_TLS_DIR=$tls_dir"; fi
}

stop_pid() {
  local pid=$1 signal=$2 deadline=$((SECONDS + 60))
  kill "-$signal" "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.5
  done
}

down() {
  local i
  for i in 1 2 3; do
    if node_running "$i"; then
      stop_pid "$(cat "$(node_dir "$i")/pid")" TERM
    fi
  done
  rm -rf "$run_dir"
  echo "cql-up: stopped; removed $run_dir" >&2
}

status() {
  local nodes i
  nodes="$(cat "$run_dir/nodes" 2>/dev/null || echo 0)"
  [ "$nodes" -gt 0 ] || { echo "no cluster under $run_dir"; return 0; }
  for i in $(seq 1 "$nodes"); do
    if node_running "$i" && cql_open "$i"; then
      echo "node $i $(node_address "$i"): up, answers CQL"
    elif node_running "$i"; then
      echo "node $i $(node_address "$i"): running, no CQL yet"
    else
      echo "node $i $(node_address "$i"): down"
    fi
  done
  echo "export SCYLLA_URI=$(uri "$nodes")"
  if [ -d "$tls_dir" ]; then echo "export CQL_TLS_DIR=$tls_dir"; fi
}

case "${1:-up}" in
  up) up "${2:-1}" ;;
  down) down ;;
  status) status ;;
  stop)
    i=${2:?stop takes a node number}
    node_running "$i" || fail "node $i is not running"
    stop_pid "$(cat "$(node_dir "$i")/pid")" KILL
    echo "cql-up: node $i killed" >&2
    ;;
  halt)
    i=${2:?halt takes a node number}
    node_running "$i" || fail "node $i is not running"
    stop_pid "$(cat "$(node_dir "$i")/pid")" TERM
    echo "cql-up: node $i stopped" >&2
    ;;
  start)
    i=${2:?start takes a node number}
    node_running "$i" && fail "node $i already runs"
    start_node "$i"
    wait_cql "$i"
    wait_peers "$i" "$(cat "$run_dir/nodes")"
    echo "cql-up: node $i is back" >&2
    ;;
  restart)
    i=${2:?restart takes a node number}
    node_running "$i" || fail "node $i is not running"
    stop_pid "$(cat "$(node_dir "$i")/pid")" TERM
    start_node "$i"
    wait_cql "$i"
    echo "cql-up: node $i restarted" >&2
    ;;
  *) fail "usage: scripts/cql-up.sh [up [1|3] | down | status | stop I | halt I | start I | restart I]" ;;
esac
