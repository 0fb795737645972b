"""Interrupting long commands as people and machines do: Ctrl-C at a terminal, SIGTERM from a supervisor.

Why a pty: `matrix` shows its progress bar only on a terminal, and the first `n/N` it draws is the event that
says trials are running (no guessing with sleeps). Waiting for processes that are not our children (the
matrix's workers) uses pidfds, which become readable when the process exits.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from .conftest import cli_command, cli_env


class _Terminal:
    """A program on a pty whose output is drained all the time (a full pty would block it mid-write, and a
    blocked program cannot react to a signal), with a wait for a pattern in what it printed."""

    def __init__(self, *args: str) -> None:
        master, slave = pty.openpty()
        env = {**cli_env(), "TERM": "xterm", "COLUMNS": "100"}
        env.pop("NO_COLOR", None)
        self.proc = subprocess.Popen([*cli_command(), *args], stdin=subprocess.DEVNULL, stdout=slave,
                                     stderr=slave, env=env, start_new_session=True)
        os.close(slave)
        self.master = master
        self.output = b""
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the program ended and closed the terminal
                chunk = b""
            with self.changed:
                self.output += chunk
                self.changed.notify_all()
            if not chunk:
                return

    def wait_for(self, pattern: re.Pattern[bytes], timeout: float) -> None:
        with self.changed:
            found = self.changed.wait_for(lambda: pattern.search(self.output) or not self.thread.is_alive(),
                                          timeout=timeout)
            assert found and pattern.search(self.output), \
                f"no {pattern.pattern!r} within {timeout} s; output so far: {self.output[-500:]!r}"

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.thread.join(timeout=5)
        os.close(self.master)


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                kids.append(int(stat.parent.name))
    return kids


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait (on pidfds) until every pid has exited; return those still running after `timeout`."""
    fds = {}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            fds[os.pidfd_open(pid)] = pid
    deadline = time.monotonic() + timeout
    try:
        while fds:
            ready, _, _ = select.select(list(fds), [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            for fd in ready:
                os.close(fd)
                del fds[fd]
        return list(fds.values())
    finally:
        for fd in fds:
            os.close(fd)


PROGRESS = re.compile(rb"\b[1-9]\d*/\d+\b")


def test_ctrl_c_on_matrix_exits_130():
    """QA F14 (fixed 08:12 UTC): Ctrl-C exited 0, silently."""
    term = _Terminal("matrix", "--trials", "2000", "--workers", "1", "--scenario", "unopened", "--mode", "cloud")
    try:
        term.wait_for(PROGRESS, timeout=30)
        os.killpg(term.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        assert term.proc.wait(timeout=15) == 130
        term.thread.join(timeout=5)
        assert b"recall-lab: interrupted" in term.output
    finally:
        term.close()


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs pidfds (Linux)")
def test_sigterm_on_matrix_leaves_no_worker_running():
    term = _Terminal("matrix", "--trials", "200", "--workers", "2", "--scenario", "unopened",
                     "--scenario", "web-client")
    workers: list[int] = []
    try:
        term.wait_for(PROGRESS, timeout=30)
        workers = _children(term.proc.pid)
        assert workers, "matrix --workers 2 started no processes"
        term.proc.send_signal(signal.SIGTERM)  # to the parent only: `timeout`, CI runners and systemd do this
        term.proc.wait(timeout=15)
        left = _wait_gone(workers, timeout=2)
        assert not left, f"worker processes {left} outlived recall-lab matrix"
    finally:
        for pid in _wait_gone(workers, 0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        term.close()

