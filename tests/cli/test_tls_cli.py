"""`serve --tls-cert/--tls-key`: every port offers STARTTLS, and `send` / `recall` upgrade before AUTH.

End to end in subprocesses with a trustme CA written to files, as a user with their own certificate would run it.
"""

from __future__ import annotations

import json

import pytest

from tests.cli.test_recall_cli import CLI, _stop, run

trustme = pytest.importorskip("trustme")


@pytest.fixture
def tls_files(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    return paths


@pytest.fixture
def tls_lab(tmp_path, tls_files):
    import subprocess

    endpoints = tmp_path / "lab.json"
    proc = subprocess.Popen([*CLI, "serve", "--json", "--endpoints-file", str(endpoints), "--tls-cert",
                             str(tls_files["cert"]), "--tls-key", str(tls_files["key"])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    try:
        yield endpoints, json.loads(line)
    finally:
        _stop(proc)


def test_send_and_recall_upgrade_with_starttls(tls_lab, tls_files):
    endpoints, announced = tls_lab
    assert all(d["starttls"] for d in announced["domains"].values())
    ca = str(tls_files["ca"])
    sent = run("send", "--endpoints", str(endpoints), "--from", "alice@corp.example", "--to", "bob@corp.example",
               "--subject", "over tls", "--body", "secret", "--cafile", ca)
    assert sent.returncode == 0, sent.stderr
    mid = sent.stdout.strip()
    done = run("recall", "--endpoints", str(endpoints), "--user", "alice@corp.example", "--message-id", mid,
               "--wait", "10", "--json", "--cafile", ca)
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)["recipients"]
    assert (row["recipient"], row["status"]) == ("bob@corp.example", "recalled")


def test_recall_without_the_ca_fails_in_one_line(tls_lab):
    endpoints, _ = tls_lab
    done = run("recall", "--endpoints", str(endpoints), "--user", "alice@corp.example",
               "--message-id", "<x@corp.example>")
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("recall-lab: ") and "certificate verify failed" in line, line


@pytest.mark.parametrize(("args", "says"), [
    (["--tls-cert", "/nonexistent/cert.pem"], "cannot read /nonexistent/cert.pem"),
    (["--tls-key", "/tmp/key.pem"], "--tls-key needs --tls-cert"),
])
def test_serve_tls_file_errors_are_one_line(args, says):
    done = run("serve", *args)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert says in line, line
