#!/usr/bin/env python3
"""The load of bench/instructions.sh: COUNT requests of one ROUTE on one keep-alive
connection, each answered before the script returns, every status checked.

    instructions_client.py PORT ROUTE COUNT

A pipelined route writes DEPTH requests at a time (as wrk's pipeline.lua does) and reads
their DEPTH responses; the others write one request and read its response. Speed does not
matter here: the server runs under callgrind, which counts its instructions, not its time.

After each answer the client waits PAUSE_SECONDS before it writes again, so that the
server has tried to read the next request, found nothing and gone back to waiting on the
socket, as a busy server with many connections does after nearly every answer. Without the
pause, whether the next request was already there depended on timing, and the count per
unpipelined request moved by up to 6 % between runs; with it, to the instruction.
"""
import json
import os
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEPTH = 16
PAUSE_SECONDS = 0.001


def token_request():
    with open(os.path.join(HERE, "token-body.json"), "rb") as body_file:
        body = body_file.read().strip()
    return (
        b"POST /video/token HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def get(path):
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: bench\r\n\r\n"


# route name -> (request, expected status, requests per write)
ROUTES = {
    "plaintext": (get("/plaintext"), 200, 1),
    "plaintext-pipelined": (get("/plaintext"), 200, DEPTH),
    "video": (get("/video/12345"), 200, 1),
    "video-pipelined": (get("/video/12345"), 200, DEPTH),
    "not-found": (get("/video/does-not-exist"), 404, 1),
    "token": (token_request(), 200, 1),
    "token-pipelined": (token_request(), 200, DEPTH),
}


class Responses:
    """Reads HTTP/1.1 responses framed by Content-Length off one socket."""

    def __init__(self, connection):
        self.connection = connection
        self.buffer = b""

    def _fill(self):
        chunk = self.connection.recv(1 << 16)
        if not chunk:
            raise SystemExit("the server closed the connection")
        self.buffer += chunk

    def next_status(self):
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(self.buffer) < length:
            self._fill()
        self.buffer = self.buffer[length:]
        return status


def main():
    if len(sys.argv) != 4 or sys.argv[2] not in ROUTES:
        raise SystemExit(
            f"usage: {sys.argv[0]} PORT ROUTE COUNT  (ROUTE: {', '.join(ROUTES)})"
        )
    port, route, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    request, expected, depth = ROUTES[route]
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        responses = Responses(connection)
        sent = 0
        while sent < count:
            batch = min(depth, count - sent)
            connection.sendall(request * batch)
            for _ in range(batch):
                status = responses.next_status()
                if status != expected:
                    raise SystemExit(
                        json.dumps({"route": route, "status": status, "expected": expected})
                    )
            sent += batch
            time.sleep(PAUSE_SECONDS)


if __name__ == "__main__":
    main()
