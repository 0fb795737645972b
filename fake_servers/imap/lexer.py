"""Reading the arguments of one complete IMAP command (recursive-descent primitives over its bytes).

Why this shape: IMAP's grammar is irregular (BODY[HEADER.FIELDS (A B)]<0.10>, sequence sets, nested search
keys), so each command parses its own arguments with these primitives instead of one generic tree. The input is
the command exactly as the framer assembled it, literals inline (`{n}` CRLF n octets), without the final CRLF.
Every failure is a ParseError (tagged BAD), or CommandFailed (NO) for well-formed arguments that can name
nothing, never anything else.
"""

from __future__ import annotations

import re

from .errors import CommandFailed, ParseError
from .utf7 import Utf7Error, decode_lenient
from .values import Atom

# RFC 3501 section 9, the characters that matter here:
#   atom-specials  = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials
#   ASTRING-CHAR   = ATOM-CHAR / resp-specials            (so "]" is allowed in an astring, not in an atom)
#   list-char      = ATOM-CHAR / list-wildcards / resp-specials
# "[" is an ordinary ATOM-CHAR everywhere; only a FETCH `section` after BODY, BODY.PEEK or BINARY* gives it a
# meaning. Like Dovecot, unquoted arguments are read leniently (a token ends only where an argument must end:
# SP, "(", ")", "{", DQUOTE, CTL) and each caller then checks what its grammar forbids (e.g. flag()).
_TOKEN_END = frozenset(b' ()"{\x7f') | frozenset(range(0x20))
#: fetch-att names after which "[" opens a section: "BODY" section, "BODY.PEEK" section, "BINARY..." section.
_SECTION_NAMES = frozenset({b"BODY", b"BODY.PEEK", b"BINARY", b"BINARY.PEEK", b"BINARY.SIZE"})
#: What a flag-keyword (an atom) may not contain beyond what ends a token: list-wildcards, quoted-specials,
#: resp-specials.
_NOT_IN_KEYWORD = frozenset("%*\\]\"")
_LITERAL_HEAD = re.compile(rb"\{(\d{1,12})(\+?)\}\r?\n")

#: How deeply generic values (ID, CREATE and LIST RETURN parameters) may nest; real ones nest 2 or 3 deep.
MAX_VALUE_DEPTH = 16

#: RFC 9051 section 9: `number` / `nz-number` are unsigned 32-bit, `number64` / `nz-number64` (sizes, offsets,
#: RFC 7162 mod-sequences) unsigned 63-bit.
NUMBER_MAX = 0xFFFFFFFF
NUMBER64_MAX = 0x7FFFFFFFFFFFFFFF
_NUMBER_DIGITS = 19  # len(str(NUMBER64_MAX)): longer digit strings are refused before int() reads them


def check_number(text: str, what: str = "number", limit: int = NUMBER64_MAX) -> int:
    """`text` as an unsigned number of at most `limit` (NUMBER_MAX or NUMBER64_MAX), else ParseError (BAD)
    with the reason. The length is checked first: int() of thousands of digits is slow, and Python refuses
    over 4,300 with a ValueError."""
    if not text.isdigit() or not text.isascii():
        raise ParseError(f"expected {what}, got {text[:20]!r}")
    digits = text.lstrip("0")
    if len(digits) > _NUMBER_DIGITS or int(digits or "0") > limit:
        kind = "a 63-bit number64" if limit == NUMBER64_MAX else "a 32-bit number"
        raise ParseError(f"{what} {text[:24]}{'...' if len(text) > 24 else ''} is too large "
                         f"(at most {limit}: {kind})")
    return int(digits or "0")


