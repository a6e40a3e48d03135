#!/usr/bin/env python3
"""Memory held by idle keep-alive connections, in video-server or in nginx.

    bench/idle_connections.py [--server video-server|nginx] [--binary PATH] COUNT
        (default video-server; PATH: the video-server binary, built with cargo if omitted)

Starts the server fresh, pinned to CPU $SERVER_CPU (default 1): video-server, or Debian's
nginx with one worker (bench/nginx-hello.sh). Opens COUNT connections that each send one
GET /video/12345 and read the answer, then keeps them all open and quiet for $IDLE_SETTLE
seconds (default 3) after the last answer, so that a server which parks idle connections
(freeing their buffers or stacks after a moment) has done so. Then it checks that every
connection is still open and reads the server's resident memory (VmRSS from /proc; nginx:
its worker's), and prints it before and after, per connection in KiB, and as one
`IDLE_JSON {...}` line for bench/run.sh. Standard library only.

Limits it works within, and says so when they stop it:
- Descriptors: this process holds COUNT client sockets and the server COUNT more, each
  under the same hard RLIMIT_NOFILE (both raise their soft limit to it). Below COUNT + 64
  the run is not made: it prints why and records the count as not measured. Raising the
  hard limit needs root with CAP_SYS_RESOURCE (`ulimit -Hn`, or `prlimit`, before running).
- Ports: one source address can open as many connections to one server port as the
  ephemeral range (/proc/sys/net/ipv4/ip_local_port_range) has ports, about 28,000 by
  default. Connections are spread over source addresses 127.0.0.2, 127.0.0.3, … (all of
  127.0.0.0/8 is loopback on Linux), at most 20,000 per address.
"""

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The kernel's, for a client socket whose port is chosen at connect(): then a source address
# is limited by the ephemeral range per destination, not overall. Python names it from 3.12.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
PER_SOURCE_ADDRESS = 20_000
# Descriptors either process needs beyond the connections (listener, logs, the store).
SPARE_DESCRIPTORS = 64


def rss_kib(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit(f"no VmRSS for process {pid}")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def video_server_binary(given):
    if given:
        return given
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(ROOT, target, "release", "video-server")


def start(kind, binary, port, count, scratch):
    """The server, pinned; returns (process, the pid whose memory grows with connections)."""
    pin = ["taskset", "-c", os.environ.get("SERVER_CPU", "1")]
    if kind == "nginx":
        server = subprocess.Popen(pin + [os.path.join(ROOT, "bench/nginx-hello.sh"), str(port),
                                         scratch])
    else:
        server = subprocess.Popen(pin + [
            video_server_binary(binary), "--listen", f"127.0.0.1:{port}", "--data-dir", scratch,
            "--log-level", "warn", "--max-connections", str(count + SPARE_DESCRIPTORS),
            # The measurement must end before the server closes idle connections.
            "--idle-timeout-ms", "600000"])
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/video/12345", timeout=5).read()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{kind} did not start on port {port}")
            time.sleep(0.1)
    if kind != "nginx":
        return server, server.pid
    # The master (taskset and the script exec it) has one child: the worker, which holds
    # the connections.
    with open(f"/proc/{server.pid}/task/{server.pid}/children", encoding="ascii") as children:
        return server, int(children.read().split()[0])


def open_idle(port, count):
    """COUNT connections, each answered once; the sockets and how many were answered 200."""
    sockets, answered = [], 0
    for index in range(count):
        connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        connection.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        connection.bind((f"127.0.0.{2 + index // PER_SOURCE_ADDRESS}", 0))
        connection.connect(("127.0.0.1", port))
        connection.sendall(b"GET /video/12345 HTTP/1.1\r\nHost: bench\r\n\r\n")
        sockets.append(connection)
    for connection in sockets:
        connection.settimeout(30)
        answered += connection.recv(4096).startswith(b"HTTP/1.1 200")
    return sockets, answered


def still_open(sockets):
    """How many of the connections the server has not closed (no EOF waiting to be read)."""
    open_count = 0
    for connection in sockets:
        # Blocking mode: with a timeout set, Python would wait for data before the recv.
        connection.settimeout(None)
        try:
            open_count += connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            open_count += 1
        except OSError:
            pass
    return open_count


def measure(kind, binary, count, settle):
    port = int(os.environ.get("PORT") or free_port())
    scratch = tempfile.mkdtemp(prefix="idle-connections-")
    server = None
    try:
        server, pid = start(kind, binary, port, count, scratch)
        before = rss_kib(pid)
        sockets, answered = open_idle(port, count)
        time.sleep(settle)
        after = rss_kib(pid)
        held = still_open(sockets)
        for connection in sockets:
            connection.close()
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)
    per_connection = (after - before) / count
    print(f"{kind}: {answered} of {count} connections answered 200, {held} still open "
          f"after {settle:g} s idle")
    print(f"{kind} resident memory: {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB with "
          f"{count} idle connections: {per_connection:.1f} KiB per connection")
    return {"answered": answered, "still_open": held, "rss_before_mib": before / 1024,
            "rss_after_mib": after / 1024, "kib_per_connection": per_connection}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", choices=("video-server", "ours", "nginx"),
                        default="video-server")
    parser.add_argument("--binary", help="the video-server binary (default: cargo build)")
    parser.add_argument("count", type=int, nargs="?", default=10_000)
    args = parser.parse_args()
    kind = "video-server" if args.server == "ours" else args.server
    settle = float(os.environ.get("IDLE_SETTLE", "3"))
    # A TERM from bench/run.sh still closes the sockets and stops the server (finally).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    record = {"kind": "idle", "server": kind, "connections": args.count, "settle_s": settle}
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = args.count + SPARE_DESCRIPTORS
    if hard != resource.RLIM_INFINITY and hard < needed:
        record["skipped"] = f"hard descriptor limit {hard:,} < {needed:,}"
        print(f"{kind}: {args.count} connections not measured: the hard descriptor limit "
              f"({hard}) is below the {needed} that this client and the server each need; "
              f"raise it (`ulimit -Hn {needed}`, which needs root with CAP_SYS_RESOURCE) "
              f"and run again")
    else:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        record.update(measure(kind, args.binary, args.count, settle))
    print("IDLE_JSON " + json.dumps(record))


if __name__ == "__main__":
    main()
