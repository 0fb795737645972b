"""`recall-lab serve` under connection floods and password guessing, from another process over plain sockets.

Why subprocesses: the open-files limit, asyncio's own accept-error logging and the log on stderr are the
process's; only from outside can a test see that a flood of idle sockets neither locks everybody out nor fills
stderr with tracebacks, and that the `[limits]` table and the serve flags reach every listener.
"""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CLI = [sys.executable, "-c", "from recall_lab.harness.cli import main; main()"]


@contextlib.contextmanager
def serve(*args: str, nofile: int | None = None) -> Iterator[tuple[dict, subprocess.Popen]]:
    def lower_fd_limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    proc = subprocess.Popen([*CLI, "serve", "--json", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lower_fd_limit)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        yield json.loads(line)["domains"]["corp.example"], proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=20)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return err


def open_socket(ep: dict, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection((ep["host"], ep["port"]), timeout=10, source_address=(source, 0))


def first_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


class Imap:
    def __init__(self, ep: dict, source: str = "127.0.0.1") -> None:
        self.sock = open_socket(ep, source)
        self.file = self.sock.makefile("rb")
        self.greeting = self.file.readline()

    def command(self, tag: str, text: str) -> list[bytes]:
        self.sock.sendall(f"{tag} {text}\r\n".encode())
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError(f"closed after {lines!r}")
            lines.append(line)
            if line.startswith(tag.encode() + b" "):
                return lines

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_a_flood_of_idle_sockets_under_a_low_fd_limit_locks_nobody_else_out():
    """With 256 open files the derived caps are 96 connections, 72 per address: the flood from 127.0.0.1 is
    refused politely, 127.0.0.2 still logs in, and stderr has one line about it, not a traceback storm."""
    flood: list[socket.socket] = []
    with serve(nofile=256) as (corp, proc):
        try:
            greeted = refused = 0
            for _ in range(150):
                s = open_socket(corp["imap"])
                flood.append(s)
                line = first_line(s)
                if line.startswith(b"* OK"):
                    greeted += 1
                else:
                    assert line.startswith(b"* BYE [UNAVAILABLE]"), line
                    refused += 1
            assert greeted == 72 and refused == 78
            for ep in ("submission", "mx"):  # the SMTP listeners count against the same caps
                s = open_socket(corp[ep])
                flood.append(s)
                assert first_line(s).startswith(b"421 4.7.0"), ep
            other = Imap(corp["imap"], source="127.0.0.2")
            assert other.greeting.startswith(b"* OK")
            assert other.command("a", "LOGIN alice@corp.example alice-password")[-1].startswith(b"a OK")
            other.close()
        finally:
            for s in flood:
                s.close()
        deadline = time.monotonic() + 10
        while True:  # the server notices the closes a moment later
            again = Imap(corp["imap"])
            if again.greeting.startswith(b"* OK") or time.monotonic() > deadline:
                break
            again.close()
            time.sleep(0.05)
        assert again.greeting.startswith(b"* OK"), again.greeting
        again.close()
        err = stop(proc)
    assert "Traceback" not in err and "Too many open files" not in err, err[-2000:]
    assert err.count("refusing connections") == 1, err


def test_serve_flags_reach_every_listener():
    with serve("--max-connections", "3", "--max-connections-per-ip", "2", "--auth-failure-delay", "0.05",
               "--max-auth-failures", "2", "--login-timeout", "30") as (corp, proc):
        kept = [Imap(corp["imap"]), Imap(corp["imap"])]
        extra = open_socket(corp["submission"])
        assert first_line(extra).startswith(b"421 4.7.0"), "per-address cap of 2"
        extra.close()
        guesser = Imap(corp["imap"], source="127.0.0.2")
        start = time.monotonic()
        assert b" NO " in guesser.command("g1", "LOGIN alice@corp.example wrong")[-1]
        assert b" NO " in guesser.command("g2", "LOGIN alice@corp.example wrong")[-1]
        assert guesser.file.readline().startswith(b"* BYE Too many failed logins")
        assert guesser.file.readline() == b""
        assert time.monotonic() - start >= 0.1
        guesser.close()
        alice = Imap(corp["imap"], source="127.0.0.2")
        assert alice.command("a", "LOGIN alice@corp.example alice-password")[-1].startswith(b"a OK")
        for c in (*kept, alice):
            c.close()
        stop(proc)


def test_limits_table_of_a_config_file(tmp_path: Path):
    config = tmp_path / "lab.toml"
    config.write_text('[limits]\nmax_connections_per_ip = 1\nlogin_timeout = 0.5\n'
                      '[domains."corp.example"]\nrole = "organisation"\nusers = ["alice"]\n')
    with serve("--config", str(config)) as (corp, proc):
        first = open_socket(corp["mx"])
        assert first_line(first).startswith(b"220")
        second = open_socket(corp["imap"])
        assert first_line(second).startswith(b"* BYE [UNAVAILABLE]")
        second.close()
        start = time.monotonic()
        assert b"421 4.4.2" in first_line(first)  # no EHLO, no MAIL: the half-second budget runs out
        assert time.monotonic() - start < 5
        first.close()
        stop(proc)


@pytest.mark.parametrize(("args", "message"), [
    (["--max-connections", "0"], "--max-connections must be at least 1"),
    (["--auth-failure-delay", "-1"], "--auth-failure-delay must be 0 or more seconds"),
    (["--login-timeout", "nan"], "--login-timeout must be 0 (off) or more seconds"),
])
def test_bad_limit_flags_are_one_line_exit_2(args, message):
    proc = subprocess.run([*CLI, "serve", "--json", *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"recall-lab: {message}"], proc.stderr
