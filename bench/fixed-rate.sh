#!/usr/bin/env bash
# Latency at a fixed request rate (open loop): oha sends at RATE req/s and, with
# --latency-correction, measures each latency from the request's scheduled send time, so
# a stalled server cannot hide its queueing (coordinated omission).
#
#   bench/fixed-rate.sh [RATE] [SECONDS]          (default 20000 req/s, 10 s)
#
# Runs the token, video and plaintext routes one after the other against the release
# binary pinned to SERVER_CPU, with oha pinned to LOAD_CPU, and prints p50/p99/p99.9.
# Installs oha from crates.io into bench/.work/oha (a few minutes, once).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$root"
RATE="${1:-20000}"
SECONDS_PER_RUN="${2:-10}"
SERVER_CPU="${SERVER_CPU:-1}"
LOAD_CPU="${LOAD_CPU:-0}"
PORT="${PORT:-3906}"
oha="$here/.work/oha/bin/oha"
if [ ! -x "$oha" ]; then
  echo "installing oha (cargo install, once)" >&2
  cargo install --quiet --locked --root "$here/.work/oha" oha
fi
cargo build --release --quiet
data_dir="$(mktemp -d)"
taskset -c "$SERVER_CPU" target/release/video-server --listen "127.0.0.1:$PORT" \
  --data-dir "$data_dir" --log-level warn &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$data_dir"' EXIT
until curl -fs -o /dev/null "http://127.0.0.1:$PORT/healthz"; do sleep 0.1; done

echo "| route | target req/s | achieved req/s | p50 ms | p99 ms | p99.9 ms | non-200 | client errors |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
for route in token video plaintext; do
  args=()
  case "$route" in
    token) args=(-m POST -T application/json -d "$(cat "$here/token-body.json")") path=/video/token ;;
    video) path=/video/12345 ;;
    plaintext) path=/plaintext ;;
  esac
  taskset -c "$LOAD_CPU" "$oha" -z "${SECONDS_PER_RUN}s" -q "$RATE" -c 100 --latency-correction \
    --no-tui --output-format json "${args[@]}" "http://127.0.0.1:$PORT$path" |
    python3 -c '
import json, sys
data = json.load(sys.stdin)
summary, percentiles = data["summary"], data["latencyPercentiles"]
codes = data.get("statusCodeDistribution", {})
bad = sum(count for code, count in codes.items() if code != "200")
errors = "; ".join(f"{count} {kind}" for kind, count in data.get("errorDistribution", {}).items()) or "0"
rps = summary["requestsPerSec"]
p50, p99, p999 = (percentiles[key] * 1000 for key in ("p50", "p99", "p99.9"))
print(f"| {sys.argv[1]} | {sys.argv[2]} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {p999:.2f} | {bad} | {errors} |")
' "$route" "$RATE"
done
