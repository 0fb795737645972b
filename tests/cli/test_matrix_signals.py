"""SIGINT/SIGTERM to `recall-lab matrix` (QA F14, F15): prompt exit, one line, and no process outlives it.

Why subprocesses: the behaviour under test is the process's (signal handlers, worker processes, exit status).
Readiness is read from `--progress-every 1` lines on stderr, never guessed with a sleep; a worker's end is
awaited on a pidfd (readable once the process has exited), so an orphan fails the test instead of a timing."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs os.pidfd_open (Linux)")


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "recall_lab.harness", "matrix", "-q", "--progress-every", "1", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for_trials(proc: subprocess.Popen[str]) -> tuple[list[str], threading.Thread]:
    """Block until the first trial is done; then keep reading stderr in a thread (a full pipe would block the
    process in a write, where no signal handler of the event loop runs). Returns the lines (so far and to come) and the reader."""
    assert proc.stderr is not None
    lines: list[str] = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("trials "):
            reader = threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True)
            reader.start()
            return lines, reader
    pytest.fail(f"matrix ended before a trial was done (status {proc.wait()})")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _pidfds(pids: list[int]) -> dict[int, int]:
    fds = {}
    for pid in pids:
        try:
            fds[pid] = os.pidfd_open(pid)
        except ProcessLookupError:
            pass
    return fds


def _assert_all_exit(fds: dict[int, int], timeout: float = 5.0) -> None:
    try:
        for pid, fd in fds.items():
            ready, _, _ = select.select([fd], [], [], timeout)
            assert ready, f"child process {pid} outlived recall-lab"
    finally:
        for fd in fds.values():
            os.close(fd)


@pytest.mark.parametrize(("sig", "status", "line"), [(signal.SIGINT, 130, "recall-lab: interrupted"),
                                                     (signal.SIGTERM, 143, "recall-lab: terminated")])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_signal_stops_matrix_and_its_workers(sig: signal.Signals, status: int, line: str, workers: str) -> None:
    proc = _start("--trials", "300", "--workers", workers)
    try:
        lines, reader = _wait_for_trials(proc)
        kids = _pidfds(_children(proc.pid))
        if workers == "2":
            assert len(kids) >= 2  # the workers (and multiprocessing's resource tracker)
        proc.send_signal(sig)
        proc.wait(timeout=15)  # bounded clean-up is ~4 s; the rest is slack for a loaded CI machine
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    said = [x.rstrip("\n") for x in lines if not x.startswith("trials ")]
    assert proc.returncode == status, said
    assert said == [line]
    _assert_all_exit(kids)
