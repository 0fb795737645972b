"""`recall-lab recall` against a running `recall-lab serve`, end to end over real sockets."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

# Not `-m recall_lab.harness.cli`: run as __main__, its CliError would be a different class from the one commands raise.
CLI = [sys.executable, "-c", "from recall_lab.harness.cli import main; main()"]

LEGACY_CONFIG = """
[domains."corp.example"]
role = "organisation"
users = ["alice", "bob", "carol"]
[domains."corp.example".policies]
recall_mode = "legacy"
[domains."mail.example"]
role = "external"
users = ["dave", "erin"]
"""


def _serve(tmp_path, config: str | None = None):
    endpoints = tmp_path / "lab.json"
    args = [*CLI, "serve", "--json", "--endpoints-file", str(endpoints)]
    if config is not None:
        path = tmp_path / "lab.toml"
        path.write_text(config)
        args += ["--config", str(path)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    return proc, endpoints


def _stop(proc) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


@pytest.fixture
def cloud(tmp_path):
    proc, endpoints = _serve(tmp_path)
    try:
        yield endpoints
    finally:
        _stop(proc)


@pytest.fixture
def legacy(tmp_path):
    proc, endpoints = _serve(tmp_path, LEGACY_CONFIG)
    try:
        yield endpoints
    finally:
        _stop(proc)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)


def send(endpoints, *recipients: str) -> str:
    to = [a for r in recipients for a in ("--to", r)]
    proc = run("send", "--endpoints", str(endpoints), "--from", "alice@corp.example", *to,
               "--subject", "Q3 numbers", "--body", "draft")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_recall_prints_the_cloud_report(cloud):
    mid = send(cloud, "bob@corp.example", "dave@mail.example")
    proc = run("recall", "--endpoints", str(cloud), "--user", "alice@corp.example", "--message-id", mid,
               "--wait", "10")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith('Message Recall Report: "Q3 numbers"') and "(cloud)" in lines[0]
    assert any(line.split()[:2] == ["bob@corp.example", "recalled"] for line in lines)
    assert any(line.split()[:2] == ["dave@mail.example", "external"] for line in lines)
    assert "pending" not in proc.stdout


def test_recall_with_replacement_as_json(cloud, tmp_path):
    mid = send(cloud, "bob@corp.example")
    new = tmp_path / "new.eml"
    new.write_bytes(b"From: alice@corp.example\r\nTo: bob@corp.example\r\nSubject: Q3 numbers (final)\r\n\r\n"
                    b"final\r\n")
    proc = run("recall", "--endpoints", str(cloud), "--user", "alice@corp.example", "--message-id", mid,
               "--replace-with", str(new), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["recipients"] == [{"recipient": "bob@corp.example", "status": "recalled",
                                   "detail": "removed from INBOX"}]


def test_legacy_recall_shows_what_is_still_pending(legacy):
    mid = send(legacy, "bob@corp.example", "dave@mail.example")
    proc = run("recall", "--endpoints", str(legacy), "--user", "alice@corp.example", "--message-id", mid,
               "--wait", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert "(legacy)" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "still pending: bob@corp.example"


@pytest.mark.parametrize("args, needle", [
    (["--message-id", "<nope@corp.example>"], "no message <nope@corp.example> in alice@corp.example's Sent"),
    (["--message-id", "not an id"], "not a Message-ID"),
    (["--message-id", "<x@y>", "--password", "wrong"], "IMAP login as alice@corp.example failed"),
    (["--message-id", "<x@y>", "--replace-with", "/nonexistent.eml"], "cannot read replacement"),
])
def test_errors_are_one_line(cloud, args, needle):
    proc = run("recall", "--endpoints", str(cloud), "--user", "alice@corp.example", *args)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("recall-lab: ") and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_endpoints_file_is_one_line(tmp_path):
    proc = run("recall", "--endpoints", str(tmp_path / "none.json"), "--user", "alice@corp.example",
               "--message-id", "<x@y>")
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("recall-lab: cannot read endpoints file")
    assert len(proc.stderr.strip().splitlines()) == 1
