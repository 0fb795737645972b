"""MessageView against the reference: Dovecot's ENVELOPE, BODYSTRUCTURE, BODY and BODY[section] answers.

Each corpus message is APPENDed to a private Dovecot; for every message we FETCH the same items from
Dovecot and from MessageView and compare them parsed (so quoting style does not matter, content does).
LF-only messages: Dovecot reports sizes and sections as if the lines ended in CRLF; we serve stored
bytes, so for those the comparison uses the message with CRLF line ends (same structure).
"""

from __future__ import annotations

import random
import re
import socket

import pytest

from recall_lab.fake_servers.imap.mime.tree import Part
from recall_lab.fake_servers.imap.mime.view import MessageView
from recall_lab.harness.dovecot import DovecotServer, DovecotUnavailable
from tests.imap.mime_samples import SAMPLES

pytestmark = pytest.mark.peer("dovecot")

# --- a minimal IMAP response reader and parser ----------------------------------------------------

_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")


class ImapClient:
    """Just enough IMAP to APPEND and FETCH and get raw responses back (literals included)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.file.readline()
        self.n = 0

    def command(self, line: bytes, literal: bytes | None = None) -> tuple[bytes, list[bytes]]:
        """-> (tagged status line, untagged responses with literals inlined)."""
        self.n += 1
        tag = b"T%d" % self.n
        if literal is None:
            self.sock.sendall(tag + b" " + line + b"\r\n")
        else:
            self.sock.sendall(tag + b" " + line + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
        untagged: list[bytes] = []
        cur = b""
        while True:
            chunk = self.file.readline()
            if not chunk:
                raise ConnectionError("server closed the connection")
            cur += chunk
            m = _LITERAL.search(chunk)
            if m:
                cur += self.file.read(int(m.group(1)))
                continue
            if cur.startswith(tag + b" "):
                return cur, untagged
            untagged.append(cur)
            cur = b""

    def close(self) -> None:
        try:
            self.command(b"LOGOUT")
        finally:
            self.file.close()
            self.sock.close()


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.d = data
        self.i = 0

    def value(self):  # noqa: ANN201 - nested IMAP data
        d = self.d
        while d[self.i:self.i + 1] == b" ":
            self.i += 1
        c = d[self.i:self.i + 1]
        if c == b"(":
            self.i += 1
            out = []
            while True:
                while d[self.i:self.i + 1] == b" ":
                    self.i += 1
                if d[self.i:self.i + 1] == b")":
                    self.i += 1
                    return out
                out.append(self.value())
        if c == b'"':
            self.i += 1
            buf = bytearray()
            while True:
                ch = d[self.i]
                self.i += 1
                if ch == 0x5C:
                    buf.append(d[self.i])
                    self.i += 1
                elif ch == 0x22:
                    return bytes(buf)
                else:
                    buf.append(ch)
        if c == b"{":
            end = d.index(b"}", self.i)
            n = int(d[self.i + 1:end].rstrip(b"+"))
            start = end + 3
            self.i = start + n
            return d[start:start + n]
        start = self.i
        depth = 0
        while self.i < len(d):
            ch = d[self.i:self.i + 1]
            if ch == b"[":
                depth += 1
            elif ch == b"]":
                depth -= 1
            elif depth == 0 and ch in b" ()\r\n":
                break
            self.i += 1
        atom = d[start:self.i]
        if atom == b"NIL":
            return None
        if atom.isdigit():
            return int(atom)
        return ("ATOM", atom)


def parse_fetch(response: bytes) -> dict[bytes, object]:
    """`* n FETCH (NAME value ...)` -> {NAME: value} with strings as bytes."""
    m = re.match(rb"\* \d+ FETCH ", response)
    assert m, response
    items = _Reader(response[m.end():]).value()
    out: dict[bytes, object] = {}
    for k in range(0, len(items), 2):
        out[items[k][1].upper()] = items[k + 1]
    return out


def norm(value):  # noqa: ANN001, ANN201 - nested IMAP data
    """Our value model in the reader's shape: strings as UTF-8 bytes."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (list, tuple)):
        return [norm(v) for v in value]
    return value


