#!/usr/bin/env bash
# Profiles video-server under load and renders a flamegraph.
#
#   scripts/profile.sh [token|video|plaintext] [SECONDS]     (default: token, 10)
#
# Builds the `profiling` profile (release code with symbols), starts the server pinned to
# SERVER_CPU, drives it with wrk pinned to LOAD_CPU, records it with `perf record -g`
# (software cpu-clock sampling where the machine has no hardware counters), and writes
# bench/results/profile-<scenario>-<time>/{perf.data,flamegraph.svg,top.txt,summary.txt}:
# top.txt lists the hottest symbols, summary.txt the shares of the costs we act on
# (kernel send/receive, JSON parsing, hashing, the runtime; scripts/profile_summary.py).
# CONNECTIONS (default 100) sets wrk's connections (the descriptor limit is raised to the
# hard limit); PIPELINE=16 writes 16 requests at a time (bench/wrk/pipeline.lua), where our
# own code's share shows; BINARY=path profiles a binary already built (another revision's
# `profiling` build, for a before/after) instead of building this tree's. Example:
#   CONNECTIONS=10000 scripts/profile.sh token 6
#   PIPELINE=16 scripts/profile.sh plaintext
# Installs what it needs: linux-perf and wrk (Debian), inferno (crates.io).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$root"
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
scenario="${1:-token}"
seconds="${2:-10}"
SERVER_CPU="${SERVER_CPU:-1}"
LOAD_CPU="${LOAD_CPU:-0}"
PORT="${PORT:-3904}"
CONNECTIONS="${CONNECTIONS:-100}"
PIPELINE="${PIPELINE:-1}"
ulimit -n "$(ulimit -Hn)"
case "$scenario" in token | video | plaintext) ;; *)
  echo "usage: $0 [token|video|plaintext] [SECONDS]" >&2
  exit 2
  ;;
esac

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v perf >/dev/null 2>&1; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null
fi
"$root/bench/install.sh" wrk
if ! command -v inferno-flamegraph >/dev/null 2>&1; then
  echo "installing inferno (cargo install)" >&2
  cargo install --quiet --locked inferno
fi
export PATH="$HOME/.cargo/bin:$PATH"

binary="${BINARY:-}"
if [ -z "$binary" ]; then
  cargo build --profile profiling --quiet
  binary=target/profiling/video-server
fi
load="wrk -c$CONNECTIONS"
[ "$PIPELINE" = 1 ] || load="$load, $PIPELINE per write"
out="$root/bench/results/profile-$scenario-$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$out"
data_dir="$(mktemp -d)"
taskset -c "$SERVER_CPU" "$binary" --listen "127.0.0.1:$PORT" \
  --data-dir "$data_dir" --log-level warn 2>"$out/server.log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$data_dir"' EXIT
until curl -fs -o /dev/null "http://127.0.0.1:$PORT/healthz"; do
  kill -0 "$pid" 2>/dev/null || { echo "server exited" >&2; exit 1; }
  sleep 0.1
done

wrk_script "$scenario" "http://127.0.0.1:$PORT" "$PIPELINE"
ROUTE="$scenario" taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$((seconds + 2))s" \
  "${wrk_args[@]}" >"$out/wrk.txt" &
wrk_pid=$!
sleep 1
perf record -F 999 -g -p "$pid" -o "$out/perf.data" -- sleep "$seconds" 2>"$out/perf-record.log"
wait "$wrk_pid"

perf script -i "$out/perf.data" 2>/dev/null | inferno-collapse-perf >"$out/stacks.folded"
inferno-flamegraph --title "video-server $scenario ($load)" <"$out/stacks.folded" >"$out/flamegraph.svg"
# awk, not grep | head: head closing the pipe early would fail the script under pipefail.
perf report -i "$out/perf.data" --no-children --sort symbol --stdio 2>/dev/null |
  awk '/^ +[0-9]/ && shown++ < 30' >"$out/top.txt"
python3 "$here/profile_summary.py" "$out/stacks.folded" >"$out/summary.txt"
echo "flamegraph: $out/flamegraph.svg" >&2
echo "costs by group (summary.txt):" >&2
cat "$out/summary.txt"
echo "top symbols (self time):" >&2
cat "$out/top.txt"
