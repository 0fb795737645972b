"""Every listener's accepted sockets have TCP_NODELAY: pushes and replies leave at once.

Why it matters: without TCP_NODELAY, Nagle's algorithm holds a small write (an IDLE push) while earlier bytes
on that connection wait for the peer's delayed ACK, so a client sees the push about 40 ms late. asyncio sets
the option only on sockets it knows to be TCP, so a listener that binds its own socket must make sure of it.
The check reads the option on the server's side of each accepted connection, for IMAP, MX and submission,
in plain text and after STARTTLS.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Iterable

import pytest
import trustme

from recall_lab.harness.config import default_config
from recall_lab.harness.lab import Lab


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_lab(ca: trustme.CA) -> AsyncIterator[Lab]:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    async with Lab(default_config(), tls=server_ctx) as lab:
        yield lab


def _client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def _nodelay(transports: Iterable[asyncio.BaseTransport | None], client: asyncio.StreamWriter) -> int:
    """TCP_NODELAY of the server-side socket whose peer is this client."""
    me = client.get_extra_info("sockname")
    for transport in transports:
        if transport is not None and transport.get_extra_info("peername") == me:
            sock = transport.get_extra_info("socket")
            return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    raise AssertionError(f"the server has no connection from {me}")


async def _read_until(reader: asyncio.StreamReader, prefix: bytes) -> bytes:
    while True:
        line = await asyncio.wait_for(reader.readline(), 10)
        assert line, f"connection closed before {prefix!r}"
        if line.startswith(prefix):
            return line


def _imap_transports(lab: Lab, domain: str) -> list[asyncio.BaseTransport | None]:
    return [c.transport for c in lab.server(domain).imap_server._connections]


def _smtp_transports(listener) -> list[asyncio.BaseTransport | None]:  # noqa: ANN001 - a SmtpListener
    return [s.transport for s in listener._sessions]


async def test_imap_accepted_sockets_have_nodelay_before_and_after_starttls(tls_lab: Lab, ca: trustme.CA) -> None:
    domain = tls_lab.domains[0]
    host, port = tls_lab.imap(domain)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        await _read_until(reader, b"* OK")
        assert _nodelay(_imap_transports(tls_lab, domain), writer)
        writer.write(b"a STARTTLS\r\n")
        await _read_until(reader, b"a OK")
        await writer.start_tls(_client_ctx(ca))
        writer.write(b"b NOOP\r\n")
        await _read_until(reader, b"b OK")
        assert _nodelay(_imap_transports(tls_lab, domain), writer)
    finally:
        writer.close()


@pytest.mark.parametrize("kind", ["mx", "submission"])
async def test_smtp_accepted_sockets_have_nodelay_before_and_after_starttls(tls_lab: Lab, ca: trustme.CA,
                                                                             kind: str) -> None:
    domain = tls_lab.domains[0]
    server = tls_lab.server(domain)
    listener = server.mx_listener if kind == "mx" else server.submission_listener
    host, port = tls_lab.mx(domain) if kind == "mx" else tls_lab.submission(domain)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        await _read_until(reader, b"220 ")
        assert _nodelay(_smtp_transports(listener), writer)
        writer.write(b"EHLO client.example\r\n")
        await _read_until(reader, b"250 ")
        writer.write(b"STARTTLS\r\n")
        await _read_until(reader, b"220 ")
        await writer.start_tls(_client_ctx(ca))
        writer.write(b"EHLO client.example\r\n")
        await _read_until(reader, b"250 ")
        assert _nodelay(_smtp_transports(listener), writer)
    finally:
        writer.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_imap_server_alone_sets_nodelay_for_literal_and_named_hosts(store, accounts, host: str) -> None:
    from recall_lab.fake_servers.imap.server import ImapServer

    if host == "localhost":
        try:
            socket.getaddrinfo(host, None)
        except socket.gaierror:
            pytest.skip("this machine cannot resolve localhost (no /etc/hosts): no named host to listen on")
    async with ImapServer(store, accounts, host=host) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            await _read_until(reader, b"* OK")
            assert _nodelay([c.transport for c in server._connections], writer)
        finally:
            writer.close()
