"""What one SMTP client can make a session spend beyond DATA: the event loop under pipelining, the AUTH
exchange's lines, and the log (STARTTLS).

Why: aiosmtpd runs every command a client pipelined in one burst (up to one 256 KiB network read, ~40,000 NOOPs)
without giving the event loop back, so every other client of the lab (IMAP included) waited for the burst; and an
AUTH response line longer than the line limit raised out of aiosmtpd's `readline` (a traceback in the log, a 451,
then the rest of the line read as commands, one reply too many); STARTTLS inside TLS was answered 220 and a
second handshake layered on the first, and every failed handshake logged a traceback. Over real sockets against
a DomainServer.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trustme

from recall_lab.fake_servers.domain import DomainServer, DomainSpec
from recall_lab.fake_servers.store.memory import MemoryStore
from tests.loop_lag import lag_while, quiet_heap  # noqa: F401 (a fixture)

from .test_guard_smtp import USERS, Conn, domain


@pytest.mark.usefixtures("quiet_heap")
async def test_pipelined_commands_do_not_hold_the_event_loop() -> None:
    async with domain() as server:
        conn = await Conn.open(server.mx)
        await conn.cmd("EHLO burst.example")
        count = 150_000

        async def burst() -> None:
            conn.writer.write(b"NOOP\r\n" * count)
            replies = bytearray()
            # read every reply as it comes, so the server never waits for this client; in blocks, so the
            # reading (in this same event loop) does not hold the loop itself
            while replies.count(b"\r\n") < count:
                chunk = await asyncio.wait_for(conn.reader.read(1 << 16), 30)
                assert chunk, "closed"
                replies += chunk
            assert replies.count(b"250 ") == count

        worst = await lag_while(asyncio.create_task(burst()))
        conn.writer.close()
    assert worst < 0.1, f"a pipelined burst held the event loop for {worst * 1000:.0f} ms"


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_an_overlong_auth_response_gets_one_reply(mechanism: str, caplog: pytest.LogCaptureFixture) -> None:
    async with domain(auth_failure_delay=5.0) as server:
        conn = await Conn.open(server.submission)
        await conn.cmd("EHLO long.example")
        assert (await conn.cmd(f"AUTH {mechanism}")).startswith("334")
        with caplog.at_level(logging.INFO):
            start = time.perf_counter()
            answer = await conn.cmd(base64.b64encode(b"\0bob@corp.example\0" + b"x" * 300_000).decode())
            assert answer.startswith("500 5.5.6"), answer
            assert time.perf_counter() - start < 2.0, "no password was tested: no failure delay"
            assert (await conn.cmd("NOOP")).startswith("250"), "one reply per line: the dialogue is in step"
        conn.writer.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text


@pytest.mark.parametrize("response", ["*", "not base64!"])
async def test_an_aborted_or_garbled_auth_response_gets_one_reply_at_once(response: str) -> None:
    async with domain(auth_failure_delay=5.0) as server:
        conn = await Conn.open(server.submission)
        await conn.cmd("EHLO abort.example")
        assert (await conn.cmd("AUTH PLAIN")).startswith("334")
        start = time.perf_counter()
        answer = await conn.cmd(response)
        assert answer.startswith("501"), answer
        assert (await conn.cmd("NOOP")).startswith("250"), "a second reply (535) to the one AUTH"
        assert time.perf_counter() - start < 2.0, "no password was tested: no failure delay"
        conn.writer.close()


@asynccontextmanager
async def tls_domain() -> AsyncIterator[tuple[DomainServer, ssl.SSLContext]]:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    server = DomainServer(DomainSpec("corp.example", "organisation", USERS), MemoryStore(), imap=False,
                          tls_context=server_ctx)
    await server.open()
    await server.run()
    try:
        yield server, client_ctx
    finally:
        await server.stop()


async def test_starttls_inside_tls_is_refused_and_a_failed_handshake_is_one_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        async with tls_domain() as (server, client_ctx):
            conn = await Conn.open(server.mx)
            await conn.cmd("EHLO tls.example")
            assert (await conn.cmd("STARTTLS")).startswith("220")
            await conn.writer.start_tls(client_ctx, server_hostname="127.0.0.1")
            assert "STARTTLS" not in await conn.cmd("EHLO tls.example")
            assert (await conn.cmd("STARTTLS")).startswith("503 5.5.1"), "TLS inside TLS"
            assert (await conn.cmd("NOOP")).startswith("250"), "the session goes on in TLS"
            conn.writer.close()

            for _ in range(3):  # a client that sends garbage instead of a ClientHello
                garbage = await Conn.open(server.mx)
                await garbage.cmd("EHLO junk.example")
                assert (await garbage.cmd("STARTTLS")).startswith("220")
                garbage.writer.write(b"\x16\x03\x01\x00\x05" + b"\x00" * 64)
                assert await garbage.closed()
                garbage.writer.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info], caplog.text
