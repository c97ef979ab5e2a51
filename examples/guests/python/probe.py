"""A Spillway guest in Python that tries what the sandbox must refuse, and
reports what it got. The tests use it; it is also a quick way to see the
sandbox from inside.

Input: one word.
- `file`: open a host file (/etc/hostname) and list /
- `socket`: connect a TCP socket to 127.0.0.1:22 and resolve a name
- `env`: the environment and the arguments
- `http`: an outgoing HTTP request (componentize-py links no wasi:http,
  so this reports that urllib has no way out)
- `exit N`: sys.exit(N)
- `log N`: write N lines to stdout, N to stderr and N with job.log
- `sleep S`: time.sleep(S) (a blocking WASI wait; the deadline ends it)
Output: JSON {"what": ..., "ok": bool, "result" or "error": ...}.
"""

import json
import os
import socket
import sys
import time

import wit_world
from wit_world.imports import job


def attempt(what, f):
    try:
        return {"what": what, "ok": True, "result": f()}
    except Exception as e:  # the point is to report whatever it was
        return {"what": what, "ok": False, "error": f"{type(e).__name__}: {e}"}


def read_file():
    with open("/etc/hostname") as f:
        return f.read()


def connect():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect(("127.0.0.1", 22))
    return "connected"


class WitWorld(wit_world.WitWorld):
    def run(self, input: bytes) -> bytes:
        word, _, arg = input.decode().strip().partition(" ")
        if word == "file":
            report = [attempt("open", read_file), attempt("listdir", lambda: os.listdir("/"))]
        elif word == "socket":
            report = [
                attempt("connect", connect),
                attempt("resolve", lambda: socket.getaddrinfo(b"example.com", 80)),
            ]
        elif word == "env":
            report = [
                attempt("environ", lambda: dict(os.environ)),
                attempt("argv", lambda: list(sys.argv)),
                attempt("getenv", lambda: os.getenv("PATH")),
            ]
        elif word == "exit":
            sys.exit(int(arg))
        elif word == "log":
            for i in range(int(arg)):
                print(f"stdout line {i}")
                print(f"stderr line {i}", file=sys.stderr)
                job.log(job.Level.INFO, f"log line {i}\nforged 2026-12-06T00:00:00Z INFO spillway: ok")
            report = [{"what": "log", "ok": True, "result": int(arg)}]
        elif word == "sleep":
            time.sleep(float(arg))
            report = [{"what": "sleep", "ok": True, "result": float(arg)}]
        else:
            report = [{"what": word, "ok": False, "error": "unknown probe"}]
        return json.dumps(report).encode()
