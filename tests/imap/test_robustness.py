"""Bad input over real sockets: malformed commands, over-long lines and literals, vanishing clients, timeouts,
and a clean stop(). Each connection must go on (or end) exactly as the issue says, with no traceback."""

from __future__ import annotations

import asyncio
import logging

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap.server import ImapServer
from recall_lab.fake_servers.transcript import TranscriptRecorder

from .conftest import ALICE, ALICE_PW, USERS
from .rawclient import Raw


async def _login(imap) -> Raw:
    raw = await Raw.connect(imap.host, imap.port)
    lines = await raw.command(b"a", f"LOGIN {ALICE} {ALICE_PW}".encode())
    assert lines[-1].startswith(b"a OK")
    return raw


async def test_malformed_commands_get_bad_and_the_connection_goes_on(imap):
    raw = await _login(imap)
    try:
        assert (await raw.command(b"t1", b"FROBNICATE"))[-1].startswith(b"t1 BAD Unknown command")
        await raw.send(b"(((\r\n")
        assert (await raw.line()).startswith(b"* BAD")
        assert (await raw.command(b"t2", b'SELECT "unterminated'))[-1].startswith(b"t2 BAD")
        assert (await raw.command(b"t3", b"SELECT INBOX"))[-1].startswith(b"t3 OK")
        assert (await raw.command(b"t4", b"FETCH 1:* (FLAGS"))[-1].startswith(b"t4 BAD")
        assert (await raw.command(b"t5", b"FETCH x FLAGS"))[-1].startswith(b"t5 BAD")
        assert (await raw.command(b"t6", b"STORE 1 +FLAGS (\\Bogus)"))[-1].startswith(b"t6 BAD")
        assert (await raw.command(b"t7", b"SEARCH BEFORE 99-Foo-2026"))[-1].startswith(b"t7 BAD")
        assert (await raw.command(b"t8", b"NOOP"))[-1] == b"t8 OK NOOP completed.\r\n"
    finally:
        await raw.close()


async def test_over_long_line_is_refused_and_the_session_goes_on(imap):
    raw = await _login(imap)
    try:
        await raw.send(b"big SEARCH TEXT " + b"x" * 100_000 + b"\r\n")
        line = await raw.line()
        assert line.startswith(b"big BAD [TOOBIG]"), line
        assert (await raw.command(b"n", b"NOOP"))[-1].startswith(b"n OK")
    finally:
        await raw.close()


async def test_over_size_literals_are_refused(store, accounts):
    server = ImapServer(store, accounts, max_literal=1000)
    await server.start()
    raw = await Raw.connect(server.host, server.port)
    try:
        await raw.command(b"a", f"LOGIN {ALICE} {ALICE_PW}".encode())
        # synchronising: refused instead of "+", nothing more is sent
        await raw.send(b"s1 APPEND INBOX {5000}\r\n")
        line = await raw.line()
        assert line.startswith(b"s1 NO") or line.startswith(b"s1 BAD"), line
        assert b"TOOBIG" in line
        # LITERAL+: the octets arrive anyway and are skipped as they stream
        await raw.send(b"s2 APPEND INBOX {200000+}\r\n")
        for _ in range(20):
            await raw.send(b"y" * 10_000)
        await raw.send(b"\r\n")
        line = await raw.line()
        assert line.startswith(b"s2 BAD [TOOBIG]"), line
        assert (await raw.command(b"s3", b"APPEND INBOX {3+}\r\nabc"))[-1].startswith(b"s3 OK [APPENDUID")
    finally:
        await raw.close()
        await server.stop()
    assert len(store.messages(ALICE, "INBOX")) == 1


async def test_client_vanishing_mid_literal_or_idle_leaves_one_log_line(imap, caplog):
    caplog.set_level(logging.INFO, logger="recall_lab.fake_servers.imap")
    raw = await _login(imap)
    await raw.send(b"x APPEND INBOX {1000+}\r\nhalf of it")
    await raw.close()
    raw2 = await _login(imap)
    await raw2.command(b"s", b"SELECT INBOX")
    await raw2.send(b"i IDLE\r\n")
    assert (await raw2.line()).startswith(b"+")
    await raw2.close()
    # wait on the event loop until both connections are gone (bounded by wait_for)
    async def gone():
        while imap.server.connections:
            await asyncio.sleep(0)
    await asyncio.wait_for(gone(), 5)
    messages = [r.getMessage() for r in caplog.records if r.name == "recall_lab.fake_servers.imap"]
    assert any("middle of a literal" in m for m in messages), messages
    assert any("while idling" in m for m in messages), messages
    assert not any(r.exc_info for r in caplog.records)
    assert imap.store.messages(ALICE, "INBOX") == []


async def test_unauthenticated_connections_time_out(store, accounts):
    server = ImapServer(store, accounts, login_timeout=0.2)
    await server.start()
    try:
        raw = await Raw.connect(server.host, server.port)
        line = await raw.line(timeout=5)
        assert line.startswith(b"* BYE"), line
        assert await raw.line(timeout=5) == b""
        await raw.close()
    finally:
        await server.stop()


async def test_stop_says_bye_to_every_session(store, accounts):
    server = ImapServer(store, accounts)
    await server.start()
    raws = [await Raw.connect(server.host, server.port) for _ in range(3)]
    await raws[0].command(b"a", f"LOGIN {ALICE} {ALICE_PW}".encode())
    await server.stop()
    for raw in raws:
        assert (await raw.line()).startswith(b"* BYE")
        assert await raw.line() == b""
        await raw.close()
    assert server.connections == 0


async def test_port_in_use_raises_oserror(imap):
    import errno

    other = ImapServer(imap.store, Accounts(USERS), port=imap.port)
    try:
        await other.start()
    except OSError as exc:
        assert exc.errno == errno.EADDRINUSE
    else:
        await other.stop()
        raise AssertionError("a second server bound the same port")


async def test_transcripts_record_both_directions_with_password_masked(store, accounts):
    rec = TranscriptRecorder()
    server = ImapServer(store, accounts, transcripts=rec)
    await server.start()
    try:
        raw = await Raw.connect(server.host, server.port)
        await raw.command(b"a", f"LOGIN {ALICE} {ALICE_PW}".encode())
        await raw.command(b"b", b"SELECT INBOX")
        await raw.command(b"x", b"APPEND INBOX {500+}\r\n" + b"y" * 500)
        await raw.command(b"c", b"LOGOUT")
        await raw.close()
    finally:
        await server.stop()
    text = rec.text()
    assert "imap#1 S: * OK [CAPABILITY" in text
    assert f"imap#1 C: a LOGIN {ALICE} ********" in text
    assert ALICE_PW not in text
    assert "imap#1 S: b OK [READ-WRITE] Select completed." in text
    assert "imap#1 C: x APPEND INBOX {500+}" in text and "imap#1 C: <500 octets>" in text
