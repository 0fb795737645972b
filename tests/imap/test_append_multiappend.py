"""APPEND and MULTIAPPEND (RFC 3502): several messages in one command, all or none, one APPENDUID set; the
bounds a client cannot pass; literal8 messages (RFC 3516) stored with their binary parts as base64."""

from __future__ import annotations

import re

import pytest

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap.append import MAX_MESSAGES
from recall_lab.fake_servers.imap.capabilities import capabilities
from recall_lab.fake_servers.store.base import StoreError
from recall_lab.fake_servers.store.memory import MemoryStore
from tests.imap.conftest import ALICE, ALICE_PW, make_message
from tests.imap.rawclient import Raw
from tests.imap.sansio import Client


def _client(store: MemoryStore, **config) -> Client:
    c = Client(store, Accounts({ALICE: ALICE_PW}), **config)
    c.login()
    return c


def _lit(data: bytes) -> bytes:
    return b"{%d+}\r\n" % len(data) + data


def _uids(store: MemoryStore, mailbox: str = "INBOX") -> list[int]:
    return [r.uid for r in store.messages(ALICE, mailbox)]


@pytest.fixture
def mem() -> MemoryStore:
    store = MemoryStore()
    store.ensure_user(ALICE)
    return store


def test_multiappend_appends_every_message_with_its_own_flags_and_date(mem: MemoryStore) -> None:
    c = _client(mem)
    cmd = (b'a APPEND INBOX (\\Seen) "05-Nov-2026 10:00:00 +0100" ' + _lit(make_message(1))
           + b" (\\Flagged $Work) " + _lit(make_message(2)) + b" " + _lit(make_message(3)) + b"\r\n")
    out = c.send(cmd)
    info = mem.mailbox(ALICE, "INBOX")
    assert out == f"a OK [APPENDUID {info.uidvalidity} 1:3] Append completed.\r\n".encode()
    recs = mem.messages(ALICE, "INBOX")
    assert [sorted(r.flags) for r in recs] == [["\\Seen"], ["$Work", "\\Flagged"], []]
    assert recs[0].internaldate.utcoffset() is not None and recs[0].internaldate.day == 5
    assert [mem.fetch_raw(ALICE, "INBOX", r.uid) for r in recs] == [make_message(n) for n in (1, 2, 3)]


def test_multiappend_with_synchronising_literals_asks_for_each(mem: MemoryStore) -> None:
    c = _client(mem)
    assert c.send(b"a APPEND INBOX {3}\r\n") == b"+ Ready for literal data\r\n"
    assert c.send(b"abc {3}\r\n") == b"+ Ready for literal data\r\n"
    assert c.send(b"def\r\n").startswith(b"a OK [APPENDUID ")
    assert [mem.fetch_raw(ALICE, "INBOX", u) for u in _uids(mem)] == [b"abc", b"def"]


def test_a_refused_message_means_none_is_appended(mem: MemoryStore) -> None:
    c = _client(mem)
    deep = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(120))
    out = c.send(b"a APPEND INBOX " + _lit(make_message(1)) + b" " + _lit(deep) + b"\r\n")
    assert out.startswith(b"a NO [LIMIT]"), out
    assert _uids(mem) == []


def test_a_store_failure_part_way_takes_back_what_was_appended() -> None:
    class Failing(MemoryStore):
        calls = 0

        def append(self, *args, **kw):  # type: ignore[override]
            self.calls += 1
            if self.calls == 3:
                raise StoreError("disk full")
            return super().append(*args, **kw)

    store = Failing()
    store.ensure_user(ALICE)
    c = _client(store)
    out = c.send(b"a APPEND INBOX " + b" ".join(_lit(make_message(n)) for n in range(4)) + b"\r\n")
    assert out.startswith(b"a NO disk full"), out
    assert _uids(store) == []
    assert store.calls == 3


def test_nonexistent_mailbox_is_trycreate(mem: MemoryStore) -> None:
    c = _client(mem)
    assert c.send(b"a APPEND Nope " + _lit(b"x") + b" " + _lit(b"y") + b"\r\n").startswith(b"a NO [TRYCREATE]")


