"""BINARY (RFC 3516): FETCH BINARY[part] decodes base64 and quoted-printable as Dovecot does, BINARY.SIZE
counts the decoded octets, a NUL makes a literal8, PEEK and SIZE leave \\Seen alone, and what cannot be decoded
or parsed gets a clear NO or BAD."""

from __future__ import annotations

import base64
import binascii
import quopri

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap.binary import decode_base64, decode_qp
from recall_lab.fake_servers.imap.errors import ParseError
from recall_lab.fake_servers.imap.fetch_items import parse_item
from recall_lab.fake_servers.store.memory import MemoryStore
from tests.imap.conftest import ALICE, ALICE_PW
from tests.imap.sansio import Client

QP_BODY = (b"hello  \r\nbar=\r\n\r\nfoo\t=\r\nbar\r\nfoo\t \t= \r\n=62\r\nfoo = \t\r\nbar\r\nfoo =\r\n=62\r\n"
           b"foo  \r\nbar=\r\n\r\nfoo_bar\r\n")
QP_DECODED = b"hello\r\nbar\r\nfoo\tbar\r\nfoo\t \tb\r\nfoo bar\r\nfoo b\r\nfoo\r\nbar\r\nfoo_bar\r\n"

MESSAGE = (b"From: user@domain.org\r\nMime-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
           b"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           b"  aGVs    \r\n bG8g  \r\n   d29y  \t \r\n    bGQ= \r\n"
           b"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + QP_BODY +
           b"\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           b"AGFiYwBk\r\n"
           b"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n"
           b"--b\r\nContent-Type: text/plain\r\n\r\nplain =41\r\n"
           b"--b--\r\n")


def test_qp_is_decoded_as_dovecot_decodes_it() -> None:
    assert decode_qp(QP_BODY) == QP_DECODED
    assert len(QP_DECODED) == 65  # imaptest fetch-binary-mime-qp: binary.size[1] 65


def test_base64_skips_blanks_and_line_breaks() -> None:
    assert decode_base64(b"  aGVs    \r\n bG8g  \r\n   d29y  \t \r\n    bGQ= \r\n") == b"hello world"
    assert decode_base64(b"aGVsbG8gdG8gZXZlcnlvbmUh") == b"hello to everyone!"
    assert decode_base64(b"!!!") == b""


@given(st.binary(max_size=500))
def test_base64_round_trip(data: bytes) -> None:
    assert decode_base64(base64.encodebytes(data).replace(b"\n", b"\r\n")) == data


@given(st.binary(max_size=300).filter(lambda d: b"\r" not in d and b"\n" not in d))
def test_qp_round_trip_of_one_line(data: bytes) -> None:
    assert decode_qp(quopri.encodestring(data)) == data


@given(st.binary(max_size=300))
def test_qp_never_grows_and_never_raises(data: bytes) -> None:
    decoded = decode_qp(data)
    assert len(decoded) <= len(data) + data.count(b"\n")  # only LF -> CRLF can add octets


@given(st.text(max_size=40))
def test_fetch_items_parse_or_bad(section: str) -> None:
    for name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE"):
        try:
            item = parse_item(f"{name}[{section}]")
        except ParseError:
            continue
        assert item.section is not None and item.section.kind is None
        assert item.name in ("BINARY[]", "BINARY.SIZE[]")


@pytest.mark.parametrize("text", ["BINARY[HEADER]", "BINARY[1.MIME]", "BINARY[1.TEXT]", "BINARY.SIZE[1]<0.5>",
                                  "BINARY[0]", "BINARY[1]<5>", "BINARY.PEEK[a]"])
def test_bad_binary_items(text: str) -> None:
    with pytest.raises(ParseError):
        parse_item(text)


@pytest.fixture
def client() -> Client:
    store = MemoryStore()
    store.ensure_user(ALICE)
    store.append(ALICE, "INBOX", MESSAGE)
    c = Client(store, Accounts({ALICE: ALICE_PW}))
    c.login()
    assert b"s OK" in c.send("s SELECT INBOX")
    return c


