"""Sans-I/O parsing of what an IMAP server says, in the shape aioimaplib hands it over.

Why our own: aioimaplib moves lines and literals but does not parse them; a client that mirrors a mailbox
must read `FETCH` data (UID, FLAGS, MODSEQ, BODY[] literals, ENVELOPE) and the unsolicited `EXISTS`,
`EXPUNGE`, `VANISHED` and flag pushes. This module turns bytes into values and nothing else, so it is tested
without a socket (hypothesis included).

aioimaplib's response lines: `bytes` for each line (the leading "* " removed), and a `bytearray` holding a
literal's data right after the line that announced it (`... {123}`); the last line is the tagged status text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from typing import Any, Union

#: A parsed value: an atom or string (bytes), NIL (None), or a parenthesised list.
Value = Union[bytes, None, list["Value"]]  # noqa: UP007 - a recursive alias needs Union

_LITERAL_AT_END = re.compile(rb"\{(\d+)\+?\}$")
_FETCH_START = re.compile(rb"^(\d+) FETCH \(", re.IGNORECASE)
_ATOM_STOP = b" ()\"{\r\n"


class ParseError(ValueError):
    """The server said something this parser does not understand."""


def _chunks(lines: Sequence[bytes | bytearray]) -> list[bytes | tuple[str, bytes]]:
    """Text chunks and ("literal", data) chunks, joining a literal with the line that announced it."""
    out: list[bytes | tuple[str, bytes]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if isinstance(line, bytearray):  # a literal without an announcing line: keep as data
            out.append(("literal", bytes(line)))
            i += 1
            continue
        match = _LITERAL_AT_END.search(line)
        if match and i + 1 < len(lines) and isinstance(lines[i + 1], bytearray):
            out.append(line[: match.start()])
            out.append(("literal", bytes(lines[i + 1])))
            i += 2
            continue
        out.append(bytes(line))
        i += 1
    return out


class _Tokens:
    """A cursor over text chunks and literals, producing parsed values."""

    def __init__(self, chunks: list[bytes | tuple[str, bytes]]) -> None:
        self.chunks = chunks
        self.ci = 0
        self.pos = 0

    def _text(self) -> bytes | None:
        while self.ci < len(self.chunks):
            chunk = self.chunks[self.ci]
            if isinstance(chunk, tuple):
                return None
            if self.pos < len(chunk):
                return chunk
            self.ci += 1
            self.pos = 0
        return None

    def skip_space(self) -> None:
        while True:
            text = self._text()
            if text is None:
                return
            while self.pos < len(text) and text[self.pos : self.pos + 1] in (b" ", b"\r", b"\n"):
                self.pos += 1
            if self.pos < len(text):
                return

    def at_end(self) -> bool:
        self.skip_space()
        return self.ci >= len(self.chunks)

    def peek(self) -> bytes | None:
        """The next character, b"" for a literal, None at the end."""
        self.skip_space()
        if self.ci >= len(self.chunks):
            return None
        chunk = self.chunks[self.ci]
        if isinstance(chunk, tuple):
            return b""
        return chunk[self.pos : self.pos + 1]

    def value(self) -> Value:
        first = self.peek()
        if first is None:
            raise ParseError("unexpected end of response")
        if first == b"":
            data = self.chunks[self.ci][1]  # type: ignore[index]
            self.ci += 1
            self.pos = 0
            return data
        text = self._text()
        assert text is not None
        if first == b"(":
            self.pos += 1
            items: list[Value] = []
            while True:
                nxt = self.peek()
                if nxt is None:
                    raise ParseError("unbalanced parenthesis")
                if nxt == b")":
                    self.pos += 1
                    return items
                items.append(self.value())
        if first == b")":
            raise ParseError("unexpected ')'")
        if first == b'"':
            return self._quoted(text)
        return self._atom(text)

    def _quoted(self, text: bytes) -> bytes:
        out = bytearray()
        i = self.pos + 1
        while i < len(text):
            ch = text[i : i + 1]
            if ch == b"\\" and i + 1 < len(text):
                out += text[i + 1 : i + 2]
                i += 2
                continue
            if ch == b'"':
                self.pos = i + 1
                return bytes(out)
            out += ch
            i += 1
        raise ParseError("unterminated quoted string")

    def _atom(self, text: bytes) -> bytes | None:
        """An atom; `[...]` sections (which may hold spaces and parentheses) and `<n>` are part of it."""
        start = i = self.pos
        depth = 0
        while i < len(text):
            ch = text[i : i + 1]
            if ch == b"[":
                depth += 1
            elif ch == b"]":
                depth -= 1
            elif depth == 0 and ch in (b" ", b"(", b")", b'"'):
                break
            i += 1
        if i == start:
            raise ParseError(f"unexpected {text[i:i + 1]!r}")
        self.pos = i
        atom = text[start:i]
        return None if atom.upper() == b"NIL" else atom


def parse_values(lines: Sequence[bytes | bytearray]) -> list[Value]:
    """Every value in the lines, in order (for tests and odd responses)."""
    tokens = _Tokens(_chunks(lines))
    out: list[Value] = []
    while not tokens.at_end():
        out.append(tokens.value())
    return out


@dataclass
class FetchRecord:
    """One `* n FETCH (...)` response: its sequence number and items by upper-case name."""

    seq: int
    items: dict[str, Value] = field(default_factory=dict)

    @property
    def uid(self) -> int | None:
        value = self.items.get("UID")
        return int(value) if isinstance(value, bytes) and value.isdigit() else None

    @property
    def flags(self) -> frozenset[str] | None:
        value = self.items.get("FLAGS")
        if not isinstance(value, list):
            return None
        return frozenset(v.decode("utf-8", "replace") for v in value if isinstance(v, bytes))

    @property
    def modseq(self) -> int | None:
        value = self.items.get("MODSEQ")
        if isinstance(value, list) and value and isinstance(value[0], bytes) and value[0].isdigit():
            return int(value[0])
        return None

    def section(self, prefix: str) -> bytes | None:
        """The data of the first item whose name starts with `prefix` (e.g. "BODY[]", "BODY[TEXT]")."""
        for name, value in self.items.items():
            if name.startswith(prefix) and isinstance(value, bytes):
                return value
        return None


def _fetch_groups(lines: Sequence[bytes | bytearray]) -> list[tuple[int, list[bytes | bytearray]]]:
    """Split response lines into one group per FETCH response (other untagged lines are skipped)."""
    groups: list[tuple[int, list[bytes | bytearray]]] = []
    current: list[bytes | bytearray] | None = None
    depth = 0
    for line in lines:
        if current is not None and depth > 0:
            current.append(line)
            if isinstance(line, bytes):
                depth += _paren_delta(line)
            continue
        if isinstance(line, bytes):
            match = _FETCH_START.match(line)
            if match:
                current = [line[match.end() - 1 :]]
                groups.append((int(match.group(1)), current))
                depth = _paren_delta(current[0])
                continue
        current = None
    return groups


def _paren_delta(line: bytes) -> int:
    """Opened minus closed parentheses outside quoted strings and [sections] (a literal's data is skipped)."""
    delta = 0
    in_quote = False
    bracket = 0
    i = 0
    text = _LITERAL_AT_END.sub(b"", line)
    while i < len(text):
        ch = text[i]
        if in_quote:
            if ch == 0x5C:  # backslash
                i += 2
                continue
            if ch == 0x22:
                in_quote = False
        elif ch == 0x22:
            in_quote = True
        elif ch == 0x5B:
            bracket += 1
        elif ch == 0x5D:
            bracket -= 1
        elif bracket == 0 and ch == 0x28:
            delta += 1
        elif bracket == 0 and ch == 0x29:
            delta -= 1
        i += 1
    return delta


def parse_fetch(lines: Sequence[bytes | bytearray]) -> list[FetchRecord]:
    """The FETCH responses among a command's response lines."""
    records = []
    for seq, group in _fetch_groups(lines):
        values = parse_values(group)
        if not values or not isinstance(values[0], list):
            raise ParseError("FETCH without a list")
        pairs = values[0]
        record = FetchRecord(seq)
        for i in range(0, len(pairs) - 1, 2):
            key = pairs[i]
            if isinstance(key, bytes):
                record.items[key.decode("ascii", "replace").upper()] = pairs[i + 1]
        records.append(record)
    return records


# --- unsolicited / untagged lines ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Untagged:
    """One untagged line as a client cares about it.

    kind: "exists" (number), "expunge" (seq), "vanished" (uids, earlier), "fetch" (seq, uid, flags, modseq),
    "uidvalidity", "highestmodseq", "uidnext" (number), "other".
    """

    kind: str
    number: int = 0
    uids: tuple[int, ...] = ()
    earlier: bool = False
    uid: int | None = None
    flags: frozenset[str] | None = None
    modseq: int | None = None


_NUM_KIND = re.compile(rb"^(\d+) (EXISTS|EXPUNGE|RECENT)\b", re.IGNORECASE)
_VANISHED = re.compile(rb"^VANISHED (\(EARLIER\) )?([0-9:,*]+)", re.IGNORECASE)
_RESP_CODE = re.compile(rb"^(?:OK|NO|BAD) \[(UIDVALIDITY|HIGHESTMODSEQ|UIDNEXT) (\d+)\]", re.IGNORECASE)


def expand_uid_set(text: str) -> tuple[int, ...]:
    """"1:3,7" -> (1, 2, 3, 7). A "*" cannot be expanded without the mailbox and is refused."""
    out: list[int] = []
    for part in text.split(","):
        if not part:
            continue
        if "*" in part:
            raise ParseError(f"cannot expand {part!r}")
        lo, _, hi = part.partition(":")
        a, b = int(lo), int(hi or lo)
        if a > b:
            a, b = b, a
        out.extend(range(a, b + 1))
    return tuple(out)


def compress_uids(uids: Sequence[int] | set[int]) -> str:
    """(1, 2, 3, 7) -> "1:3,7": how a client names a set of UIDs compactly (QRESYNC known-uids)."""
    ordered = sorted(set(uids))
    if not ordered:
        return ""
    parts = []
    start = prev = ordered[0]
    for uid in ordered[1:]:
        if uid == prev + 1:
            prev = uid
            continue
        parts.append(f"{start}:{prev}" if start != prev else str(start))
        start = prev = uid
    parts.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(parts)


def parse_untagged(line: bytes) -> Untagged:
    """One untagged line (with or without its "* " prefix); only its first physical line is needed."""
    if line.startswith(b"* "):
        line = line[2:]
    match = _NUM_KIND.match(line)
    if match:
        return Untagged(match.group(2).decode().lower(), number=int(match.group(1)))
    match = _VANISHED.match(line)
    if match:
        try:
            uids = expand_uid_set(match.group(2).decode())
        except (ParseError, ValueError):
            return Untagged("other")
        return Untagged("vanished", uids=uids, earlier=bool(match.group(1)))
    match = _RESP_CODE.match(line)
    if match:
        return Untagged(match.group(1).decode().lower(), number=int(match.group(2)))
    match = _FETCH_START.match(line)
    if match and not _LITERAL_AT_END.search(line) and _paren_delta(line) == 0:
        try:
            record = parse_fetch([line])[0]
        except ParseError:
            return Untagged("other")
        return Untagged("fetch", number=record.seq, uid=record.uid, flags=record.flags, modseq=record.modseq)
    return Untagged("other")


# --- ENVELOPE ------------------------------------------------------------------------------------------------


def decode_text(value: Value) -> str:
    """A header-ish string value (RFC 2047 encoded words decoded); NIL is ""."""
    if not isinstance(value, bytes):
        return ""
    text = value.decode("utf-8", "replace")
    try:
        return str(make_header(decode_header(text)))
    except (ValueError, LookupError):
        return text


@dataclass(frozen=True)
class Envelope:
    date: str
    subject: str
    sender: str  # the first From address, "name <mailbox@host>" or "mailbox@host"
    message_id: str | None


def _first_address(value: Value) -> str:
    if not isinstance(value, list) or not value or not isinstance(value[0], list):
        return ""
    addr = value[0]
    if len(addr) < 4:
        return ""
    name = decode_text(addr[0])
    mailbox = decode_text(addr[2])
    host = decode_text(addr[3])
    email = f"{mailbox}@{host}" if host else mailbox
    return f"{name} <{email}>" if name else email


def parse_envelope(value: Any) -> Envelope:
    if not isinstance(value, list) or len(value) < 10:
        raise ParseError("ENVELOPE is not a 10-item list")
    mid = decode_text(value[9]).strip() or None
    return Envelope(date=decode_text(value[0]), subject=decode_text(value[1]), sender=_first_address(value[2]),
                    message_id=mid)


def status_text(lines: Sequence[bytes | bytearray]) -> str:
    """The tagged response's text (the last line) for error messages."""
    for line in reversed(lines):
        if isinstance(line, bytes):
            return line.decode("utf-8", "replace")
    return ""
