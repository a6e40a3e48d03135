#!/usr/bin/env bash
# The page, working, in one command: a local CDN origin and video-server in front of it.
#
#   scripts/demo.sh            builds video-server (debug) if needed, starts both, prints
#                              the URL to open, and runs until Ctrl-C
#
# What it starts, all on 127.0.0.1 and free ports, all under one temporary directory that
# is removed on exit:
#   - Debian's nginx as the CDN origin: it serves tests/fixtures/test-pattern.mp4 under
#     /bound/, which checks nginx-scheme tokens with secure_link (the locations of
#     tests/fixtures/nginx-secure-link.conf, the README's blocks: /bound/ binds the token to
#     the viewer's address), and lets the page read why a URL was refused (CORS);
#   - video-server with an embedded store, that nginx as its one CDN (`--cdns`, scheme
#     nginx, tokens bound to the viewer, valid DEMO_TTL_SECONDS), a catalog with the video
#     (`--catalog`) and `--signing-policy catalog`. The store also seeds Big Buck Bunny
#     (12345), whose files the demo origin does not have: choosing it shows the error state.
#
# Environment:
#   DEMO_PORT          video-server's port (default: a free one)
#   DEMO_TTL_SECONDS   how long a token works (default 600)
#   VIDEO_SERVER_BIN   the binary to run (default: `cargo build`, then target/debug's)
#   NGINX              the nginx binary (default: nginx on PATH, or /usr/sbin/nginx)
#   DEMO_READY_FILE    for tests: once both listen, write {"url","cdn","work","bin"} as
#                      JSON to this file; stop the demo with SIGTERM (it cleans up the same way)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
ttl="${DEMO_TTL_SECONDS:-600}"

nginx_bin="${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}"
if [ ! -x "$nginx_bin" ]; then
  echo "demo: Debian's nginx is needed as the CDN origin: scripts/install-test-tools.sh installs it" >&2
  exit 1
fi
if [ -n "${VIDEO_SERVER_BIN:-}" ]; then
  bin="$VIDEO_SERVER_BIN"
else
  (cd "$root" && cargo build --quiet --bin video-server)
  target="${CARGO_TARGET_DIR:-target}"
  case "$target" in /*) ;; *) target="$root/$target" ;; esac
  bin="$target/debug/video-server"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/video-server-demo.XXXXXX")"
nginx_pid=""
server_pid=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  # The server first: it writes the views it holds, then exits (within its shutdown timeout).
  if [ -n "$server_pid" ]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  if [ -n "$nginx_pid" ]; then kill -QUIT "$nginx_pid" 2>/dev/null || true; wait "$nginx_pid" 2>/dev/null || true; fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits up to 20 s for a TCP port on 127.0.0.1 to accept, while process $2 lives.
wait_for_port() {
  local port=$1 pid=$2
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---- the CDN origin -------------------------------------------------------------------
mkdir -p "$work/root/bound" "$work/nginx"
cp "$root/tests/fixtures/test-pattern.mp4" "$work/root/bound/test-pattern.mp4"
for attempt in 1 2 3 4 5; do
  cdn_port="$(free_port)"
  cat >"$work/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $work/nginx/nginx.pid;
events { worker_connections 256; }
http {
    access_log $work/nginx/access.log;
    client_body_temp_path $work/nginx/client_body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    types { video/mp4 mp4; }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$cdn_port;
        root $work/root;
        # The page is another origin: let it read a refusal's status (403, 410) to explain it.
        add_header Access-Control-Allow-Origin "*" always;
        include $root/tests/fixtures/nginx-secure-link.conf;
    }
}
EOF
  "$nginx_bin" -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" </dev/null &
  nginx_pid=$!
  if wait_for_port "$cdn_port" "$nginx_pid"; then break; fi
  kill "$nginx_pid" 2>/dev/null || true
  wait "$nginx_pid" 2>/dev/null || true
  nginx_pid=""
  echo "demo: nginx did not start on port $cdn_port (attempt $attempt): $(tail -n 3 "$work/nginx/error.log" 2>/dev/null)" >&2
done
[ -n "$nginx_pid" ] || { echo "demo: nginx would not start" >&2; exit 1; }
cdn="http://127.0.0.1:$cdn_port"

# ---- video-server ---------------------------------------------------------------------
# The key is the secret of the fixture's secure_link_md5 lines.
cat >"$work/cdns.json" <<EOF
[{"name": "demo-origin", "address": "$cdn", "scheme": "nginx", "key": "nginx-secret",
  "bind_ip": true, "ttl_seconds": $ttl}]
EOF
cat >"$work/catalog.json" <<'EOF'
[{"videoId": "test-pattern", "title": "Test pattern (5 s, VP9)",
  "sources": [{"src": "/bound/test-pattern.mp4", "size": 180,
               "type": "video/mp4; codecs=\"vp09.00.11.08\""}]}]
EOF
"$bin" --listen "127.0.0.1:${DEMO_PORT:-0}" --data-dir "$work/data" --no-pin --workers 1 \
  --cdns "$work/cdns.json" --catalog "$work/catalog.json" --signing-policy catalog \
  </dev/null 2>"$work/server.log" &
server_pid=$!
address=""
for _ in $(seq 300); do
  address="$(sed -n 's/.*listening addr=\([0-9.:]*\).*/\1/p' "$work/server.log" | head -n 1)"
  [ -n "$address" ] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
  sleep 0.1
done
if [ -z "$address" ]; then
  echo "demo: video-server did not start; its log:" >&2
  cat "$work/server.log" >&2
  exit 1
fi
url="http://$address/"

if [ -n "${DEMO_READY_FILE:-}" ]; then
  printf '{"url": "%s", "cdn": "%s", "work": "%s", "bin": "%s"}\n' "$url" "$cdn" "$work" "$bin" \
    >"$DEMO_READY_FILE.tmp"
  mv "$DEMO_READY_FILE.tmp" "$DEMO_READY_FILE"
fi
cat <<EOF

  video-server demo

  Open  $url

  CDN origin   $cdn (nginx secure_link; tokens bound to the viewer's address, valid $ttl s)
  Video        test-pattern: tests/fixtures/test-pattern.mp4
  Logs         $work/server.log, $work/nginx/ (removed on exit)

  Ctrl-C stops both.

EOF
# Until a signal, or until one of the two dies on its own (then say so, and stop the other).
set +e
wait -n "$server_pid" "$nginx_pid"
echo "demo: $(kill -0 "$server_pid" 2>/dev/null && echo nginx || echo video-server) stopped on its own; the server's last lines:" >&2
tail -n 5 "$work/server.log" >&2
exit 1