def test_binary_decodes_each_encoding(client: Client) -> None:
    out = client.send("f FETCH 1 (BINARY.PEEK[1] BINARY.PEEK[2] BINARY.PEEK[3] BINARY.PEEK[5])")
    assert out == (b"* 1 FETCH (BINARY[1] {11}\r\nhello world BINARY[2] {65}\r\n" + QP_DECODED
                   + b" BINARY[3] ~{6}\r\n\x00abc\x00d BINARY[5] {9}\r\nplain =41)\r\nf OK Fetch completed.\r\n")


def test_binary_size_and_partial(client: Client) -> None:
    out = client.send("f FETCH 1 (BINARY.SIZE[1] BINARY.SIZE[2] BINARY.SIZE[3] BINARY.PEEK[2]<10.10>)")
    assert out == (b"* 1 FETCH (BINARY.SIZE[1] 11 BINARY.SIZE[2] 65 BINARY.SIZE[3] 6 "
                   b"BINARY[2]<10> {10}\r\n\r\nfoo\tbar\r)\r\nf OK Fetch completed.\r\n")


def test_whole_message_is_decoded_part_by_part_and_missing_part_is_empty(client: Client) -> None:
    out = client.send("f FETCH 1 (BINARY.PEEK[9])")
    assert out == b"* 1 FETCH (BINARY[9] {0}\r\n)\r\nf OK Fetch completed.\r\n"
    # the whole message holds an x-uuencode part: NO, as Dovecot answers
    assert client.send("g FETCH 1 (BINARY.PEEK[])").startswith(b"g NO [UNKNOWN-CTE]")
    store = MemoryStore()
    store.ensure_user(ALICE)
    store.append(ALICE, "INBOX", b"Subject: x\r\nContent-Transfer-Encoding: Base64 (c)\r\n\r\naGk=\r\n")
    c = Client(store, Accounts({ALICE: ALICE_PW}))
    c.login()
    c.send("s SELECT INBOX")
    out = c.send("f FETCH 1 (BINARY.SIZE[] BINARY.PEEK[] BINARY.PEEK[1])")
    whole = b"Subject: x\r\nContent-Transfer-Encoding: binary\r\n\r\nhi"
    assert out == (b"* 1 FETCH (BINARY.SIZE[] %d BINARY[] {%d}\r\n%b BINARY[1] {2}\r\nhi)\r\n"
                   b"f OK Fetch completed.\r\n" % (len(whole), len(whole), whole))


def test_unknown_encoding_is_no_unknown_cte(client: Client) -> None:
    out = client.send("f FETCH 1 (BINARY.PEEK[4])")
    assert out.startswith(b"f NO [UNKNOWN-CTE]"), out
    assert client.send("g FETCH 1 BINARY.SIZE[4]").startswith(b"g NO [UNKNOWN-CTE]")


def test_binary_sets_seen_peek_and_size_do_not(client: Client) -> None:
    assert b"FLAGS" not in client.send("f FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1])")
    assert b"\\Seen" not in client.send("g FETCH 1 FLAGS")
    out = client.send("h FETCH 1 BINARY[1]")
    assert b"FLAGS (\\Seen" in out and b"BINARY[1] {11}\r\nhello world" in out


def test_binary_section_rules_are_bad(client: Client) -> None:
    assert client.send("f FETCH 1 BINARY[HEADER]").startswith(b"f BAD ")
    assert client.send("f FETCH 1 BINARY.SIZE[1]<0.1>").startswith(b"f BAD ")


def test_binascii_errors_are_not_raised_by_bad_base64(client: Client) -> None:
    bad = b"Content-Transfer-Encoding: base64\r\n\r\n=====A\r\n"
    assert decode_base64(bad.split(b"\r\n\r\n")[1]) == b""
    with pytest.raises(binascii.Error):  # what the decoder must be shielding us from
        binascii.a2b_base64(b"A", strict_mode=True)
