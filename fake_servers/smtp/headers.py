"""Byte-level edits of a message's header block: prepend trace fields, drop fields, read address lists.

Why bytes and not `email` round trips: an MTA must deliver what it was given. Re-serialising a parsed message
re-folds headers and re-encodes bodies; prepending `Received:` or removing `Bcc:` as bytes leaves every other
octet alone (and is much cheaper). Sans-I/O and pure, so hypothesis can test it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.utils import getaddresses

_HEADER_END = re.compile(rb"\r?\n\r?\n")


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    """(header block including its final line end, rest from the blank line on)."""
    if raw.startswith((b"\r\n", b"\n")):
        return b"", raw
    end = raw.find(b"\r\n\r\n")
    if end >= 0 and raw.find(b"\n\n", 0, end) < 0:  # the usual CRLF message: C-speed searches, no copy
        return raw[:end + 2], raw[end + 2:]
    m = _HEADER_END.search(raw)
    if m is None:
        # No body: all header (or garbage); keep it whole as the header block.
        return raw, b""
    cut = m.start() + (2 if raw[m.start():m.start() + 2] == b"\r\n" else 1)
    return raw[:cut], raw[cut:]


def _fields(block: bytes) -> list[bytes]:
    """Header fields, each with its continuation lines and line ends, in order."""
    lines = block.splitlines(keepends=True)
    fields: list[bytes] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def _name(field: bytes) -> bytes:
    return field.split(b":", 1)[0].strip().lower()


class HeaderBlock:
    """The header fields of a message, split once (the DATA handler asks several questions of the same block).

    Fields are also indexed by lower-cased name: the submission path asks for From, Sender, To, Cc, Bcc,
    Message-ID and Date of every message, and a dict lookup beats scanning the fields for each."""

    __slots__ = ("_by_name",)

    def __init__(self, raw: bytes) -> None:
        head, _ = split_message(raw)
        by_name: dict[bytes, list[bytes]] = {}
        for f in _fields(head):
            name, colon, _rest = f.partition(b":")
            if colon:
                key = name.strip().lower()
                found = by_name.get(key)
                if found is None:
                    by_name[key] = [f]
                else:
                    found.append(f)
        self._by_name = by_name

    def values(self, name: str) -> list[str]:
        out = []
        for f in self._by_name.get(_key(name), ()):
            value = f.split(b":", 1)[1]
            if b"\n" in value.rstrip(b"\r\n"):
                value = _FOLD.sub(b" ", value)
            out.append(value.strip().decode("utf-8", "replace"))
        return out

    def has(self, name: str) -> bool:
        return _key(name) in self._by_name

    def addresses(self, *names: str) -> list[str]:
        """Every addr-spec in the named address fields, lower-cased."""
        out: list[str] = []
        for name in names:
            if _key(name) in self._by_name:
                for value in self.values(name):
                    out.extend(_address_list(value))
        return out


_FOLD = re.compile(rb"\r?\n[ \t]")
_KEYS: dict[str, bytes] = {}


def _key(name: str) -> bytes:
    """A field name as HeaderBlock indexes it (lower-cased bytes), remembered for the few names code asks for."""
    key = _KEYS.get(name)
    if key is None:
        key = name.lower().encode()
        if len(_KEYS) < 256:
            _KEYS[name] = key
    return key
_SIMPLE_ADDR = re.compile(r"[^\s<>@,]+@[^\s<>@,]+")


def _address_list(value: str) -> list[str]:
    """addr-specs of one address-list value; a fast path for the plain lists clients write, else email.utils."""
    if '"' not in value and "(" not in value and ";" not in value and ":" not in value:
        if "," not in value and "<" not in value:  # one bare address, the most common value of all
            part = value.strip()
            if part and _SIMPLE_ADDR.fullmatch(part):
                return [part.lower()]
        out = []
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            if "<" in part:
                lt, gt = part.rfind("<"), part.rfind(">")
                if gt < lt:
                    break
                part = part[lt + 1:gt].strip()
            if not _SIMPLE_ADDR.fullmatch(part):
                break
            out.append(part.lower())
        else:
            return out
    return [addr.lower() for _, addr in getaddresses([value]) if addr]


def header_values(raw: bytes, name: str) -> list[str]:
    """The unfolded values of every field called `name` (case-insensitive), decoded as UTF-8."""
    return HeaderBlock(raw).values(name)


def has_header(raw: bytes, name: str) -> bool:
    return HeaderBlock(raw).has(name)


def remove_headers(raw: bytes, names: Iterable[str]) -> bytes:
    keys = {n.lower().encode() for n in names}
    head, body = split_message(raw)
    kept = [f for f in _fields(head) if not (b":" in f and _name(f) in keys)]
    return b"".join(kept) + body


def prepend_headers(raw: bytes, fields: Iterable[tuple[str, str]]) -> bytes:
    """Put `Name: value` lines before the existing header block, in the order given (trace fields go on top)."""
    eol = "\r\n" if not raw or raw.find(b"\r\n", 0, 2000) >= 0 else "\n"
    return "".join([f"{name}: {value}{eol}" for name, value in fields]).encode() + raw


def append_headers(raw: bytes, fields: Iterable[tuple[str, str]]) -> bytes:
    """Add fields at the end of the header block (for Message-ID / Date / Bcc that a client left out)."""
    head, body = split_message(raw)
    eol = b"\r\n" if b"\r\n" in head or not head else b"\n"
    extra = b"".join(f"{name}: {value}".encode() + eol for name, value in fields)
    if head and not head.endswith((b"\n",)):
        head += eol
    if not body:
        return head + extra + eol
    return head + extra + body


def addresses(raw: bytes, *names: str) -> list[str]:
    """Every addr-spec in the named address fields (To, Cc, ...), lower-cased."""
    return HeaderBlock(raw).addresses(*names)
