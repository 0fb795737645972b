"""Benchmark of password guessing as an outsider sees it: wrong logins per second against a running lab.

Why a separate process with plain sockets: the figure that matters is what a hostile client gets from the
lab's real listeners, with their default settings, not what a test inside the server's loop measures. The
script starts `recall-lab serve --json` (default lab, ephemeral ports), then for --seconds on each protocol:

1. IMAP: one connection at a time sends `LOGIN alice@corp.example wrong` and waits for the answer; when the
   server hangs up (too many failures) it connects again at once. Reported: wrong logins/s.
2. SMTP submission: the same with `AUTH PLAIN` (EHLO first). Reported: wrong AUTHs/s.
3. After each attack, a fresh connection with the right password, from the attacker's own address: how long
   until it is logged in (the rightful user must never be locked out, even behind the same NAT).
4. IMAP, an impatient guesser: one LOGIN per connection, hanging up after 20 ms without an answer (a right
   password used to be answered at once, so silence meant "wrong" and the failure delay cost nothing). Reported:
   tries/s, and how long the right password then takes from that address: if it too is not answered within
   the 20 ms, the silence told the guesser nothing.

Each protocol is attacked from its own loopback address (127.0.0.2 for IMAP, 127.0.0.3 for SMTP), because the
server makes an address that keeps failing wait longer, on every protocol.

    python scripts/bench_auth.py [--seconds 5] [--json] [--serve-arg=--auth-failure-delay=0.5 ...]

Targets: wrong logins/s on one connection of the order of 1/auth_failure_delay (Dovecot: 2 s
per failure), the right password accepted at once afterwards.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
USER = "alice@corp.example"
PASSWORD = "alice-password"


class Closed(Exception):
    """The server closed the connection."""


class Lines:
    """Reads CRLF lines from a plain blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed()
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def smtp_reply(self) -> bytes:
        while True:
            line = self.line()
            if len(line) < 4 or line[3:4] != b"-":
                return line


