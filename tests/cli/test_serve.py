"""`recall-lab serve` in a subprocess: the JSON line, a clean exit on SIGINT/SIGTERM, a port in use."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys

import pytest

# Not `-m recall_lab.harness.cli`: run as __main__, its CliError would be a different class from the one commands raise.
CLI = [sys.executable, "-c", "from recall_lab.harness.cli import main; main()"]


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _first_line(proc: subprocess.Popen) -> dict:
    line = proc.stdout.readline()  # serve prints the JSON line once every listener accepts
    assert line, proc.stderr.read()
    return json.loads(line)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_json_then_signal_exits_zero(tmp_path, sig):
    endpoints_file = tmp_path / "lab.json"
    proc = _start("--json", "--endpoints-file", str(endpoints_file))
    try:
        data = _first_line(proc)
        assert set(data["domains"]) == {"corp.example", "mail.example"}
        corp = data["domains"]["corp.example"]
        assert corp["role"] == "organisation" and corp["users"]["alice@corp.example"] == "alice-password"
        assert json.loads(endpoints_file.read_text()) == data
        for key in ("imap", "submission", "mx"):
            with socket.create_connection((corp[key]["host"], corp[key]["port"]), timeout=5) as s:
                assert s.recv(100)[:1] in (b"2", b"*")  # SMTP 220 / IMAP * OK greeting
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_serve_port_in_use_is_one_line_exit_2():
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        proc = subprocess.run([*CLI, "serve", "--json", "--port-base", str(port - 2)], capture_output=True,
                              text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "already in use" in lines[0] and "127.0.0.1:" in lines[0]


def test_serve_bad_config_and_store_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[domains.\"x.example\"]\nrole = \"boss\"\n")
    for args in (["--config", str(bad)], ["--store", "tape:/dev/null"], ["--config", str(tmp_path / "none")]):
        proc = subprocess.run([*CLI, "serve", "--json", *args], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def read_table(proc: subprocess.Popen) -> str:
    """What the table mode prints, up to its last line ("Ctrl-C stops the lab.")."""
    seen = ""
    while "Ctrl-C" not in seen:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        seen += line
    return seen


def test_serve_table_without_json():
    proc = _start()
    try:
        seen = read_table(proc)
        assert "corp.example" in seen and "alice@corp.example" in seen and "alice-password" in seen
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_serve_unusable_maildir_is_one_line_exit_2(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("a regular file")
    for target, reason in ((tmp_path / "missing-parent-file" / "x", "Not a directory"), (afile, "Not a directory")):
        if target != afile:
            target.parent.write_text("a file where a directory should be")
        proc = subprocess.run([*CLI, "serve", "--json", "--store", f"maildir:{target}"], capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == ""
        assert proc.stderr == f"recall-lab: cannot use store maildir:{target}: {reason}\n", proc.stderr


def test_serve_policy_refusing_its_settings_is_one_line_exit_2(tmp_path):
    config = tmp_path / "lab.toml"
    config.write_text('[domains."corp.example"]\nrole = "organisation"\nusers = ["alice"]\n'
                      '[domains."corp.example".policies]\ndelayed_send_seconds = "soon"\n')
    proc = subprocess.run([*CLI, "serve", "--json", "--config", str(config)], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "corp.example" in lines[0] and "delayed_send_seconds" in lines[0], lines[0]


def test_serve_on_a_maildir_another_lab_holds_is_one_line_exit_2(tmp_path):
    store = f"maildir:{tmp_path / 'mail'}"
    first = _start("--json", "--store", store)
    try:
        _first_line(first)
        proc = subprocess.run([*CLI, "serve", "--json", "--store", store], capture_output=True, text=True,
                              timeout=30)
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=20)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"recall-lab: cannot use store {store}: ") and "in use" in lines[0], lines[0]