# --- what to compare ------------------------------------------------------------------------------


def _paths(part: Part, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Every section path of the tree (RFC 3501 numbering), message parts included."""
    out: list[tuple[int, ...]] = []
    if part.kind == "message" and part.children:
        inner = part.children[0]
        if inner.kind == "multipart":
            for i, c in enumerate(inner.children, 1):
                out.append(prefix + (i,))
                out += _paths(c, prefix + (i,))
        else:
            out.append(prefix + (1,))
            out += _paths(inner, prefix + (1,)) if inner.kind == "message" else []
    elif part.kind == "multipart":
        for i, c in enumerate(part.children, 1):
            out.append(prefix + (i,))
            out += _paths(c, prefix + (i,))
    return out


def section_specs(raw: bytes) -> list[tuple[tuple[int, ...], str | None, tuple[str, ...]]]:
    tree = MessageView(raw).tree
    paths: list[tuple[int, ...]] = []
    if tree.kind == "multipart":
        paths = _paths(tree)
    elif tree.kind == "message":
        paths = [(1,)] + _paths(tree.children[0], (1,)) if tree.children else [(1,)]
    else:
        paths = [(1,)]
    specs: list[tuple[tuple[int, ...], str | None, tuple[str, ...]]] = [
        ((), None, ()), ((), "HEADER", ()), ((), "TEXT", ()),
        ((), "HEADER.FIELDS", ("FROM", "SUBJECT", "X-FOLDED", "CONTENT-TYPE")),
        ((), "HEADER.FIELDS.NOT", ("FROM", "SUBJECT")),
        ((), "HEADER.FIELDS", ("X-NOT-THERE",)),
    ]
    for p in paths[:20]:
        specs.append((p, None, ()))
        specs.append((p, "MIME", ()))
        specs.append((p, "HEADER", ()))
        specs.append((p, "TEXT", ()))
        specs.append((p, "HEADER.FIELDS", ("SUBJECT", "CONTENT-TYPE")))
        specs.append((p, "HEADER.FIELDS.NOT", ("SUBJECT",)))
    for p in [(9,), (1, 9), (1, 1), (1, 1, 1), (2, 1)]:
        if p not in paths:
            specs.append((p, None, ()))
            specs.append((p, "MIME", ()))
    return specs


def section_label(path: tuple[int, ...], kind: str | None, fields: tuple[str, ...]) -> str:
    parts = [".".join(str(n) for n in path)] if path else []
    if kind:
        parts.append(kind + (" (" + " ".join(fields) + ")" if fields else ""))
    return ".".join(parts)


# --- more input: messages spliced at random (fixed seed) from the corpus's lines ---------------------

_SPLICE_EXTRA = [
    b"To: a, b c <d@e>, \"x\" y <z@w>\r\n", b"Cc: g: a@b, c@d;, e@f\r\n", b"From: <>\r\n", b"From: a@\r\n",
    b"To: @\r\n", b"To: a@b.c (comment (nested)) \r\n", b"Reply-To: \"unterminated\r\n",
    b"Content-Type: text/plain; charset=\"a\\\"b\"\r\n", b"Content-Disposition: attachment; filename=a;;\r\n",
    b"Content-Type: multipart/mixed; boundary=a; boundary=b\r\n", b"--a\r\n", b"--b--\r\n", b"--a--\r\n",
    b"Content-Type: multipart/alternative; boundary=b\r\n", b"\r\n", b"\r\n",
]


def spliced_messages(seed: int = 7, count: int = 120) -> list[bytes]:
    """Messages made of random runs of the corpus's lines: odd structures no one would write by hand."""
    rng = random.Random(seed)
    lines = [line for raw in SAMPLES.values() for line in re.split(rb"(?<=\n)", raw) if line]
    pool = lines + _SPLICE_EXTRA * 3
    return [b"".join(rng.choice(pool) for _ in range(rng.randint(1, 40))) for _ in range(count)]


SPLICED = spliced_messages()


# --- fixture: the corpus loaded into Dovecot ---------------------------------------------------------


@pytest.fixture(scope="module")
def dovecot_answers(tmp_path_factory):
    dovecot = DovecotServer(tmp_path_factory.mktemp("dovecot-mv"), {"mv": "mvpw"})
    try:
        dovecot.start()
    except DovecotUnavailable:
        pytest.skip("dovecot not installed")
    port = dovecot.port
    answers: dict[str, dict[bytes, object]] = {}
    try:
        c = ImapClient(port)
        status, _ = c.command(b"LOGIN mv mvpw")
        assert b"OK" in status, status
        messages = dict(SAMPLES)
        messages.update({f"spliced-{i}": m for i, m in enumerate(SPLICED)})
        names = list(messages)
        for name in names:
            status, _ = c.command(b"APPEND INBOX", messages[name])
            assert b" OK" in status, (name, status)
        c.command(b"SELECT INBOX")
        for seq, name in enumerate(names, 1):
            got: dict[bytes, object] = {}
            _, untagged = c.command(b"FETCH %d (ENVELOPE BODYSTRUCTURE BODY)" % seq)
            got.update(parse_fetch(untagged[0]))
            raw = messages[name]
            for path, kind, fields in section_specs(raw):
                label = section_label(path, kind, fields).encode()
                status, untagged = c.command(b"FETCH %d (BODY.PEEK[%s])" % (seq, label))
                fetched = [u for u in untagged if re.match(rb"\* \d+ FETCH", u)]
                if b" OK" not in status or not fetched:
                    got[b"BODY[" + label + b"]"] = ("ERROR", status)
                    continue
                items = parse_fetch(fetched[0])
                (value,) = items.values()
                got[b"BODY[" + label + b"]"] = value
            answers[name] = got
        c.close()
    finally:
        dovecot.stop()
    return answers


_BARE_LF = re.compile(rb"(?<!\r)\n")


def _crlf(raw: bytes) -> bytes:
    return re.sub(rb"(?<!\r)\n", b"\r\n", raw)


def _mismatches(raw: bytes, ref: dict[bytes, object]) -> list[tuple[str, object, object]]:
    """Every item where MessageView and Dovecot disagree (LF-only lines compared as CRLF, see above)."""
    original = raw
    if _BARE_LF.search(raw):
        raw = _crlf(raw)
    view = MessageView(raw)
    out: list[tuple[str, object, object]] = []
    for key, ours in ((b"ENVELOPE", view.envelope()), (b"BODYSTRUCTURE", view.bodystructure()),
                      (b"BODY", view.bodystructure(extended=False))):
        if norm(ours) != ref[key]:
            out.append((key.decode(), norm(ours), ref[key]))
    for path, kind, fields in section_specs(original):
        label = section_label(path, kind, fields)
        expected = ref[b"BODY[" + label.encode() + b"]"]
        if isinstance(expected, tuple):
            continue  # Dovecot refused this section; nothing to compare
        ours_section = view.section(path, kind, fields)
        if ours_section != (expected or b""):
            out.append((f"BODY[{label}]", ours_section, expected))
    return out


@pytest.mark.parametrize("name", list(SAMPLES))
def test_corpus_matches_dovecot(dovecot_answers, name):
    assert _mismatches(SAMPLES[name], dovecot_answers[name]) == []


def test_spliced_messages_match_dovecot(dovecot_answers):
    bad = {}
    for i, raw in enumerate(SPLICED):
        found = _mismatches(raw, dovecot_answers[f"spliced-{i}"])
        if found:
            bad[i] = (raw, found)
    assert bad == {}
