"""BINARY (RFC 3516): FETCH BINARY[part], BINARY.PEEK[part], BINARY.SIZE[part], and what APPEND does with a
message sent as a literal8.

Why a module of its own: BODY[part] hands out the stored bytes as they are; BINARY[part] undoes the part's
Content-Transfer-Encoding first (base64, quoted-printable), so a client downloads an attachment without
decoding it. The decoding follows Dovecot 2.3 (which the imaptest groups fetch-binary-mime* were written
against): base64 ignores what is not base64, quoted-printable drops the blanks at the end of every line, takes
"=" followed by blanks only as a soft line break and writes hard line breaks as CRLF; 7bit, 8bit and binary
parts come out as stored; a multipart, a message/rfc822 part or the whole message (BINARY[]) comes out with
every base64 or quoted-printable part inside decoded and its Content-Transfer-Encoding field rewritten to
"binary"; any other encoding is NO [UNKNOWN-CTE]. Data Dovecot calls invalid (NO [PARSE]) is decoded as far as
it can be. The result goes out as a literal8 (`~{n}`) when it holds a NUL.

Why the cost is bounded: the decoding runs in C (binascii, re) over one part of a stored message, whose size the
APPEND and SMTP limits already bound; decoded data is never larger than the encoded part, and MAX_DECODED caps
it anyway (NO [LIMIT] past it), so no client can make a FETCH build more than that for one item.

On APPEND, a message sent as a literal8 may carry raw binary parts (Content-Transfer-Encoding: binary). They
are stored re-encoded as base64 (as Dovecot's binary converter does), so BODY[part] never holds a NUL and every
client can read them; BINARY[part] gives the original octets back.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any

from .errors import CommandFailed
from .fetch_items import FetchItem
from .mime.rfc822 import parse_token_value
from .mime.tree import HeaderField, Part
from .mime.view import MessageView

#: Most octets one BINARY item may decode to (a part is never larger than the APPEND limit in practice).
MAX_DECODED = 64 * 1024 * 1024
_AS_STORED = frozenset({"7bit", "8bit", "binary"})
_DECODABLE = frozenset({"base64", "quoted-printable"})
_LINE_END_BLANKS = re.compile(rb"[ \t]+(?=\r?\n|\Z)")
_LINE_END = re.compile(rb"\r?\n")
_CTE_FIELD = re.compile(rb"content-transfer-encoding[ \t]*:", re.IGNORECASE)


def decode_qp(data: bytes) -> bytes:
    """Quoted-printable undone, Dovecot's way: blanks at a line's end dropped, "=" then the end of the line is a
    soft break, hard breaks written CRLF, "=XX" decoded (either case), any other "=" kept as it is."""
    data = _LINE_END_BLANKS.sub(b"", data)
    data = _LINE_END.sub(b"\r\n", data)
    return binascii.a2b_qp(data)


def decode_base64(data: bytes) -> bytes:
    """Base64 undone, skipping whatever is not base64 (line breaks, blanks); missing padding is tolerated."""
    clean = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    clean = clean[:len(clean) - len(clean) % 4] if len(clean) % 4 == 1 else clean
    try:
        return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))
    except (binascii.Error, ValueError):
        return b""


def _encoding(view: MessageView, part: Part) -> tuple[str | None, HeaderField | None]:
    """The part's Content-Transfer-Encoding (lowercase, first field wins) and its field, read whether or not
    the part counts as MIME for BODYSTRUCTURE (Dovecot decodes by the field alone)."""
    for f in part.fields or ():
        if f.name == "content-transfer-encoding":
            text = view.raw[f.value_start:min(f.end, f.value_start + 1000)].decode("ascii", "replace")
            value = (parse_token_value(text) or text).strip().lower()  # comments skipped, as Dovecot does
            return value or None, f
    return None, None


def _decoded_body(view: MessageView, part: Part, encoding: str | None) -> bytes:
    body = view.raw[part.body_start:part.end]
    if encoding is None or encoding in _AS_STORED:
        return body
    if encoding == "base64":
        return decode_base64(body)
    if encoding == "quoted-printable":
        return decode_qp(body)
    raise CommandFailed(f"Unknown Content-Transfer-Encoding {encoding[:40]}", "UNKNOWN-CTE")


def _subtree(part: Part) -> list[Part]:
    out, todo = [], [part]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(p.children)
    return out


def decoded_part(view: MessageView, path: tuple[int, ...]) -> bytes:
    """BINARY[path]: the part's content with its transfer encoding undone (b"" when there is no such part).

    A leaf: its body decoded. A multipart, a message/rfc822 part or the whole message (path ()): its octets with
    every base64 or quoted-printable part inside decoded and its Content-Transfer-Encoding field saying
    "binary" (as Dovecot answers). Raises CommandFailed: NO [UNKNOWN-CTE] for an encoding this server cannot
    undo, NO [LIMIT] when the result would be over MAX_DECODED."""
    part = view.part_at(path)
    if part is None:
        return b""
    if path and not part.children:
        data = _decoded_body(view, part, _encoding(view, part)[0])
    else:
        data = _converted(view, part, 0 if not path else part.body_start)
    if len(data) > MAX_DECODED:
        raise CommandFailed(f"Decoded part larger than {MAX_DECODED} octets", "LIMIT")
    return data


def _converted(view: MessageView, top: Part, start: int) -> bytes:
    raw = view.raw
    edits: list[tuple[int, int, bytes]] = []
    for part in _subtree(top):
        encoding, field = _encoding(view, part)
        if encoding not in _DECODABLE:
            if not part.children and encoding is not None and encoding not in _AS_STORED:
                raise CommandFailed(f"Unknown Content-Transfer-Encoding {encoding[:40]}", "UNKNOWN-CTE")
            continue
        if field is not None and field.start >= start:
            line = raw[field.start:field.end]
            eol = b"\r\n" if line.endswith(b"\r\n") else b"\n" if line.endswith(b"\n") else b""
            edits.append((field.start, field.end, raw[field.start:field.value_start] + b" binary" + eol))
        if not part.children:
            edits.append((part.body_start, part.end, _decoded_body(view, part, encoding)))
    return _apply(raw, start, top.end, edits)


def _apply(raw: bytes, start: int, end: int, edits: list[tuple[int, int, bytes]]) -> bytes:
    """raw[start:end] with each (from, to, octets) edit made (edits do not overlap)."""
    if not edits:
        return raw[start:end]
    edits.sort()
    out = bytearray()
    pos = start
    for a, b, data in edits:
        out += raw[pos:a]
        out += data
        pos = b
    out += raw[pos:end]
    return bytes(out)


def check_decodable(view: MessageView, path: tuple[int, ...]) -> None:
    """NO [UNKNOWN-CTE] now, before a FETCH response is begun, when a part BINARY[path] would decode has an
    encoding that cannot be undone."""
    part = view.part_at(path)
    if part is None:
        return
    for p in _subtree(part) if not path or part.children else [part]:
        encoding = _encoding(view, p)[0]
        if not p.children and encoding is not None and encoding not in _AS_STORED and encoding not in _DECODABLE:
            raise CommandFailed(f"Unknown Content-Transfer-Encoding {encoding[:40]}", "UNKNOWN-CTE")


def binary_renderer(item: FetchItem, deferred: Callable[..., Any]) -> Callable[[int, Any, Any, Any], Any]:
    """The FETCH renderer of a BINARY item (see message_commands._renderer): f(uid, record, raw, view).

    `deferred(label, make, binary=True)` builds the literal written when its turn comes (a literal8 when the
    octets hold a NUL)."""
    section = item.section
    assert section is not None
    path = section.part
    label = section.label.encode()
    if item.name == "BINARY.SIZE[]":
        head = b"BINARY.SIZE[%s] " % label

        def size(u: int, rec: Any, raw: bytes | None, view: MessageView | None) -> bytes:
            assert view is not None
            return head + b"%d" % len(decoded_part(view, path))
        return size
    origin, count = item.origin, item.count

    def render(u: int, rec: Any, raw: bytes | None, view: MessageView | None) -> Any:
        assert view is not None
        check_decodable(view, path)

        def make() -> bytes:
            assert view is not None
            data = decoded_part(view, path)
            return data if origin is None else data[origin:origin + (count or 0)]
        if origin is None:
            return deferred(b"BINARY[%s]" % label, make, binary=True)
        return deferred(b"BINARY[%s]<%d>" % (label, origin), make, binary=True)
    return render


def literal_head(label: bytes, data: bytes | memoryview, binary: bool) -> bytes:
    """`label {n}` CRLF, or `label ~{n}` CRLF for BINARY octets holding a NUL (RFC 3516 literal8)."""
    if binary and isinstance(data, bytes) and b"\0" in data:
        return b"%b ~{%d}\r\n" % (label, len(data))
    return b"%b {%d}\r\n" % (label, len(data))


def encode_binary_parts(raw: bytes, view: MessageView) -> bytes:
    """`raw` (a message sent as a literal8) with every leaf part whose Content-Transfer-Encoding is "binary"
    re-encoded as base64 (76-character lines), its header field changed to match; other octets untouched."""
    edits: list[tuple[int, int, bytes]] = []
    todo = [view.tree]
    while todo:
        part = todo.pop()
        if part.children:
            todo.extend(part.children)
            continue
        if part.kind != "leaf" or _encoding(view, part)[0] != "binary":
            continue
        for field in part.fields or ():
            if field.name == "content-transfer-encoding":
                line = raw[field.start:field.end]
                m = _CTE_FIELD.match(line)
                if m is not None:
                    nl = b"\r\n" if line.endswith(b"\r\n") else b"\n" if line.endswith(b"\n") else b""
                    edits.append((field.start, field.end, line[:m.end()] + b" base64" + nl))
                break
        body = raw[part.body_start:part.end]
        encoded = base64.encodebytes(body).replace(b"\n", b"\r\n")
        if not raw[part.end - 2:part.end].endswith(b"\n") and part.end - part.body_start:
            encoded = encoded.removesuffix(b"\r\n")
        edits.append((part.body_start, part.end, encoded))
    return _apply(raw, 0, len(raw), edits) if edits else raw


__all__ = ["MAX_DECODED", "binary_renderer", "decode_base64", "decode_qp", "decoded_part", "encode_binary_parts",
           "literal_head"]
