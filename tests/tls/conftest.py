"""Fixtures for the implicit-TLS tests: a trustme CA, a lab serving with its certificate, client contexts."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from recall_lab.harness.config import default_config
from recall_lab.harness.lab import BlockingLab, Lab

trustme = pytest.importorskip("trustme")


class Certs:
    def __init__(self, tmp: Path) -> None:
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("127.0.0.1", "localhost", "corp.example", "mail.example")
        self.server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self.server)
        self.cafile = tmp / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.cafile))
        other = trustme.CA()  # a CA the lab's certificate is not signed by
        self.wrong_cafile = tmp / "wrong-ca.pem"
        other.cert_pem.write_to_path(str(self.wrong_cafile))

    def client(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cafile))


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs(tmp_path)


@pytest.fixture
async def tls_lab(certs: Certs) -> AsyncIterator[Lab]:
    async with Lab(default_config(), tls=certs.server, tls_cafile=certs.cafile, web=False,
                   tls_handshake_timeout=0.5) as lab:
        yield lab


@pytest.fixture
def blocking_tls_lab(certs: Certs) -> Iterator[BlockingLab]:
    """For the synchronous clients (imaplib, smtplib, imapclient, curl): the lab runs in a thread of its own."""
    with BlockingLab(default_config(), tls=certs.server, tls_cafile=certs.cafile, web=False,
                     tls_handshake_timeout=0.5) as lab:
        yield lab
