"""`recall-lab serve --tls auto`: a local CA and certificate made at start, the CA file named in the endpoints
JSON, trusted in one step by a client; the directory is removed at exit unless the user named it."""

from __future__ import annotations

import imaplib
import json
import smtplib
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.cli.test_recall_cli import CLI, _stop, run

pytest.importorskip("trustme")


def _serve(*args: str) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([*CLI, "serve", "--json", "--no-web", "--tls", "auto", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        _stop(proc)
        raise AssertionError(proc.stderr.read())
    return proc, json.loads(line)


def test_tls_auto_in_a_named_directory_is_trusted_in_one_step(tmp_path):
    tls_dir = tmp_path / "tls"
    endpoints_file = tmp_path / "lab.json"
    proc, endpoints = _serve("--tls-dir", str(tls_dir), "--endpoints-file", str(endpoints_file))
    try:
        cafile = Path(endpoints["tls"]["cafile"])
        assert cafile == (tls_dir / "ca.pem").resolve() and cafile.is_file()
        context = ssl.create_default_context(cafile=str(cafile))
        corp = endpoints["domains"]["corp.example"]
        sub = corp["submissions"]
        with smtplib.SMTP_SSL("localhost", sub["port"], local_hostname="localhost", context=context,
                              timeout=10) as smtp:
            smtp.login("alice@corp.example", "alice-password")
        imaps = corp["imaps"]
        # the certificate names the lab's domains too, so a client may verify against the domain name
        context.check_hostname = True
        with imaplib.IMAP4_SSL(imaps["host"], imaps["port"], ssl_context=context, timeout=10) as imap:
            assert imap.login("bob@corp.example", "bob-password")[0] == "OK"
        # the same CA file serves the STARTTLS ports (recall-lab send upgrades by itself)
        sent = run("send", "--endpoints", str(endpoints_file), "--cafile", str(cafile), "--from",
                   "alice@corp.example", "--to", "bob@corp.example", "--subject", "tls auto", "--body", "hi")
        assert sent.returncode == 0, sent.stderr
    finally:
        _stop(proc)
    assert cafile.is_file()  # a named directory stays


def test_tls_auto_default_directory_is_removed_at_exit():
    proc, endpoints = _serve()
    cafile = Path(endpoints["tls"]["cafile"])
    try:
        assert cafile.is_file()
    finally:
        _stop(proc)
    assert not cafile.parent.exists()


@pytest.mark.parametrize(("args", "says"), [
    (["--tls", "manual"], "--tls manual: the only mode is auto"),
    (["--tls-dir", "/tmp/x"], "--tls-dir needs --tls auto"),
    (["--tls", "auto", "--tls-cert", "/tmp/cert.pem"], "--tls auto and --tls-cert exclude each other"),
])
def test_tls_flag_errors_are_one_line_exit_2(args, says):
    done = run("serve", "--no-web", *args)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert says in line, line
