"""STARTTLS with a trustme certificate: offered only with an ssl context; LOGINDISABLED until TLS."""

from __future__ import annotations

import asyncio
import imaplib
import ssl

import pytest
import trustme

from recall_lab.fake_servers.imap.server import ImapServer

from .conftest import ALICE, ALICE_PW


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_server(store, accounts, ca):
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    server = ImapServer(store, accounts, ssl_context=server_ctx, login_disabled_without_tls=True)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_starttls_then_login(tls_server, ca):
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    def body():
        c = imaplib.IMAP4(tls_server.host, tls_server.port, timeout=10)
        assert "STARTTLS" in c.capabilities and "LOGINDISABLED" in c.capabilities
        assert "AUTH=PLAIN" not in c.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            c.login(ALICE, ALICE_PW)
        c.starttls(ssl_context=client_ctx)
        assert "LOGINDISABLED" not in c.capabilities and "STARTTLS" not in c.capabilities
        assert "AUTH=PLAIN" in c.capabilities
        assert c.login(ALICE, ALICE_PW)[0] == "OK"
        assert c.select("INBOX")[0] == "OK"
        c.logout()
        return True
    assert await asyncio.to_thread(body)


async def test_no_starttls_without_context(imap):
    def body():
        c = imaplib.IMAP4(imap.host, imap.port, timeout=10)
        assert "STARTTLS" not in c.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="STARTTLS is not available"):
            c._simple_command("STARTTLS")
        c.logout()
        return True
    assert await asyncio.to_thread(body)