def _connect(host: str, port: int, source: str) -> tuple[socket.socket, Lines]:
    sock = socket.create_connection((host, port), timeout=60, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock, Lines(sock)


def imap_attack(host: str, port: int, seconds: float, source: str) -> dict:
    """Lock-step wrong LOGINs on one connection at a time; reconnect when the server hangs up."""
    failures = connections = 0
    end = time.monotonic() + seconds
    start = time.monotonic()
    n = 0
    while time.monotonic() < end:
        try:
            sock, rd = _connect(host, port, source)
        except OSError:
            time.sleep(0.01)
            continue
        connections += 1
        try:
            greeting = rd.line()
            if not greeting.startswith(b"* OK"):
                raise Closed()
            while time.monotonic() < end:
                n += 1
                sock.sendall(f"a{n} LOGIN {USER} wrong{n}\r\n".encode())
                while True:
                    line = rd.line()
                    if line.startswith(f"a{n} ".encode()):
                        break
                    if line.startswith(b"* BYE"):
                        raise Closed()
                if b" NO " in line:
                    failures += 1
                else:
                    raise RuntimeError(f"unexpected answer {line!r}")
        except (Closed, ConnectionError):
            pass
        finally:
            sock.close()
    elapsed = time.monotonic() - start
    return {"failures": failures, "seconds": round(elapsed, 2), "per_second": round(failures / elapsed, 1),
            "connections": connections}


def imap_impatient(host: str, port: int, seconds: float, source: str, patience: float = 0.02) -> dict:
    tries = 0
    end = time.monotonic() + seconds
    start = time.monotonic()
    while time.monotonic() < end:
        try:
            sock, rd = _connect(host, port, source)
        except OSError:
            time.sleep(0.01)
            continue
        try:
            rd.line()
            sock.sendall(f"i{tries} LOGIN {USER} wrong{tries}\r\n".encode())
            sock.settimeout(patience)
            try:
                rd.line()
            except (TimeoutError, Closed, ConnectionError):
                pass
            tries += 1
        finally:
            sock.close()
    elapsed = time.monotonic() - start
    return {"tries": tries, "seconds": round(elapsed, 2), "per_second": round(tries / elapsed, 1)}


def imap_right_login(host: str, port: int, source: str) -> float:
    t0 = time.monotonic()
    sock, rd = _connect(host, port, source)
    try:
        rd.line()
        sock.sendall(f"r1 LOGIN {USER} {PASSWORD}\r\n".encode())
        while True:
            line = rd.line()
            if line.startswith(b"r1 "):
                break
        if not line.startswith(b"r1 OK"):
            raise RuntimeError(f"right password refused: {line!r}")
        return time.monotonic() - t0
    finally:
        sock.close()


def _smtp_open(host: str, port: int, source: str) -> tuple[socket.socket, Lines]:
    sock, rd = _connect(host, port, source)
    if not rd.smtp_reply().startswith(b"220"):
        raise Closed()
    sock.sendall(b"EHLO bench.example\r\n")
    if not rd.smtp_reply().startswith(b"250"):
        raise Closed()
    return sock, rd


def smtp_attack(host: str, port: int, seconds: float, source: str) -> dict:
    failures = connections = 0
    end = time.monotonic() + seconds
    start = time.monotonic()
    n = 0
    while time.monotonic() < end:
        try:
            sock, rd = _smtp_open(host, port, source)
        except (OSError, Closed):
            time.sleep(0.01)
            continue
        connections += 1
        try:
            while time.monotonic() < end:
                n += 1
                token = base64.b64encode(f"\0{USER}\0wrong{n}".encode()).decode()
                sock.sendall(f"AUTH PLAIN {token}\r\n".encode())
                reply = rd.smtp_reply()
                if reply.startswith(b"535"):
                    failures += 1
                elif reply.startswith(b"421"):
                    failures += 1  # the last failure of a connection is answered 421 and closed
                    raise Closed()
                else:
                    raise RuntimeError(f"unexpected answer {reply!r}")
        except (Closed, ConnectionError):
            pass
        finally:
            sock.close()
    elapsed = time.monotonic() - start
    return {"failures": failures, "seconds": round(elapsed, 2), "per_second": round(failures / elapsed, 1),
            "connections": connections}


def smtp_right_login(host: str, port: int, source: str) -> float:
    t0 = time.monotonic()
    sock, rd = _smtp_open(host, port, source)
    try:
        token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
        sock.sendall(f"AUTH PLAIN {token}\r\n".encode())
        reply = rd.smtp_reply()
        if not reply.startswith(b"235"):
            raise RuntimeError(f"right password refused: {reply!r}")
        return time.monotonic() - t0
    finally:
        sock.close()


def start_lab(extra: list[str]) -> tuple[subprocess.Popen, dict]:
    exe = shutil.which("recall-lab", path=str(ROOT / ".venv" / "bin") + os.pathsep + os.environ.get("PATH", ""))
    cmd = [exe, "serve", "--json", *extra] if exe else [sys.executable, "-m", "recall_lab.harness", "serve", "--json", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise SystemExit("recall-lab serve did not start")
    return proc, json.loads(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each attack")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object")
    ap.add_argument("--serve-arg", action="append", default=[], help="extra argument for recall-lab serve")
    args = ap.parse_args()
    proc, endpoints = start_lab(args.serve_arg)
    try:
        corp = endpoints["domains"]["corp.example"]
        imap_ep, sub = corp["imap"], corp["submission"]
        imap = imap_attack(imap_ep["host"], imap_ep["port"], args.seconds, "127.0.0.2")
        imap["right_login_ms"] = round(imap_right_login(imap_ep["host"], imap_ep["port"], "127.0.0.2") * 1000, 2)
        smtp = smtp_attack(sub["host"], sub["port"], args.seconds, "127.0.0.3")
        smtp["right_login_ms"] = round(smtp_right_login(sub["host"], sub["port"], "127.0.0.3") * 1000, 2)
        hasty = imap_impatient(imap_ep["host"], imap_ep["port"], args.seconds, "127.0.0.4")
        hasty["right_login_ms"] = round(imap_right_login(imap_ep["host"], imap_ep["port"], "127.0.0.4") * 1000, 2)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    result = {"imap_login": imap, "smtp_auth": smtp, "imap_impatient": hasty}
    if args.json:
        print(json.dumps(result))
        return
    for name in ("imap_login", "smtp_auth"):
        r = result[name]
        print(f"{name:14s} {r['per_second']:>9.1f} wrong/s ({r['failures']} in {r['seconds']} s over "
              f"{r['connections']} connection(s)); right password afterwards: {r['right_login_ms']} ms")
    print(f"imap_impatient {hasty['per_second']:>9.1f} tries/s ({hasty['tries']} in {hasty['seconds']} s, one per "
          f"connection, 20 ms patience); right password afterwards: {hasty['right_login_ms']} ms")


if __name__ == "__main__":
    main()