class Lexer:
    """A cursor over one command's bytes."""

    __slots__ = ("buf", "pos", "max_mailbox", "utf8", "saved")

    def __init__(self, buf: bytes, pos: int = 0, max_mailbox: int | None = None) -> None:
        """`max_mailbox`: the longest mailbox name that can exist (`mailbox()` refuses longer ones with NO)."""
        self.buf = buf
        self.pos = pos
        self.max_mailbox = max_mailbox
        #: Mailbox names are UTF-8, not modified UTF-7 (IMAP4rev2, UTF8=ACCEPT: rev2.py).
        self.utf8 = False
        #: The UIDs `$` names (SEARCHRES, IMAP4rev2 only); None: `$` is not available.
        self.saved: frozenset[int] | None = None

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
        """Read one unquoted token; a FETCH section after BODY/BODY.PEEK/BINARY* is kept whole with what
        follows (BODY[HEADER.FIELDS (A B)]<0.5>). Elsewhere "[" and "]" are plain characters."""
        return self._token(what, sections=True)

    def _token(self, what: str, sections: bool) -> str:
        buf = self.buf
        start = self.pos
        i = start
        n = len(buf)
        while i < n:
            c = buf[i]
            if c in _TOKEN_END:
                break
            if c == 0x5B and sections and i - start <= 11 and buf[start:i].upper() in _SECTION_NAMES:
                i = self._section_end(i)
                continue
            i += 1
        if i == start:
            raise ParseError(f"expected {what}")
        self.pos = i
        try:
            return buf[start:i].decode("ascii")
        except UnicodeDecodeError:
            raise ParseError(f"8-bit characters in {what}") from None

    def _section_end(self, i: int) -> int:
        """Given the "[" of a FETCH section at `i`, the index after its "]". Quoted strings and literals
        inside (header-fld-name is an astring) are skipped whole, so a "]" in them does not end the section."""
        buf = self.buf
        n = len(buf)
        i += 1
        while i < n:
            c = buf[i]
            if c == 0x5D:
                return i + 1
            if c == 0x22:
                i += 1
                while i < n and buf[i] != 0x22:
                    if buf[i] in (0x0D, 0x0A):
                        raise ParseError("CR or LF in quoted string")
                    i += 2 if buf[i] == 0x5C else 1
                if i >= n:
                    break
                i += 1
                continue
            if c == 0x7B:
                m = _LITERAL_HEAD.match(buf, i)
                if m is not None:
                    i = m.end() + int(m.group(1))
                    continue
            if c in (0x0D, 0x0A):
                break
            i += 1
        raise ParseError("unterminated [ in FETCH section")

    def number(self, what: str = "number", limit: int = NUMBER64_MAX) -> int:
        """A number (`limit` NUMBER_MAX) or a number64 (the default: sizes, offsets, mod-sequences)."""
        return check_number(self.atom(what), what, limit)

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

    def literal8(self) -> bytes:
        """literal8 = "~{" number ["+"] "}" CRLF *OCTET (RFC 3516): a literal whose octets may include NUL."""
        self.char(b"~")
        return self.literal()

    def string_bytes(self) -> bytes:
        c = self.peek()
        if c == 0x22:
            return self.quoted()
        if c == 0x7B:
            return self.literal()
        raise ParseError("expected a string")

    def astring_bytes(self) -> bytes:
        """astring = 1*ASTRING-CHAR / string: "[" and "]" are plain characters here (never a section)."""
        c = self.peek()
        if c in (0x22, 0x7B):
            return self.string_bytes()
        return self._token("astring", sections=False).encode("ascii")

    def astring(self) -> str:
        return _utf8(self.astring_bytes())

    def string(self) -> str:
        return _utf8(self.string_bytes())

    def mailbox(self) -> str:
        """A mailbox name: astring, modified UTF-7 decoded, INBOX in any case normalised.

        A name that is not valid modified UTF-7 is well-formed IMAP (any astring is) naming no mailbox that can
        exist: the command fails with NO, as in Dovecot, not BAD."""
        if self.utf8:
            try:
                name = self.astring_bytes().decode("utf-8")
            except UnicodeDecodeError:
                raise CommandFailed("Mailbox name is not valid UTF-8") from None
        else:
            raw = self.astring()
            try:
                name = decode_lenient(raw)
            except Utf7Error as exc:
                raise CommandFailed(f"Mailbox name is not valid modified UTF-7: {exc}") from None
        if self.max_mailbox is not None and len(name) > self.max_mailbox:
            # no such mailbox can exist: refused before any store call or cache sees a name of 60 KB
            raise CommandFailed(f"Mailbox name too long (over {self.max_mailbox} characters)", "CANNOT")
        return "INBOX" if name.upper() == "INBOX" else name

    def mailbox_pattern(self) -> str:
        """A LIST/LSUB reference or pattern, decoded; one that is not valid modified UTF-7 is taken literally
        (it then matches no mailbox a client could have created), so LIST answers OK, as Dovecot does."""
        raw = self.astring()  # the lenient astring token already takes list-wildcards
        if self.utf8:  # UTF-8 names (rev2.py): taken as they are
            return raw
        try:
            return decode_lenient(raw)
        except Utf7Error:
            return raw

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

    def value(self, max_depth: int = MAX_VALUE_DEPTH):
        """A generic value (for ID, ENABLE-style lists): lists, strings, NIL, numbers, atoms.

        Lists may nest at most `max_depth` deep: a client's "((((..." must cost a BAD, not the stack."""
        c = self.peek()
        if c == 0x28:
            if max_depth <= 0:
                raise ParseError("lists nested too deeply")
            return self.paren_list(lambda: self.value(max_depth - 1))
        if c in (0x22, 0x7B):
            return self.string()
        text = self.atom("value")
        if text.upper() == "NIL":
            return None
        if text.isdigit() and text.isascii() and len(text) <= _NUMBER_DIGITS and int(text) <= NUMBER64_MAX:
            return int(text)  # tagged-ext-simple allows a number64 (RFC 9051); a longer one stays an atom
        return Atom(text)

    def flag(self) -> str:
        """flag = system flag / flag-keyword (an atom: "[" allowed, "]" and wildcards not)."""
        text = self._token("flag", sections=False)
        if text.startswith("\\"):
            canon = _SYSTEM_FLAG_NAMES.get(text.lower())
            if canon is None:
                raise ParseError(f"unknown system flag {text[:40]}")
            return canon
        if any(ch in _NOT_IN_KEYWORD for ch in text):
            raise ParseError(f"bad keyword {text[:40]}")
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