def test_too_many_messages_is_refused_whole(mem: MemoryStore) -> None:
    c = _client(mem)
    out = c.send(b"a APPEND INBOX" + b" {1+}\r\nx" * (MAX_MESSAGES + 1) + b"\r\n")
    assert out.startswith(b"a NO [LIMIT]"), out
    assert _uids(mem) == []


@pytest.mark.parametrize("cmd", [
    b"a APPEND INBOX",
    b"a APPEND INBOX {1+}\r\nx ",
    b"a APPEND INBOX {1+}\r\nx (\\Seen)",
    b"a APPEND INBOX {1+}\r\nxy",
    b"a APPEND INBOX NOTCATENATE (TEXT {1+}\r\nx)",
    b"a APPEND INBOX ~x",
    b"a APPEND INBOX (\\Bogus) {1+}\r\nx",
    b'a APPEND INBOX "99-Foo-2026 10:00:00 +0100" {1+}\r\nx',
])
def test_malformed_append_is_bad_and_appends_nothing(mem: MemoryStore, cmd: bytes) -> None:
    c = _client(mem)
    out = c.send(cmd + b"\r\n")
    assert out.startswith(b"a BAD "), out
    assert _uids(mem) == []


def test_literal8_binary_part_is_stored_as_base64_and_given_back_by_binary(mem: MemoryStore) -> None:
    c = _client(mem)
    body = b"\x00-\xe4\n\r\n\n"
    msg = (b"From: user@domain.org\r\nMime-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
           b"Content-Transfer-Encoding: binary\r\n\r\n" + body)
    assert c.send(b"a APPEND INBOX ~{%d+}\r\n" % len(msg) + msg + b"\r\n").startswith(b"a OK [APPENDUID")
    stored = mem.fetch_raw(ALICE, "INBOX", 1)
    assert b"\x00" not in stored and b"Content-Transfer-Encoding: base64\r\n" in stored
    c.send("s SELECT INBOX")
    out = c.send("f FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])")
    assert out.startswith(b"* 1 FETCH (BINARY.SIZE[1] 7 BINARY[1] ~{7}\r\n" + body + b")\r\n"), out


def test_plain_literal_is_stored_as_sent(mem: MemoryStore) -> None:
    c = _client(mem)
    msg = b"Content-Transfer-Encoding: binary\r\n\r\nabc\xff\r\n"
    c.send(b"a APPEND INBOX " + _lit(msg) + b"\r\n")
    assert mem.fetch_raw(ALICE, "INBOX", 1) == msg


def test_capabilities_announce_multiappend_catenate_binary() -> None:
    caps = capabilities(True, False, False, False)
    assert {"MULTIAPPEND", "CATENATE", "BINARY"} <= set(caps)


async def test_multiappend_over_a_socket_reaches_an_idling_session(imap) -> None:
    watcher = await Raw.connect(imap.host, imap.port)
    writer = await Raw.connect(imap.host, imap.port)
    try:
        for raw in (watcher, writer):
            assert (await raw.command(b"l", f"LOGIN {ALICE} {ALICE_PW}".encode()))[-1].startswith(b"l OK")
        await watcher.command(b"s", b"SELECT INBOX")
        await watcher.send(b"i IDLE\r\n")
        assert (await watcher.line()).startswith(b"+ ")
        one, two = make_message(1), make_message(2)
        await writer.send(b"a APPEND INBOX {%d}\r\n" % len(one))
        assert (await writer.line()).startswith(b"+ ")
        await writer.send(one + b" {%d}\r\n" % len(two))
        assert (await writer.line()).startswith(b"+ ")
        await writer.send(two + b"\r\n")
        tagged = (await writer.until_tagged(b"a"))[-1]
        assert re.match(rb"a OK \[APPENDUID \d+ 1:2\] ", tagged), tagged
        seen = [await watcher.line()]
        while b"* 2 EXISTS" not in seen[-1]:
            seen.append(await watcher.line())
        await watcher.send(b"DONE\r\n")
        assert (await watcher.until_tagged(b"i"))[-1].startswith(b"i OK")
    finally:
        await watcher.close()
        await writer.close()
