"""Reading the arguments of one complete IMAP command (recursive-descent primitives over its bytes).

Why this shape: IMAP's grammar is irregular (BODY[HEADER.FIELDS (A B)]<0.10>, sequence sets, nested search
keys), so each command parses its own arguments with these primitives instead of one generic tree. The input is
the command exactly as the framer assembled it, literals inline (`{n}` CRLF n octets), without the final CRLF.
Every failure is a ParseError, never anything else.
"""

from __future__ import annotations

import re

from .errors import ParseError
from .utf7 import Utf7Error, decode_lenient
from .values import Atom

# Characters that end an atom (RFC 3501 atom-specials minus list-wildcards and "]", which we accept in atoms
# because sequence sets, LIST patterns and astrings use them).
_ATOM_END = frozenset(b' ()"{\r\n\x00')
_LITERAL_HEAD = re.compile(rb"\{(\d{1,12})(\+?)\}\r?\n")


class Lexer:
    """A cursor over one command's bytes."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    # -- basics ---------------------------------------------------------------------------------------------
    def at_end(self) -> bool:
        return self.pos >= len(self.buf)

    def peek(self) -> int | None:
        return self.buf[self.pos] if self.pos < len(self.buf) else None

    def rest(self) -> bytes:
        return self.buf[self.pos:]

    def sp(self) -> None:
        if self.peek() != 0x20:
            raise ParseError("expected a space" if not self.at_end() else "missing argument")
        self.pos += 1

    def maybe_sp(self) -> bool:
        if self.peek() == 0x20:
            self.pos += 1
            return True
        return False

    def end(self) -> None:
        if not self.at_end():
            raise ParseError(f"unexpected text at the end: {self.rest()[:40]!r}")

    def char(self, c: bytes) -> None:
        if self.peek() != c[0]:
            raise ParseError(f"expected {c.decode()!r}")
        self.pos += 1

    def maybe_char(self, c: bytes) -> bool:
        if self.peek() == c[0]:
            self.pos += 1
            return True
        return False

    # -- tokens -----------------------------------------------------------------------------------------------
    def atom(self, what: str = "atom") -> str:
        """Read an atom (bracketed sections kept whole, e.g. BODY[HEADER.FIELDS (A B)]<0.5>)."""
        buf = self.buf
        start = self.pos
        i = start
        n = len(buf)
        while i < n:
            c = buf[i]
            if c in _ATOM_END or c < 0x20 or c == 0x7F:
                break
            if c == 0x5B:  # "[": read to the matching "]" (may contain spaces and parens)
                close = buf.find(b"]", i)
                if close < 0:
                    raise ParseError("unterminated [")
                i = close + 1
                continue
            i += 1
        if i == start:
            raise ParseError(f"expected {what}")
        self.pos = i
        try:
            return buf[start:i].decode("ascii")
        except UnicodeDecodeError:
            raise ParseError(f"8-bit characters in {what}") from None

    def number(self, what: str = "number") -> int:
        text = self.atom(what)
        if not text.isdigit() or not text.isascii():
            raise ParseError(f"expected {what}, got {text[:20]!r}")
        value = int(text)
        if value > 0xFFFFFFFFFFFFFFFF:
            raise ParseError(f"{what} too large")
        return value

    def quoted(self) -> bytes:
        buf = self.buf
        self.char(b'"')
        out = bytearray()
        i = self.pos
        n = len(buf)
        while True:
            j = i
            while j < n and buf[j] not in (0x22, 0x5C, 0x0D, 0x0A):
                j += 1
            out += buf[i:j]
            if j >= n:
                raise ParseError("unterminated quoted string")
            c = buf[j]
            if c == 0x22:
                self.pos = j + 1
                return bytes(out)
            if c == 0x5C:
                if j + 1 < n and buf[j + 1] in (0x22, 0x5C):
                    out.append(buf[j + 1])
                    i = j + 2
                    continue
                raise ParseError("bad escape in quoted string")
            raise ParseError("CR or LF in quoted string")

    def literal(self) -> bytes:
        m = _LITERAL_HEAD.match(self.buf, self.pos)
        if not m:
            raise ParseError("bad literal")
        size = int(m.group(1))
        start = m.end()
        if start + size > len(self.buf):
            raise ParseError("literal shorter than announced")
        self.pos = start + size
        return self.buf[start:start + size]

    def string_bytes(self) -> bytes:
        c = self.peek()
        if c == 0x22:
            return self.quoted()
        if c == 0x7B:
            return self.literal()
        raise ParseError("expected a string")

    def astring_bytes(self) -> bytes:
        c = self.peek()
        if c in (0x22, 0x7B):
            return self.string_bytes()
        return self.atom("astring").encode("ascii")

    def astring(self) -> str:
        return _utf8(self.astring_bytes())

    def string(self) -> str:
        return _utf8(self.string_bytes())

    def nstring_or_nil(self) -> str | None:
        if self.peek() not in (0x22, 0x7B):
            text = self.atom()
            if text.upper() == "NIL":
                return None
            raise ParseError("expected a string or NIL")
        return self.string()

    def mailbox(self) -> str:
        """A mailbox name: astring, modified UTF-7 decoded, INBOX in any case normalised."""
        raw = self.astring()
        try:
            name = decode_lenient(raw)
        except Utf7Error as exc:
            raise ParseError(f"bad mailbox name: {exc}") from None
        return "INBOX" if name.upper() == "INBOX" else name

    def list_mailbox(self) -> str:
        """A LIST pattern: like astring but wildcards allowed (they are atom chars here anyway)."""
        return self.mailbox_pattern()

    def mailbox_pattern(self) -> str:
        raw = self.astring()
        try:
            return decode_lenient(raw)
        except Utf7Error as exc:
            raise ParseError(f"bad mailbox name: {exc}") from None

    def paren_list(self, item) -> list:
        """'(' item *(SP item) ')' (empty allowed)."""
        self.char(b"(")
        out = []
        if self.maybe_char(b")"):
            return out
        while True:
            out.append(item())
            if self.maybe_char(b")"):
                return out
            self.sp()

    def value(self):
        """A generic value (for ID, ENABLE-style lists): lists, strings, NIL, numbers, atoms."""
        c = self.peek()
        if c == 0x28:
            return self.paren_list(self.value)
        if c in (0x22, 0x7B):
            return self.string()
        text = self.atom("value")
        if text.upper() == "NIL":
            return None
        if text.isdigit() and text.isascii():
            return int(text)
        return Atom(text)

    def flag(self) -> str:
        text = self.atom("flag")
        if text.startswith("\\"):
            canon = _SYSTEM_FLAG_NAMES.get(text.lower())
            if canon is None:
                raise ParseError(f"unknown system flag {text}")
            return canon
        if any(ch in text for ch in "[]%*\\"):
            raise ParseError(f"bad keyword {text}")
        return text

    def flag_list(self) -> list[str]:
        if self.peek() == 0x28:
            return self.paren_list(self.flag)
        # RFC 3501 STORE allows a flag list without parentheses
        out = [self.flag()]
        while self.maybe_sp():
            out.append(self.flag())
        return out


_SYSTEM_FLAG_NAMES = {f.lower(): f for f in (
    "\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "\\Recent", "\\*")}


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")
