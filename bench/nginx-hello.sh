#!/usr/bin/env bash
# Debian's nginx answering every request with 200 "Hello, World!": the anchor bench/run.sh
# and bench/idle_connections.py measure beside video-server. One worker, keep-alive without
# a request limit, no access log, the listen backlog our server uses (4096), and as many
# connections as the descriptor limit allows (at most 65,536: nginx allocates them all at
# start). Everything lives under PREFIX, a directory the caller creates and removes; the
# system's nginx and its configuration are never touched.
#
#   bench/nginx-hello.sh PORT PREFIX [CONF]    (CONF: where the configuration is written,
#                                               default PREFIX/nginx.conf)
#
# nginx runs in the foreground in place of this script (exec), so the caller's child is
# nginx's master, pinned to whatever CPUs the caller gave this script (taskset), and the
# one worker, which does all the work, is the master's only child. GET /requests is
# stub_status; the third number of its third line counts the requests served, which
# bench/run.sh reads before and after a measured window.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
fi
port=$1
prefix=$2
conf=${3:-$prefix/nginx.conf}
nginx="$(command -v nginx || echo /usr/sbin/nginx)"
ulimit -n "$(ulimit -Hn)"
descriptors="$(ulimit -n)"
[ "$descriptors" = unlimited ] && descriptors=1048576
connections=$((descriptors - 64))
[ "$connections" -gt 65536 ] && connections=65536
cat >"$conf" <<EOF
# Written by bench/nginx-hello.sh for a benchmark run.
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile $descriptors;
pid $prefix/nginx.pid;
error_log $prefix/error.log warn;
events {
    worker_connections $connections;
}
http {
    access_log off;
    default_type text/plain;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    client_body_temp_path $prefix/client_body;
    proxy_temp_path $prefix/proxy;
    fastcgi_temp_path $prefix/fastcgi;
    uwsgi_temp_path $prefix/uwsgi;
    scgi_temp_path $prefix/scgi;
    server {
        listen 127.0.0.1:$port backlog=4096;
        location / {
            return 200 "Hello, World!";
        }
        location = /requests {
            stub_status;
        }
    }
}
EOF
exec "$nginx" -p "$prefix/" -e "$prefix/error.log" -c "$conf"
