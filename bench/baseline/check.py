#!/usr/bin/env python3
"""Proves the Node baseline is the service video-server replaces, not something like it.

    bench/baseline/check.py [VIDEO_SERVER_BINARY]   (default target/release/video-server)

Installs the baseline (bench/install.sh baseline), starts it and video-server, each fresh
on a free loopback port with the default CDNs, and asks both the same questions: three
token requests with the contract's body (the round robin visits each CDN once, so each
answer must carry the contract's test vectors for that CDN, and the two servers' answers
must be the same JSON), the seeded video, an unknown video (404), a size sent as a string
and an unknown key (400). Exits 1 naming the first difference. bench/run.sh runs it before
measuring. Standard library only.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SRC_1080 = "/Big_Buck_Bunny_1080p_surround_FrostWire.com.mp4"
SRC_720 = "/Big_Buck_Bunny_720p_surround_FrostWire.com.mp4"
# docs/api.md, "Test vectors": the default CDNs in order, with the tokens of both sources.
CONTRACT_VECTORS = [
    ("https://d2usdis6r1u782.cloudfront.net",
     "c6346e68c6808c506faa8851ca0f6aef", "32f18240383a86ea77cd060475ab3c0d"),
    ("https://d2oukvvww2uoq.cloudfront.net",
     "39ccd96eb02069a97a9cca39980e4c12", "cd358d0e3ae68b6268004dfb2e161c11"),
    ("https://dbke9ww44or29.cloudfront.net",
     "5b52cf86a609afedc6b6a4a110f22325", "885c1e6f3d0e6cb191d3b73e8cc7f01a"),
]


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ask(port, path, body=None):
    """(status, parsed JSON body) of one request; POSTs `body` as JSON when given."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if body is not None:
        request.data = body.encode()
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_until_serving(name, process, port):
    deadline = time.monotonic() + 30
    while True:
        try:
            ask(port, "/video/12345")
            return
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"{name} exited during start (status {process.returncode})")
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} not serving on port {port} after 30 s")
            time.sleep(0.1)


def differences(ours, node):
    """What the two servers answered differently, and where the answers leave the contract."""
    found = []
    with open(os.path.join(HERE, "..", "token-body.json"), encoding="utf-8") as file:
        body = file.read()
    for turn, (address, token_1080, token_720) in enumerate(CONTRACT_VECTORS):
        expected = [f"{address}{SRC_1080}?token={token_1080}", f"{address}{SRC_720}?token={token_720}"]
        answers = {name: ask(port, "/video/token", body) for name, port in (("ours", ours), ("node", node))}
        for name, (status, video) in answers.items():
            signed = [source.get("src") for source in video.get("sources", [])]
            if status != 200 or signed != expected:
                found.append(f"token request {turn + 1}, {name}: {status} {signed}, expected {expected}")
        if answers["ours"] != answers["node"]:
            found.append(f"token request {turn + 1}: {answers['ours']} (ours) != {answers['node']} (node)")
    for path, body, status in (
            ("/video/12345", None, 200),
            ("/video/no-such-video", None, 404),
            ("/video/token", '{"video":{"videoId":"1","title":"t","sources":'
                             '[{"src":"/a.mp4","size":"1080","type":"video/mp4"}]}}', 400),
            ("/video/token", '{"video":{"videoId":"1","title":"t","sources":[]},"extra":1}', 400)):
        (ours_status, ours_body), (node_status, node_body) = ask(ours, path, body), ask(node, path, body)
        if (ours_status, node_status) != (status, status):
            found.append(f"{path} {body or ''}: ours {ours_status}, node {node_status}, expected {status}")
        elif status == 200 and ours_body != node_body:
            found.append(f"{path}: {ours_body} (ours) != {node_body} (node)")
        elif status != 200 and not (isinstance(ours_body.get("error"), str)
                                    and isinstance(node_body.get("error"), str)):
            found.append(f"{path}: errors must be {{\"error\": text}}: {ours_body}, {node_body}")
    return found


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/video-server")
    if not os.access(binary, os.X_OK):
        raise SystemExit(f"no video-server binary at {binary}: cargo build --release first")
    subprocess.run([os.path.join(ROOT, "bench/install.sh"), "baseline"], check=True)
    data_dir = tempfile.mkdtemp(prefix="baseline-check-")
    ours_port, node_port = free_port(), free_port()
    processes = []
    try:
        processes.append(subprocess.Popen(
            [binary, "--listen", f"127.0.0.1:{ours_port}", "--data-dir", data_dir,
             "--log-level", "warn"]))
        processes.append(subprocess.Popen(
            ["node", "server.js"], cwd=os.path.join(ROOT, "bench/.work/baseline"),
            env={**os.environ, "PORT": str(node_port)}, stdout=subprocess.DEVNULL))
        wait_until_serving("video-server", processes[0], ours_port)
        wait_until_serving("the Node baseline", processes[1], node_port)
        found = differences(ours_port, node_port)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)
    if found:
        print("the Node baseline and video-server disagree:", *found, sep="\n  ", file=sys.stderr)
        sys.exit(1)
    print("the Node baseline answers as video-server does: the contract's tokens for all three "
          "CDNs in turn, the seeded video, 404 and 400", file=sys.stderr)


if __name__ == "__main__":
    main()
