"""recall_lab.harness.dovecot: the throwaway reference Dovecot other tests and the benchmarks rely on."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

import recall_lab.harness.dovecot as dovecot_module
from recall_lab.harness.dovecot import DovecotServer, dovecot_binary, reachable_temp_dir

from .mail_helpers import flags_by_subject, seed
from .servers import ImapEndpoint

pytestmark = pytest.mark.skipif(dovecot_binary() is None, reason="dovecot not installed")


def greeting(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        return sock.recv(4096)


def test_start_greets_and_stop_ends_every_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    busy = socket.socket()  # the first port it picks is taken: it must try another
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    ports = iter([busy.getsockname()[1]])
    real = dovecot_module.free_port
    monkeypatch.setattr(dovecot_module, "free_port", lambda host: next(ports, None) or real(host))
    server = DovecotServer(tmp_path, {"Alice@Corp.Example": "alice-password"})
    with server as dv, busy:
        assert dv.port != busy.getsockname()[1]
        assert greeting(dv.port).startswith(b"* OK")
        master = dv._proc.pid  # noqa: SLF001 - the test checks the process really ends
        run_dir = dv._run_dir  # noqa: SLF001
        ep = ImapEndpoint("dovecot", dv.host, dv.port, "alice@corp.example", "alice-password")
        seed(ep, [("hello", "body", ())])
        assert set(flags_by_subject(ep)) == {"hello"}
        for n in range(2):  # accounts added while it runs work at once
            dv.add_user(f"user{n}@corp.example", f"pw{n}")
            other = ImapEndpoint("dovecot", dv.host, dv.port, f"user{n}@corp.example", f"pw{n}")
            seed(other, [(f"m{n}", "x", ())])
            assert set(flags_by_subject(other)) == {f"m{n}"}
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.kill(master, 0)
    assert not run_dir.exists()
    with pytest.raises(ConnectionRefusedError):
        greeting(ep.port)
    server.stop()  # idempotent


def test_serves_an_existing_maildir_tree(tmp_path: Path) -> None:
    with reachable_temp_dir() as mail:
        inbox = mail / "alice@corp.example"
        for sub in ("cur", "new", "tmp"):
            (inbox / sub).mkdir(parents=True)
        (inbox / "new" / "1700000000.1.lab").write_bytes(b"Subject: written before\r\n\r\nhi\r\n")
        (inbox / "cur" / "1700000001.2.lab:2,S").write_bytes(b"Subject: already read\r\n\r\nhi\r\n")
        with DovecotServer(tmp_path, {"alice@corp.example": "pw"}, mail_root=mail) as dv:
            assert dv.mail_root == mail.resolve()
            ep = ImapEndpoint("dovecot", dv.host, dv.port, "alice@corp.example", "pw")
            assert flags_by_subject(ep) == {"written before": set(), "already read": {"\\Seen"}}
        assert (inbox / "dovecot-uidlist").exists()  # the mail stays where it was, now indexed


def test_bad_accounts_are_refused(tmp_path: Path) -> None:
    for user, password in [("a:b@x", "pw"), ("../etc@x", "pw"), ("a@x", "pw\n")]:
        with pytest.raises(ValueError):
            DovecotServer(tmp_path, {user: password})
