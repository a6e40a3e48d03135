# Shell functions the benchmark scripts share (sourced, not run).

# wait_ready PORT PID [PATH]: until http://127.0.0.1:PORT/PATH answers (default
# /video/12345, which every server we measure serves), failing if PID exits or 30 s pass.
wait_ready() {
  local port=$1 pid=$2 path=${3:-/video/12345}
  local deadline=$((SECONDS + 30))
  until curl -fs -o /dev/null "http://127.0.0.1:$port$path"; do
    kill -0 "$pid" 2>/dev/null || { echo "server exited during start" >&2; return 1; }
    ((SECONDS < deadline)) || { echo "server not ready after 30 s" >&2; return 1; }
    sleep 0.1
  done
}

# stop_server PID: SIGTERM, then wait for it.
stop_server() {
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
