"""`recall-lab send` against a running `recall-lab serve`, end to end over real sockets."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import imapclient
import pytest

# Not `-m recall_lab.harness.cli`: run as __main__, its CliError would be a different class from the one commands raise.
CLI = [sys.executable, "-c", "from recall_lab.harness.cli import main; main()"]


@pytest.fixture
def served(tmp_path):
    endpoints = tmp_path / "lab.json"
    proc = subprocess.Popen([*CLI, "serve", "--json", "--endpoints-file", str(endpoints)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        yield endpoints, json.loads(line)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _send(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "send", *args], capture_output=True, text=True, timeout=60)


def _wait_for_message(ep: dict, user: str, password: str, message_id: str, deadline_s: float = 10.0) -> bytes:
    """Poll over IMAP with NOOP-free reconnects; the relay delivers within milliseconds."""
    with imapclient.IMAPClient(ep["host"], ep["port"], ssl=False, timeout=10) as client:
        client.login(user, password)
        client.select_folder("INBOX", readonly=True)
        end = time.monotonic() + deadline_s
        while True:
            uids = client.search(["HEADER", "Message-ID", message_id])
            if uids or time.monotonic() > end:
                break
            client.idle()
            client.idle_check(timeout=1)
            client.idle_done()
        assert uids, f"{message_id} never reached {user}"
        return client.fetch(uids, ["BODY.PEEK[]"])[uids[0]][b"BODY[]"]


def test_send_end_to_end(served, tmp_path):
    endpoints, data = served
    body = tmp_path / "body.txt"
    body.write_text("Quarterly numbers attached.\n")
    proc = _send("--endpoints", str(endpoints), "--from", "alice@corp.example", "--to", "dave@mail.example",
                 "--cc", "bob@corp.example", "--bcc", "erin@mail.example", "--subject", "Q3",
                 "--body-file", str(body))
    assert proc.returncode == 0, proc.stderr
    message_id = proc.stdout.strip()
    assert message_id.startswith("<") and message_id.endswith("@corp.example>")
    mail = data["domains"]["mail.example"]
    for user in ("dave@mail.example", "erin@mail.example"):
        raw = _wait_for_message(mail["imap"], user, mail["users"][user], message_id)
        assert b"Subject: Q3" in raw and b"Quarterly numbers" in raw and b"Bcc" not in raw


@pytest.mark.parametrize("args, needle", [
    (["--from", "alice@corp.example", "--to", "ghost@corp.example", "--subject", "s", "--body", "b"], "5.1.1"),
    (["--from", "zed@corp.example", "--to", "bob@corp.example", "--subject", "s", "--body", "b"], "not a user"),
    (["--from", "alice@corp.example", "--to", "bob@corp.example", "--subject", "s"], "--body"),
    (["--from", "alice@corp.example", "--to", "bob@corp.example", "--subject", "s", "--body", "b",
      "--password", "wrong"], "535"),
])
def test_send_errors_are_one_line(served, args, needle):
    endpoints, _ = served
    proc = _send("--endpoints", str(endpoints), *args)
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_send_without_endpoints_file(tmp_path):
    proc = _send("--endpoints", str(tmp_path / "missing.json"), "--from", "alice@corp.example", "--to",
                 "bob@corp.example", "--subject", "s", "--body", "b")
    assert proc.returncode == 2 and "cannot read endpoints file" in proc.stderr


@pytest.mark.parametrize("option, value", [
    ("--subject", "a\nBcc: x@y.example"),
    ("--subject", "a\rb"),
    ("--to", "bob@corp.example\r\nBcc: x@y.example"),
    ("--cc", "carol@corp.example\nX: y"),
])
def test_send_refuses_line_breaks_in_header_values(tmp_path, option, value):
    args = {"--subject": "s", "--to": "bob@corp.example"}
    args[option] = value
    flat = [item for pair in args.items() for item in pair]
    proc = _send("--endpoints", str(tmp_path / "unused.json"), "--from", "alice@corp.example", *flat,
                 "--body", "b")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"recall-lab: {option} may not contain a line break\n", proc.stderr


def test_send_usage_error_hint_names_the_subcommand(capsys):
    from recall_lab.harness.cli import main

    with pytest.raises(SystemExit) as info:
        main(["send", "--endpoints", "x.json", "--from", "alice@corp.example", "--subject", "s", "--to"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "'--to'" in err and "(see 'recall-lab send --help')" in err, err


def test_send_reports_each_refused_recipient_and_fails(served):
    endpoints, data = served
    proc = _send("--endpoints", str(endpoints), "--from", "alice@corp.example", "--to", "bob@corp.example",
                 "--to", "nobody@corp.example", "--cc", "ghost@corp.example", "--subject", "partial", "--body", "b")
    assert proc.returncode == 1, proc.stderr
    message_id = proc.stdout.strip()
    assert message_id.startswith("<"), "the Message-ID of what was accepted"
    lines = proc.stderr.splitlines()
    assert len(lines) == 2, proc.stderr
    assert lines[0].startswith("recall-lab: refused nobody@corp.example: 550 5.1.1"), lines
    assert lines[1].startswith("recall-lab: refused ghost@corp.example: 550 5.1.1"), lines
    corp = data["domains"]["corp.example"]
    raw = _wait_for_message(corp["imap"], "bob@corp.example", corp["users"]["bob@corp.example"], message_id)
    assert b"Subject: partial" in raw


def test_send_names_a_missing_ca_file(tmp_path):
    endpoints = tmp_path / "lab.json"
    endpoints.write_text(json.dumps({"domains": {"corp.example": {
        "submission": {"host": "127.0.0.1", "port": 9}, "users": {"alice@corp.example": "alice-password"}}}}))
    proc = _send("--endpoints", str(endpoints), "--from", "alice@corp.example", "--to", "bob@corp.example",
                 "--subject", "s", "--body", "b", "--starttls", "--cafile", str(tmp_path / "missing.pem"))
    assert proc.returncode == 2
    assert proc.stderr == f"recall-lab: cannot read CA file {tmp_path / 'missing.pem'}: No such file or directory\n"
