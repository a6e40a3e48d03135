# Shell functions the benchmark scripts share (sourced, not run).

# wait_ready PORT PID [PATH] [SECONDS]: until http://127.0.0.1:PORT/PATH answers (default
# /video/12345, which every server we measure serves), failing if PID exits or SECONDS
# (default 30) pass.
wait_ready() {
  local port=$1 pid=$2 path=${3:-/video/12345} limit=${4:-30}
  local deadline=$((SECONDS + limit))
  until curl -fs -o /dev/null "http://127.0.0.1:$port$path"; do
    kill -0 "$pid" 2>/dev/null || { echo "server exited during start" >&2; return 1; }
    ((SECONDS < deadline)) || { echo "server not ready after $limit s" >&2; return 1; }
    sleep 0.1
  done
}

# wrk_script ROUTE URL [DEPTH]: sets the array wrk_args to wrk's script and URL for ROUTE
# (bench/wrk/ROUTE.lua), or, with DEPTH above 1, to bench/wrk/pipeline.lua writing DEPTH
# of ROUTE's requests at a time; wrk then needs ROUTE=ROUTE in its environment, which the
# plain script ignores. Run from the repository root.
wrk_script() {
  wrk_args=(-s "bench/wrk/$1.lua" "$2")
  [ "${3:-1}" = 1 ] || wrk_args=(-s bench/wrk/pipeline.lua "$2" -- "$3")
}

# stop_server PID: SIGTERM, then wait for it.
stop_server() {
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# children PID: the pids of PID's child processes (nginx's master has one: its worker).
children() {
  cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | sed '/^$/d'
}

# cpu_ticks PID: utime + stime of a process (or, given /proc/PID/task/TID, of a thread), in
# clock ticks (getconf CLK_TCK per second).
cpu_ticks() {
  stat_fields "$1" | awk '{ print $12 + $13 }'
}

# user_ticks PID: the user-space part of cpu_ticks.
user_ticks() {
  stat_fields "$1" | awk '{ print $12 }'
}

# stat_fields PID: /proc/PID/stat (or PATH/stat for a task directory) after the command
# name, whose parentheses may hold spaces: utime is field 12, stime 13.
stat_fields() {
  local stat=/proc/$1/stat
  [ -f "$1/stat" ] && stat=$1/stat
  sed 's/^.*) //' "$stat"
}

# thread_ticks PID PREFIX: the same, summed over the process's threads whose name starts
# with PREFIX (0 if none): view-writer is the batch writer, scylla the driver's runtime.
thread_ticks() {
  local total=0 task
  for task in /proc/"$1"/task/*; do
    case "$(cat "$task/comm" 2>/dev/null)" in
      "$2"*) total=$((total + $(cpu_ticks "$task"))) ;;
    esac
  done
  echo "$total"
}

# cql_bench_up NODES: a fresh CQL cluster of NODES nodes (scripts/cql-up.sh; exports
# SCYLLA_URI) and a temporary data directory ($data_dir). On exit, cql_bench_down stops
# the server ($server_pid) and the sampler ($sampler_pid) if started, and removes both.
cql_bench_up() {
  data_dir="$(mktemp -d)"
  server_pid=""
  sampler_pid=""
  trap cql_bench_down EXIT
  eval "$(bash scripts/cql-up.sh up "$1")"
}
cql_bench_down() {
  if [ -n "$sampler_pid" ]; then kill "$sampler_pid" 2>/dev/null || true; fi
  if [ -n "$server_pid" ]; then stop_server "$server_pid"; fi
  rm -rf "$data_dir"
  bash scripts/cql-up.sh down >/dev/null 2>&1 || true
}

# metric NAME: a value from the /metrics of the server on $port (0 if it has none).
metric() {
  curl -fs "http://127.0.0.1:$port/metrics" |
    awk -v name="$1" '$1 == name { print $2; found = 1 } END { if (!found) print 0 }'
}
