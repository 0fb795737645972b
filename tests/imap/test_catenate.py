"""CATENATE (RFC 4469): messages built from TEXT parts and URLs of the user's own messages; a foreign or
malformed URL is NO [BADURL ...] and nothing is appended; the assembled size is bounded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap.append import MAX_CAT_PARTS
from recall_lab.fake_servers.imap.catenate import parse_url
from recall_lab.fake_servers.imap.errors import CommandFailed
from recall_lab.fake_servers.store.memory import MemoryStore
from tests.imap.sansio import Client

ALICE, BOB = "alice@corp.example", "bob@corp.example"
USERS = {ALICE: "alice-password", BOB: "bob-password"}
FIRST = b"From: foo@example.com\r\nSubject: one\r\n\r\nHello world body\r\n"
MULTI = (b"From: m@example.com\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\npart one\r\n"
         b"--x\r\nContent-Type: text/plain\r\n\r\npart two\r\n--x--\r\n")


def _lit(data: bytes) -> bytes:
    return b"{%d+}\r\n" % len(data) + data


@pytest.fixture
def env() -> tuple[MemoryStore, Client, int]:
    store = MemoryStore()
    for user in USERS:
        store.ensure_user(user)
    store.append(ALICE, "INBOX", FIRST)
    store.append(ALICE, "INBOX", MULTI)
    store.append(BOB, "INBOX", b"Subject: bob's secret\r\n\r\nsecret\r\n")
    store.create_mailbox(ALICE, "Work")
    c = Client(store, Accounts(USERS), max_literal=4096, name="corp.example")
    c.login(ALICE, USERS[ALICE])
    return store, c, store.mailbox(ALICE, "INBOX").uidvalidity


def _work(store: MemoryStore) -> list[bytes]:
    return [store.fetch_raw(ALICE, "Work", r.uid) for r in store.messages(ALICE, "Work")]


def test_text_and_url_parts_are_joined(env) -> None:
    store, c, uidv = env
    cmd = (b'a APPEND Work (\\Seen) CATENATE (TEXT ' + _lit(b"From: new@example.com\r\n\r\n")
           + b' URL "/INBOX;UIDVALIDITY=%d/;UID=1/;SECTION=TEXT" URL "/INBOX/;UID=2/;SECTION=2"'
           b' URL "/INBOX/;UID=1/;PARTIAL=6.3" URL "/INBOX/;UID=1/;SECTION=HEADER.FIELDS%%20(SUBJECT)")\r\n' % uidv)
    out = c.send(cmd)
    assert out.startswith(b"a OK [APPENDUID "), out
    assert _work(store) == [b"From: new@example.com\r\n\r\nHello world body\r\n"
                              b"part twofooSubject: one\r\n\r\n"]
    assert store.messages(ALICE, "Work")[0].flags == frozenset({"\\Seen"})


def test_whole_message_url_and_absolute_url_of_the_user(env) -> None:
    store, c, _ = env
    out = c.send(b'a APPEND Work CATENATE (URL "/INBOX/;UID=1" '
                 b'URL "imap://alice%40corp.example@corp.example/INBOX/;UID=1/;SECTION=1")\r\n')
    assert out.startswith(b"a OK"), out
    assert _work(store) == [FIRST + b"Hello world body\r\n"]


def test_catenate_with_multiappend_and_a_plain_literal(env) -> None:
    store, c, _ = env
    out = c.send(b'a APPEND Work CATENATE (URL "/INBOX/;UID=1/;SECTION=HEADER" TEXT ' + _lit(b"b1\r\n")
                 + b') (\\Answered) ' + _lit(b"plain\r\n") + b"\r\n")
    assert out.startswith(b"a OK [APPENDUID %d 1:2]" % store.mailbox(ALICE, "Work").uidvalidity), out
    assert _work(store) == [b"From: foo@example.com\r\nSubject: one\r\n\r\nb1\r\n", b"plain\r\n"]


@pytest.mark.parametrize("url", [
    b"/INBOX;UIDVALIDITY=12345/;UID=1/;SECTION=HEADER",  # stale UIDVALIDITY
    b"/INBOX/;UID=99",  # no such message
    b"/Nope/;UID=1",  # no such mailbox
    b"imap://bob%40corp.example@corp.example/INBOX/;UID=1",  # another user's mailbox
    b"imap://alice%40corp.example@evil.example/INBOX/;UID=1",  # another server
    b"imap://corp.example/INBOX/;UID=1",  # anonymous
    b"/INBOX/;UID=1/;URLAUTH=anonymous:internal:0123",  # URLAUTH is not offered
    b"/INBOX/;UID=1/;SECTION=BOGUS",
    b"/INBOX?SUBJECT%20x",
    b"INBOX/;UID=1",
    b"/INBOX/;UID=0",
])
def test_bad_urls_are_badurl_and_nothing_is_appended(env, url: bytes) -> None:
    store, c, _ = env
    out = c.send(b'a APPEND Work CATENATE (TEXT ' + _lit(b"hdr: 1\r\n\r\n") + b' URL "' + url + b'")'
                 + b" " + _lit(b"second message") + b"\r\n")
    assert out.startswith(b"a NO [BADURL "), out
    assert _work(store) == []


def test_nonexistent_target_is_trycreate_before_urls_are_judged(env) -> None:
    _, c, _ = env
    out = c.send(b'a APPEND Nope CATENATE (URL "/INBOX;UIDVALIDITY=12345/;UID=1")\r\n')
    assert out.startswith(b"a NO [TRYCREATE]"), out


def test_urls_cannot_assemble_more_than_the_literal_limit(env) -> None:
    store, c, _ = env
    big = b"Subject: big\r\n\r\n" + b"x" * 3000 + b"\r\n"
    store.append(ALICE, "INBOX", big)
    out = c.send(b'a APPEND Work CATENATE (URL "/INBOX/;UID=3" URL "/INBOX/;UID=3")\r\n')
    assert out.startswith(b"a NO [TOOBIG]"), out
    # nor across the messages of one MULTIAPPEND
    out = c.send(b'b APPEND Work' + b' CATENATE (URL "/INBOX/;UID=3")' * 3 + b"\r\n")
    assert out.startswith(b"b NO [TOOBIG]"), out
    assert _work(store) == []


def test_too_many_parts_and_malformed_parts(env) -> None:
    _, c, _ = env
    out = c.send(b"a APPEND Work CATENATE (" + b" ".join([b'URL "/INBOX/;UID=1"'] * (MAX_CAT_PARTS + 1))
                 + b")\r\n")
    assert out.startswith(b"a NO [LIMIT]"), out
    for bad in (b"CATENATE ()", b"CATENATE (TEXT \"x\")", b"CATENATE (FOO x)", b"CATENATE (URL)", b"CATENATE TEXT"):
        assert c.send(b"b APPEND Work " + bad + b"\r\n").startswith(b"b BAD "), bad


def test_text8_part_with_binary_content_is_stored_as_base64(env) -> None:
    store, c, _ = env
    head = b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    out = c.send(b"a APPEND Work CATENATE (TEXT " + _lit(head) + b" TEXT ~{3+}\r\n\x00\x01\x02)\r\n")
    assert out.startswith(b"a OK"), out
    assert _work(store) == [b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
                              b"\r\nAAEC"]


def test_parse_url_reads_every_part() -> None:
    url = parse_url("imap://alice%40corp.example;AUTH=*@corp.example:143/Sent%20Items;UIDVALIDITY=7/;UID=3"
                    "/;SECTION=1.2.MIME/;PARTIAL=5.10")
    assert (url.user, url.host, url.mailbox, url.uidvalidity, url.uid) == (
        "alice@corp.example", "corp.example:143", "Sent Items", 7, 3)
    assert url.section is not None and url.section.part == (1, 2) and url.section.kind == "MIME"
    assert (url.offset, url.length) == (5, 10)
    assert parse_url("/inbox/;uid=4").mailbox == "INBOX"
    assert parse_url("/Entw&APw-rfe/;UID=1").mailbox == "Entwürfe"
    assert parse_url("/Entw%C3%BCrfe/;UID=1").mailbox == "Entwürfe"


@given(st.text(max_size=120))
def test_parse_url_accepts_or_says_badurl(text: str) -> None:
    try:
        parse_url(text)
    except CommandFailed as exc:
        assert exc.code is not None and exc.code.startswith("BADURL")
        assert "]" not in exc.code and "\r" not in exc.code and "\n" not in exc.code


@given(st.from_regex(r"/[A-Za-z0-9%]{1,10}(;UIDVALIDITY=[0-9]{1,5})?/;UID=[1-9][0-9]{0,5}"
                     r"(/;SECTION=(HEADER|TEXT|1(\.[1-9]){0,3}))?(/;PARTIAL=[0-9]{1,4}(\.[0-9]{1,4})?)?",
                     fullmatch=True))
def test_parse_url_accepts_well_formed_urls(text: str) -> None:
    try:
        url = parse_url(text)
    except CommandFailed as exc:  # only a percent escape that is not UTF-8 may still fail
        assert "%" in text, exc
        return
    assert url.uid >= 1 and url.mailbox
