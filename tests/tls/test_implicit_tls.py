"""Implicit TLS (RFC 8314): IMAPS and submission over TLS from the first byte, next to the STARTTLS ports.

Real clients over real sockets: imaplib.IMAP4_SSL, smtplib.SMTP_SSL, imapclient(ssl=True),
aiosmtplib(use_tls=True) and curl (imaps://, smtps://), each trusting the lab's CA file; a wrong CA fails
verification; a plain-text client on a TLS port is disconnected within the handshake timeout.
"""

from __future__ import annotations

import imaplib
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid

import aiosmtplib
import pytest
from imapclient import IMAPClient

from recall_lab.harness.config import default_config
from recall_lab.harness.lab import PORT_OFFSETS, Lab


def _message(sender: str, to: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Message-ID"] = make_msgid(domain="corp.example")
    msg.set_content("over implicit TLS\n")
    return msg


def test_endpoints_name_the_implicit_tls_ports_and_the_ca(blocking_tls_lab, certs):
    ep = blocking_tls_lab.endpoints()
    assert ep["tls"] == {"cafile": str(certs.cafile)}
    for domain, info in ep["domains"].items():
        assert info["starttls"] is True
        for key in ("imap", "submission", "mx", "imaps", "submissions"):
            assert info[key]["port"] > 0, (domain, key)
        assert info["imaps"]["port"] != info["imap"]["port"]
        assert info["submissions"] == blocking_tls_lab.submissions(domain).as_dict()


async def test_without_tls_no_implicit_ports_and_no_tls_entry():
    async with Lab(default_config(), web=False) as lab:
        ep = lab.endpoints()
        assert "tls" not in ep
        assert all("imaps" not in d and "submissions" not in d for d in ep["domains"].values())
        with pytest.raises(RuntimeError, match="needs TLS"):
            lab.imaps("corp.example")


def test_smtp_ssl_auth_without_starttls_then_imap4_ssl_reads_it(blocking_tls_lab, certs):
    sub = blocking_tls_lab.submissions("corp.example")
    msg = _message("alice@corp.example", "bob@corp.example", "smtp_ssl")
    with smtplib.SMTP_SSL(sub.host, sub.port, local_hostname="localhost", context=certs.client(),
                          timeout=10) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("starttls")  # already encrypted
        assert "PLAIN" in smtp.esmtp_features["auth"]
        smtp.login("alice@corp.example", "alice-password")
        smtp.send_message(msg)
    blocking_tls_lab.wait_idle()
    imaps = blocking_tls_lab.imaps("corp.example")
    with imaplib.IMAP4_SSL(imaps.host, imaps.port, ssl_context=certs.client(), timeout=10) as imap:
        typ, caps = imap.capability()
        assert b"STARTTLS" not in caps[0]
        imap.login("bob@corp.example", "bob-password")
        imap.select("INBOX")
        typ, data = imap.search(None, "SUBJECT", "smtp_ssl")
        assert typ == "OK" and data[0].split(), data
    # the receiving server recorded the encrypted, authenticated submission
    [rec] = [r for r in blocking_tls_lab.store("corp.example").messages("bob@corp.example", "INBOX")]
    raw = blocking_tls_lab.store("corp.example").fetch_raw("bob@corp.example", "INBOX", rec.uid)
    assert b"with ESMTPSA" in raw


def test_imapclient_ssl(blocking_tls_lab, certs):
    imaps = blocking_tls_lab.imaps("mail.example")
    with IMAPClient(imaps.host, imaps.port, ssl=True, ssl_context=certs.client(), timeout=10) as client:
        client.login("dave@mail.example", "dave-password")
        assert client.select_folder("INBOX")[b"EXISTS"] == 0


async def test_aiosmtplib_use_tls(tls_lab, certs):
    sub = tls_lab.submissions("corp.example")
    msg = _message("alice@corp.example", "dave@mail.example", "aiosmtplib")
    await aiosmtplib.send(msg, hostname=sub.host, port=sub.port, use_tls=True, tls_context=certs.client(),
                          username="alice@corp.example", password="alice-password",
                          local_hostname="localhost", timeout=10)
    await tls_lab.wait_idle()
    assert tls_lab.store("mail.example").messages("dave@mail.example", "INBOX")


@pytest.mark.parametrize("scheme", ["imaps", "smtps"])
def test_wrong_ca_fails_verification(blocking_tls_lab, certs, scheme):
    wrong = ssl.create_default_context(cafile=str(certs.wrong_cafile))
    if scheme == "imaps":
        ep = blocking_tls_lab.imaps("corp.example")
        with pytest.raises(ssl.SSLCertVerificationError):
            imaplib.IMAP4_SSL(ep.host, ep.port, ssl_context=wrong, timeout=10)
    else:
        ep = blocking_tls_lab.submissions("corp.example")
        with pytest.raises(ssl.SSLCertVerificationError):
            smtplib.SMTP_SSL(ep.host, ep.port, local_hostname="localhost", context=wrong, timeout=10)


@pytest.mark.parametrize("which", ["imaps", "submissions"])
def test_plain_text_client_on_a_tls_port_is_disconnected_not_hung(blocking_tls_lab, which):
    """A client that waits for a greeting never sends a ClientHello: the handshake timeout (0.5 s in this lab)
    closes it. The socket's own timeout (10 s) is far above that, so a hang fails the test."""
    ep = getattr(blocking_tls_lab, which)("corp.example")
    started = time.monotonic()
    with socket.create_connection((ep.host, ep.port), timeout=10) as sock:
        assert sock.recv(1024) == b""  # closed, no greeting in plain text
    assert time.monotonic() - started < 5


def test_plain_text_command_on_imaps_gets_a_closed_connection(blocking_tls_lab):
    ep = blocking_tls_lab.imaps("corp.example")
    with socket.create_connection((ep.host, ep.port), timeout=10) as sock:
        sock.sendall(b"a1 CAPABILITY\r\n")
        try:
            data = sock.recv(1024)
        except ConnectionResetError:
            data = b""
        assert not data.startswith(b"* ")  # never an IMAP answer in plain text


def test_port_base_puts_the_implicit_tls_ports_at_offsets_3_and_4(certs):
    from recall_lab.harness.lab import BlockingLab

    with socket.socket() as probe:  # a free block of ports: bind 0, take a base well away from it
        probe.bind(("127.0.0.1", 0))
        base = 20000 + probe.getsockname()[1] % 20000
    with BlockingLab(default_config(), tls=certs.server, web=False, port_base=base) as lab:
        for i, domain in enumerate(lab.domains):
            assert lab.imaps(domain).port == base + 10 * i + PORT_OFFSETS["imaps"] == base + 10 * i + 3
            assert lab.submissions(domain).port == base + 10 * i + PORT_OFFSETS["submissions"] == base + 10 * i + 4


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_imaps_and_smtps(blocking_tls_lab, certs, tmp_path):
    mail = tmp_path / "mail.txt"
    mail.write_bytes(_message("alice@corp.example", "bob@corp.example", "via curl").as_bytes(policy=SMTP))
    sub = blocking_tls_lab.submissions("corp.example")
    sent = subprocess.run(
        ["curl", "-sS", "--cacert", str(certs.cafile), f"smtps://localhost:{sub.port}",
         "--user", "alice@corp.example:alice-password", "--mail-from", "alice@corp.example",
         "--mail-rcpt", "bob@corp.example", "--upload-file", str(mail)],
        capture_output=True, text=True, timeout=30)
    assert sent.returncode == 0, sent.stderr
    blocking_tls_lab.wait_idle()
    imaps = blocking_tls_lab.imaps("corp.example")
    listed = subprocess.run(
        ["curl", "-sS", "--cacert", str(certs.cafile), f"imaps://localhost:{imaps.port}/INBOX",
         "--user", "bob@corp.example:bob-password", "-X", "SEARCH SUBJECT \"via curl\""],
        capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("* SEARCH 1"), listed.stdout
    wrong = subprocess.run(
        ["curl", "-sS", "--cacert", str(certs.wrong_cafile), f"imaps://localhost:{imaps.port}/INBOX",
         "--user", "bob@corp.example:bob-password"], capture_output=True, text=True, timeout=30)
    assert wrong.returncode == 60, (wrong.returncode, wrong.stderr)  # CURLE_PEER_FAILED_VERIFICATION
