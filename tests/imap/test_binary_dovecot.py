"""BINARY against the reference: the same messages APPENDed to a private Dovecot and to our server, then the
same BINARY.PEEK[part] FETCHes (whole and partial); the decoded octets must be the same, and an encoding
neither can undo the same NO [UNKNOWN-CTE].

What is not compared, and why: Dovecot 2.3.19's BINARY.SIZE disagrees with its own BINARY (SIZE[1] 8 for an
11-octet part) and it picks `~{n}` or `{n}` whatever the octets (ours: sizes are the decoded length, `~{n}`
exactly when a NUL is in them: tests/imap/test_binary.py); BINARY[] of a whole message (both decode every part
and relabel it binary, but Dovecot moves the relabelled field to the end of its header); and invalid encodings
(Dovecot: NO [PARSE], and it drops the connection on unpadded base64; ours decodes what it can)."""

from __future__ import annotations

import re

import pytest

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap.mime.view import MessageView
from recall_lab.fake_servers.store.memory import MemoryStore
from recall_lab.harness.dovecot import DovecotServer, DovecotUnavailable
from tests.imap.mime_samples import SAMPLES
from tests.imap.sansio import Client
from tests.imap.test_message_view_dovecot import ImapClient, _paths

pytestmark = pytest.mark.peer("dovecot")

_HEAD = b"From: a@example.com\r\nMime-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=z\r\n\r\n"


def _part(cte: str, body: bytes, ctype: str = "text/plain") -> bytes:
    return (b"--z\r\nContent-Type: %s\r\nContent-Transfer-Encoding: %s\r\n\r\n" % (ctype.encode(), cte.encode())
            + body + b"\r\n")


EDGES = {
    "qp-edges": _HEAD + _part("quoted-printable", b"a=\r\nb =3D=00 = \r\nc\t \r\n=3D=\r\n\r\n=C3=A9\r\nend")
    + _part("Quoted-Printable", b"x=\r\n  \r\ntrail  \t") + b"--z--\r\n",
    "base64-edges": _HEAD + _part("base64", b" aGVs\r\n  bG8g\t\r\nd29y bGQ=\r\n") + _part("BASE64", b"aGVsbG8=")
    + _part("base64", b"") + _part("base64", b"AA==\r\n", "application/octet-stream") + b"--z--\r\n",
    "unknown-cte": _HEAD + _part("x-uuencode", b"begin 644 x\r\nend") + b"--z--\r\n",
    "declared-on-containers": (b"Content-Type: multipart/mixed; boundary=z\r\nContent-Transfer-Encoding: base64\r\n"
                               b"\r\n" + _part("base64", b"aGk=") + _part("base64", b"Subject: x\r\n\r\nhi",
                                                                          "message/rfc822") + b"--z--\r\n"),
    "single-part-qp": b"Subject: qp\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 =\r\nok\r\n",
}


def _fetches(raw: bytes) -> list[bytes]:
    items = []
    for path in _paths(MessageView(raw).tree) or [(1,)]:  # a single-part message: its body is part 1
        label = ".".join(map(str, path)).encode()
        items += [b"BINARY.PEEK[%s]" % label, b"BINARY.PEEK[%s]<2.5>" % label]
    return items


def _answer(status: bytes, untagged: list[bytes]) -> tuple[bytes, ...]:
    fetched = tuple(re.sub(rb"^\* \d+ FETCH \((UID \d+ )?", b"", u).replace(b" ~{", b" {", 1)
                    for u in untagged if re.match(rb"\* \d+ FETCH", u))
    if b" OK " in status:
        return fetched
    code = re.search(rb"\[([A-Z-]+)", status)
    return (status.split(b" ")[1], code.group(1) if code else b"")


@pytest.fixture(scope="module")
def corpus() -> dict[str, bytes]:
    messages = {name: re.sub(rb"(?<!\r)\n", b"\r\n", raw) for name, raw in SAMPLES.items()}
    messages.update(EDGES)
    return messages


@pytest.fixture(scope="module")
def dovecot_answers(tmp_path_factory, corpus):
    dovecot = DovecotServer(tmp_path_factory.mktemp("dovecot-binary"), {"bin": "binpw"})
    try:
        dovecot.start()
    except DovecotUnavailable:
        pytest.skip("dovecot not installed")
    answers: dict[tuple[str, bytes], tuple[bytes, ...]] = {}
    try:
        c = ImapClient(dovecot.port)
        assert b"OK" in c.command(b"LOGIN bin binpw")[0]
        for raw in corpus.values():
            assert b" OK" in c.command(b"APPEND INBOX", raw)[0]
        c.command(b"SELECT INBOX")
        for seq, (name, raw) in enumerate(corpus.items(), 1):
            for item in _fetches(raw):
                answers[name, item] = _answer(*c.command(b"FETCH %d (%s)" % (seq, item)))
        c.close()
    finally:
        dovecot.stop()
    return answers


@pytest.fixture(scope="module")
def our_answers(corpus):
    store = MemoryStore()
    store.ensure_user("bin@corp.example")
    for raw in corpus.values():
        store.append("bin@corp.example", "INBOX", raw)
    client = Client(store, Accounts({"bin@corp.example": "binpw"}))
    client.login("bin@corp.example", "binpw")
    client.send("s SELECT INBOX")
    answers: dict[tuple[str, bytes], tuple[bytes, ...]] = {}
    for seq, (name, raw) in enumerate(corpus.items(), 1):
        for item in _fetches(raw):
            out = client.send(b"f FETCH %d (%s)" % (seq, item))
            tagged = out.rsplit(b"\r\n", 2)[-2]
            lines = [out[:len(out) - len(tagged) - 2]] if len(out) > len(tagged) + 2 else []
            answers[name, item] = _answer(tagged.replace(b"f ", b"T ", 1), lines)
    return answers


@pytest.mark.parametrize("name", [*SAMPLES, *EDGES])
def test_binary_answers_match_dovecot(dovecot_answers, our_answers, name: str) -> None:
    keys = [k for k in dovecot_answers if k[0] == name]
    assert keys
    differ = [(k[1], dovecot_answers[k], our_answers[k]) for k in keys if dovecot_answers[k] != our_answers[k]]
    assert differ == []
