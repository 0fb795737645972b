"""End-to-end fixtures: the `recall-lab` command as a user runs it, in subprocesses, over real sockets.

Why subprocesses and not CliRunner: a user meets the product as a program. Its exit status, what reaches
stderr, how it dies on a signal, and whether another program can reach its sockets are only visible from
outside the process. Readiness is never guessed: `serve --json` prints its endpoints as one line once every
listener accepts, and the fixture reads that line (with a deadline) before a test goes on.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import imapclient
import pytest

#: How long a `serve` may take to print its endpoints line (it takes ~0.3 s here).
READY_TIMEOUT = 20.0
#: How long a CLI command may run before the test fails (nothing here should take more than a few seconds).
CLI_TIMEOUT = 60.0


def cli_command() -> list[str]:
    """The installed console script, as a user runs it; else the same entry point through this Python.

    The script next to this interpreter comes first: it is the one installed for it, and it skips the
    shell wrapper (pyenv shims) that a PATH lookup may find, which costs ~0.2 s per run.
    """
    beside = Path(sys.executable).with_name("recall-lab")
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    script = shutil.which("recall-lab")
    if script:
        return [script]
    return [sys.executable, "-c", "import sys; from recall_lab.harness.cli import main; sys.argv[0] = 'recall-lab'; main()"]


def cli_env() -> dict[str, str]:
    """A plain, wide, colourless terminal: narration lines are not wrapped or decorated."""
    env = dict(os.environ)
    env.update({"NO_COLOR": "1", "COLUMNS": "200", "TERM": "dumb", "PYTHONUNBUFFERED": "1"})
    env.pop("FORCE_COLOR", None)
    return env


def run_cli(*args: str, timeout: float = CLI_TIMEOUT, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli_command(), *args], capture_output=True, text=True, timeout=timeout,
                          env=cli_env(), cwd=cwd, stdin=subprocess.DEVNULL)


def assert_one_line_error(result: subprocess.CompletedProcess[str], needle: str = "") -> str:
    """An expected failure: non-zero exit, nothing on stdout, exactly one line on stderr, no traceback."""
    err = result.stderr
    assert result.returncode != 0, f"exit 0 for an error; stdout={result.stdout!r}"
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, f"stderr is {len(lines)} lines, not one:\n{err}"
    assert lines[0].startswith("recall-lab: "), lines[0]
    assert needle.lower() in lines[0].lower(), f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def _reader(stream, lines: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        lines.put(line)
    lines.put(None)


def first_line(proc: subprocess.Popen[str], timeout: float = READY_TIMEOUT) -> str | None:
    """The first line `proc` prints on stdout; None if it exits first; AssertionError (after killing it) if
    it prints nothing within `timeout` (a hang, not a slow start: `serve` is ready in well under a second)."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"{proc.args} printed nothing in {timeout} s; stderr: {err}") from None


@dataclass
class Served:
    """A running `recall-lab serve` subprocess and what it printed."""

    proc: subprocess.Popen[str]
    endpoints: dict
    endpoints_file: Path
    _stderr: list[str] = field(default_factory=list)

    def domain(self, name: str) -> dict:
        return self.endpoints["domains"][name]

    def imap(self, user: str) -> imapclient.IMAPClient:
        """A logged-in imapclient for `user` (the password from the endpoints JSON)."""
        info = self.domain(user.split("@", 1)[1])
        client = imapclient.IMAPClient(info["imap"]["host"], info["imap"]["port"], ssl=False, timeout=10)
        client.login(user, info["users"][user])
        return client

    def imap_port(self, domain: str) -> int:
        return self.domain(domain)["imap"]["port"]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> tuple[int, str]:
        """Signal the server, wait for it; return (exit status, stderr). Idempotent."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"serve did not exit within {timeout} s of signal {sig}") from None
        if err:
            self._stderr.append(err)
        return self.proc.returncode, "".join(self._stderr)


def start_serve(tmp_path: Path, *extra: str, name: str = "lab") -> Served:
    """Start `recall-lab serve --json --endpoints-file` and return once its endpoints line is out."""
    endpoints_file = tmp_path / f"{name}.json"
    proc = subprocess.Popen([*cli_command(), "serve", "--json", "--endpoints-file", str(endpoints_file), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True, env=cli_env())
    first = first_line(proc)
    if first is None:
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"serve exited {proc.returncode} before printing endpoints: {err}")
    return Served(proc, json.loads(first), endpoints_file)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """`serve(*args)` starts a lab; every lab started is stopped after the test, and must exit 0 quietly."""
    started: list[Served] = []

    def start(*extra: str, name: str = "lab") -> Served:
        served = start_serve(tmp_path, *extra, name=f"{name}{len(started)}")
        started.append(served)
        return served

    yield start
    problems = []
    for served in started:
        code, err = served.stop()
        if code != 0 or "Traceback" in err:
            problems.append(f"serve exited {code}: {err}")
    assert not problems, problems


@pytest.fixture
def lab(serve) -> Served:
    """The default lab, memory store, ephemeral ports."""
    return serve()


def message_ids(client: imapclient.IMAPClient, folder: str = "INBOX") -> dict[str, int]:
    """Message-ID -> UID of every message in `folder` (read-only, PEEK: nothing is marked read)."""
    client.select_folder(folder, readonly=True)
    uids = client.search("ALL")
    if not uids:
        return {}
    out = {}
    for uid, data in client.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]).items():
        raw = data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode()
        out[raw.split(":", 1)[1].strip()] = uid
    return out


def fetch_all(client: imapclient.IMAPClient, folder: str = "INBOX") -> list[bytes]:
    client.select_folder(folder, readonly=True)
    uids = client.search("ALL")
    if not uids:
        return []
    return [d[b"BODY[]"] for _, d in sorted(client.fetch(uids, ["BODY.PEEK[]"]).items())]
