#!/usr/bin/env python3
"""Memory held by idle keep-alive connections.

    bench/idle_connections.py [COUNT]        (default 10000; needs `ulimit -n` above COUNT)

Starts the release binary pinned to CPU $SERVER_CPU (default 1), opens COUNT connections that each send one
GET /video/12345 and then sit idle, checks every response, and prints the server's resident
memory (VmRSS from /proc) before and after, also as one `IDLE_JSON {…}` line for
bench/run.sh. Standard library only.
"""

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = int(os.environ.get("PORT", "3905"))


def rss_kib(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < count + 100:
        raise SystemExit(f"the descriptor limit ({hard}) is below {count} connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    data_dir = tempfile.mkdtemp()
    server = subprocess.Popen(
        ["taskset", "-c", os.environ.get("SERVER_CPU", "1"), os.path.join(ROOT, "target/release/video-server"),
         "--listen", f"127.0.0.1:{PORT}", "--data-dir", data_dir, "--log-level", "warn"])
    try:
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/healthz").read()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        before = rss_kib(server.pid)
        sockets = []
        for _ in range(count):
            connection = socket.create_connection(("127.0.0.1", PORT))
            connection.sendall(b"GET /video/12345 HTTP/1.1\r\nHost: bench\r\n\r\n")
            sockets.append(connection)
        answered = sum(c.recv(4096).startswith(b"HTTP/1.1 200") for c in sockets)
        time.sleep(1)
        after = rss_kib(server.pid)
        print(f"{answered} of {count} connections answered 200 and held open idle")
        print(f"server resident memory: {before / 1024:.0f} MiB idle, {after / 1024:.0f} MiB "
              f"with {count} connections ({(after - before) / count:.1f} KiB per connection)")
        print("IDLE_JSON " + json.dumps({
            "kind": "idle", "connections": count, "answered": answered,
            "rss_before_mib": before / 1024, "rss_after_mib": after / 1024,
            "kib_per_connection": (after - before) / count}))
        for connection in sockets:
            connection.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
