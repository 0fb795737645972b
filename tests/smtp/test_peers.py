"""Real peers against the lab: Debian's swaks and curl submit, send to MX, and read what arrived over IMAP."""

from __future__ import annotations

import asyncio
import shutil
import ssl

import pytest

from recall_lab.harness.lab import Lab
from tests.smtp.smtp_helpers import imap_messages


def _need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} not installed")
    return path


async def _run(*argv: str, stdin: bytes | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE if stdin else None,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(stdin), 60)
    return proc.returncode, out.decode("utf-8", "replace")


def _swaks(ep, *args: str) -> list[str]:
    return [_need("swaks"), "--server", ep.host, "--port", str(ep.port), "--timeout", "20", *args]


@pytest.mark.peer("swaks")
async def test_swaks_submits_with_auth_and_curl_reads_it_from_imap(lab):
    curl = _need("curl")
    code, out = await _run(*_swaks(lab.submission("corp.example"), "--from", "alice@corp.example",
                                   "--to", "dave@mail.example", "--auth", "PLAIN",
                                   "--auth-user", "alice@corp.example", "--auth-password", "alice-password",
                                   "--header", "Subject: via swaks", "--header", "Message-Id: <swaks-1@corp.example>",
                                   "--body", "sent by swaks"))
    assert code == 0, out
    assert "235 2.7.0" in out and "250 2.0.0 Ok: queued as" in out
    await lab.wait_idle()
    imap = lab.imap("mail.example")
    code, out = await _run(curl, "-s", "-u", "dave@mail.example:dave-password",
                           f"imap://{imap.host}:{imap.port}/INBOX;UID=1")
    assert code == 0, out
    assert "Subject: via swaks" in out and "Message-Id: <swaks-1@corp.example>" in out and "sent by swaks" in out


@pytest.mark.peer("swaks")
async def test_swaks_auth_login_and_refusals(lab):
    sub = lab.submission("corp.example")
    code, out = await _run(*_swaks(sub, "--from", "bob@corp.example", "--to", "carol@corp.example",
                                   "--auth", "LOGIN", "--auth-user", "bob@corp.example",
                                   "--auth-password", "bob-password"))
    assert code == 0, out
    code, out = await _run(*_swaks(sub, "--from", "alice@corp.example", "--to", "carol@corp.example"))
    assert code != 0 and "530 5.7.0" in out
    code, out = await _run(*_swaks(sub, "--from", "bob@corp.example", "--to", "carol@corp.example",
                                   "--auth", "PLAIN", "--auth-user", "alice@corp.example",
                                   "--auth-password", "alice-password"))
    assert code != 0 and "553 5.7.1" in out
    assert len(await imap_messages(lab, "carol@corp.example")) == 1


@pytest.mark.peer("swaks")
async def test_swaks_to_mx_delivers_and_relay_is_refused(lab):
    mx = lab.mx("corp.example")
    code, out = await _run(*_swaks(mx, "--from", "dave@mail.example", "--to", "bob@corp.example",
                                   "--header", "Subject: inbound"))
    assert code == 0, out
    code, out = await _run(*_swaks(mx, "--from", "dave@mail.example", "--to", "erin@mail.example"))
    assert code != 0 and "550 5.7.1" in out
    code, out = await _run(*_swaks(mx, "--from", "dave@mail.example", "--to", "nobody@corp.example"))
    assert code != 0 and "550 5.1.1" in out
    [got] = await imap_messages(lab, "bob@corp.example")
    assert b"Subject: inbound" in got


@pytest.mark.peer("curl")
async def test_curl_submits_over_smtp(lab, tmp_path):
    curl = _need("curl")
    eml = tmp_path / "msg.eml"
    eml.write_bytes(b"From: alice@corp.example\r\nTo: bob@corp.example\r\nSubject: via curl\r\n"
                    b"Message-ID: <curl-1@corp.example>\r\n\r\nsent by curl\r\n")
    sub = lab.submission("corp.example")
    code, out = await _run(curl, "-sS", f"smtp://{sub.host}:{sub.port}", "--mail-from", "alice@corp.example",
                           "--mail-rcpt", "bob@corp.example", "-u", "alice@corp.example:alice-password",
                           "-T", str(eml))
    assert code == 0, out
    [got] = await imap_messages(lab, "bob@corp.example")
    assert b"Message-ID: <curl-1@corp.example>" in got and b"sent by curl" in got
    # without credentials curl's MAIL is refused
    code, out = await _run(curl, "-sS", f"smtp://{sub.host}:{sub.port}", "--mail-from", "alice@corp.example",
                           "--mail-rcpt", "bob@corp.example", "-T", str(eml))
    assert code != 0 and "530" in out


@pytest.mark.peer("swaks")
async def test_swaks_starttls_to_mx_and_submission(tmp_path):
    """With a TLS context, both listeners offer STARTTLS: swaks --tls (verifying against the trustme CA)
    delivers inbound mail to MX and submits with AUTH after TLS; the Received headers say ESMTPS/ESMTPSA."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tls = ["--tls", "--tls-verify", "--tls-ca-path", str(ca_file)]
    async with Lab(tls=server_ctx) as lab:
        code, out = await _run(*_swaks(lab.mx("corp.example"), *tls, "--from", "dave@mail.example",
                                       "--to", "bob@corp.example", "--header", "Subject: inbound over tls"))
        assert code == 0, out
        code, out = await _run(*_swaks(lab.submission("corp.example"), *tls, "--from", "alice@corp.example",
                                       "--to", "carol@corp.example", "--auth", "PLAIN",
                                       "--auth-user", "alice@corp.example", "--auth-password", "alice-password"))
        assert code == 0, out
        [inbound] = await imap_messages(lab, "bob@corp.example")
        [submitted] = await imap_messages(lab, "carol@corp.example")
    assert b" with ESMTPS id " in inbound.split(b"\r\n\r\n")[0] and b"Subject: inbound over tls" in inbound
    assert b" with ESMTPSA id " in submitted.split(b"\r\n\r\n")[0]
