"""RFC 822/2045/2231 lexical parsing of structured header values, the way IMAP servers report them.

Why our own instead of `email.headerregistry`: ENVELOPE and BODYSTRUCTURE must show the header values
as written (encoded-words left encoded, parameter case kept, RFC 2231 segments joined but not decoded,
broken addresses reported with MISSING_MAILBOX/MISSING_DOMAIN) to match what Dovecot, the reference
server, answers; `email` decodes and normalises. Values here are `str` (raw header bytes decoded as UTF-8
with surrogateescape, so 8-bit bytes survive round trips).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ATEXT_SPECIALS = set("()<>@,;:\\\".[]")
_TSPECIALS = set("()<>@,;:\\\"/[]?=")
_LWSP = " \t\r\n"


def _is_atext(ch: str) -> bool:
    o = ord(ch)
    return o > 32 and o != 127 and ch not in _ATEXT_SPECIALS


def _is_token(ch: str) -> bool:
    o = ord(ch)
    return o > 32 and o != 127 and ch not in _TSPECIALS


class HeaderValueLexer:
    """A cursor over one header value with RFC 822 skipping of whitespace and (nested) comments (not the IMAP
    command lexer of imap/lexer.py: header values have comments and folding, IMAP commands have literals)."""

    __slots__ = ("s", "i", "n", "last_comment")

    def __init__(self, s: str) -> None:
        self.s = s
        self.i = 0
        self.n = len(s)
        self.last_comment = ""

    def at_end(self) -> bool:
        return self.i >= self.n

    def peek(self) -> str:
        return self.s[self.i] if self.i < self.n else ""

    def skip_lwsp(self) -> int:
        """Skip whitespace and comments. 1: more data follows, 0: at end, -1: broken comment."""
        s, n = self.s, self.n
        while self.i < n:
            ch = s[self.i]
            if ch in _LWSP:
                self.i += 1
            elif ch == "(":
                if not self._comment():
                    return -1
            else:
                return 1
        return 0

    def _comment(self) -> bool:
        s, n = self.s, self.n
        depth = 0
        buf: list[str] = []
        while self.i < n:
            ch = s[self.i]
            self.i += 1
            if ch == "\\" and self.i < n:
                buf.append(s[self.i])
                self.i += 1
                continue
            if ch == "(":
                depth += 1
                if depth == 1:
                    continue
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    self.last_comment = "".join(buf)
                    return True
            elif ch in "\r\n":
                continue
            buf.append(ch)
        return False

    def atom(self) -> str | None:
        start = self.i
        while self.i < self.n and _is_atext(self.s[self.i]):
            self.i += 1
        if self.i == start:
            return None
        word = self.s[start:self.i]
        self.skip_lwsp()
        return word

    def token(self) -> str | None:
        start = self.i
        while self.i < self.n and _is_token(self.s[self.i]):
            self.i += 1
        word = self.s[start:self.i]
        self.skip_lwsp()
        return word

    def quoted(self) -> str | None:
        """A quoted-string starting at '"': its unescaped content, folding removed; None if unclosed."""
        s, n = self.s, self.n
        self.i += 1
        buf: list[str] = []
        while self.i < n:
            ch = s[self.i]
            self.i += 1
            if ch == '"':
                self.skip_lwsp()
                return "".join(buf)
            if ch == "\\" and self.i < n:
                buf.append(s[self.i])
                self.i += 1
            elif ch == "\r" or ch == "\n":
                continue
            else:
                buf.append(ch)
        return None

    def phrase(self) -> str:
        """RFC 822 phrase (obs-phrase too): words joined by single spaces, encoded-words kept."""
        words: list[str] = []
        while self.i < self.n:
            ch = self.s[self.i]
            if ch == '"':
                q = self.quoted()
                if q is None:
                    break
                words.append(q)
            elif ch == "." and words:
                self.i += 1
                words[-1] += "."
                self.skip_lwsp()
            else:
                a = self.atom()
                if a is None:
                    break
                words.append(a)
        return " ".join(words)

    def dot_atom(self) -> str | None:
        parts: list[str] = []
        while True:
            if self.peek() == '"':
                q = self.quoted()
                if q is None:
                    return None
                parts.append(q)
            else:
                a = self.atom()
                if a is None:
                    if not parts:
                        return None
                    break
                parts.append(a)
            if self.peek() != ".":
                break
            self.i += 1
            self.skip_lwsp()
        return ".".join(parts)

    def domain(self) -> str | None:
        """After '@': dot-atom or [domain literal], kept with its brackets."""
        self.i += 1  # '@'
        if self.skip_lwsp() <= 0:
            return None
        if self.peek() == "[":
            end = self.s.find("]", self.i)
            if end < 0:
                return None
            lit = self.s[self.i:end + 1]
            self.i = end + 1
            self.skip_lwsp()
            return "".join(ch for ch in lit if ch not in _LWSP)
        parts = self.atom_list(".")
        return ".".join(parts) if parts else None

    def atom_list(self, sep: str) -> list[str]:
        """Atoms separated by `sep` (folding whitespace allowed after it): a domain's labels, a language list."""
        atoms: list[str] = []
        while True:
            a = self.atom()
            if a is None:
                break
            atoms.append(a)
            if self.peek() != sep:
                break
            self.i += 1
            self.skip_lwsp()
        return atoms


# --- Content-Type / Content-Disposition ---------------------------------------------------------


@dataclass(slots=True)
class ContentType:
    type: str
    subtype: str | None
    params: list[tuple[str, str]]
    ok: bool  # the type/subtype parsed cleanly (parameters are only read then)


def _params(lx: HeaderValueLexer) -> list[tuple[str, str]]:
    """`; key=value` pairs; RFC 2231 continuations joined (key*0, key*1*...) but not decoded."""
    plain: list[tuple[str, str]] = []
    ext: dict[str, list[tuple[int, bool, str]]] = {}
    ext_order: list[str] = []
    while not lx.at_end():
        if lx.peek() != ";":
            break
        lx.i += 1
        if lx.skip_lwsp() <= 0:
            break
        key = lx.token()
        if not key or lx.peek() != "=":
            break
        lx.i += 1
        if lx.skip_lwsp() <= 0:
            break
        if lx.peek() == '"':
            value = lx.quoted()
            if value is None:
                break
        else:
            value = lx.token()
            if value is None:
                break
        star = key.find("*")
        if star < 0:
            plain.append((key, value))
            continue
        base = key[:star]
        rest = key[star + 1:]
        extended = rest.endswith("*") or rest == ""
        num_text = rest.rstrip("*")
        if num_text and not num_text.isdigit():
            plain.append((key, value))
            continue
        idx = int(num_text) if num_text else 0
        lkey = base.lower()
        if lkey not in ext:
            ext[lkey] = []
            ext_order.append(base)
        ext[lkey].append((idx, extended, value))
    for base in ext_order:
        segs = sorted(ext[base.lower()], key=lambda t: t[0])
        joined = "".join(v for _, _, v in segs)
        any_ext = any(e for _, e, _ in segs)
        plain.append((base + "*" if any_ext else base, joined))
    return plain


# The everyday Content-Type: type/subtype and plain `; key=value` parameters (tokens or quoted strings without
# escapes), no comments, nothing else. Matched in C and answered exactly as the HeaderValueLexer would answer
# it (tests/imap/test_mime_limits.py checks that); anything else goes the char-by-char way.
_LW = r"[ \t\r\n]*"
_TOKEN = r'[^\x00-\x20\x7f()<>@,;:\\"/\[\]?=]+'
_QSTR = r'"([^"\\\r\n]*)"'
_PARAM = rf";{_LW}({_TOKEN}){_LW}={_LW}(?:({_TOKEN})|{_QSTR}){_LW}"
_CT_FAST = re.compile(rf"{_LW}({_TOKEN}){_LW}/{_LW}({_TOKEN}){_LW}((?:{_PARAM})*)(?:;{_LW})?")
_CT_PARAM = re.compile(_PARAM)


def parse_content_type(value: str) -> ContentType:
    """type/subtype and parameters, with Dovecot's tolerance: a lone type is kept ("text" -> text with
    an empty subtype), anything else malformed (no subtype, junk after it) gives an empty type."""
    m = _CT_FAST.fullmatch(value)
    if m is not None:
        params = [(k, t or q) for k, t, q in _CT_PARAM.findall(value, m.start(3), m.end(3))]
        if not any("*" in k for k, _ in params):  # RFC 2231 segments: the HeaderValueLexer joins them
            return ContentType(m.group(1), m.group(2), params, True)
    return _parse_content_type(value)


def _parse_content_type(value: str) -> ContentType:
    lx = HeaderValueLexer(value)
    broken = ContentType("", "", [], False)
    if lx.skip_lwsp() <= 0:
        return broken
    type_ = lx.token() or ""
    if not type_:
        return broken
    if lx.at_end():
        return ContentType(type_, None, [], False)
    if lx.peek() != "/":
        return broken
    lx.i += 1
    if lx.skip_lwsp() <= 0:
        return broken
    subtype = lx.token() or ""
    if not subtype or (not lx.at_end() and lx.peek() != ";"):
        return broken
    return ContentType(type_, subtype, _params(lx), True)


def parse_disposition(value: str) -> tuple[str, list[tuple[str, str]]]:
    lx = HeaderValueLexer(value)
    lx.skip_lwsp()
    token = lx.token() or ""
    return token, _params(lx)


def parse_token_value(value: str) -> str | None:
    """A header that must be a single MIME token (Content-Transfer-Encoding), else None."""
    lx = HeaderValueLexer(value)
    lx.skip_lwsp()
    tok = lx.token()
    if not tok or lx.skip_lwsp() != 0:
        return None
    return tok


def parse_languages(value: str) -> list[str] | None:
    lx = HeaderValueLexer(value)
    lx.skip_lwsp()
    return lx.atom_list(",") or None


# --- addresses -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Address:
    name: str | None
    route: str | None
    mailbox: str | None
    domain: str | None


class _AddressParser:
    def __init__(self, value: str) -> None:
        self.lx = HeaderValueLexer(value)
        self.out: list[Address] = []

    def _fixed(self, a: Address) -> None:
        if a.mailbox is None:
            a.mailbox = "MISSING_MAILBOX"
        if not a.domain:
            a.domain = "MISSING_DOMAIN"
        self.out.append(a)

    def _angle(self, a: Address) -> bool:
        lx = self.lx
        lx.i += 1  # '<'
        if lx.skip_lwsp() <= 0:
            return False
        if lx.peek() == ">":  # "<>": the null address, reported with MISSING_MAILBOX/DOMAIN
            lx.i += 1
            lx.skip_lwsp()
            return True
        if lx.peek() == "@":
            routes: list[str] = []
            while lx.peek() == "@":
                d = lx.domain()
                if d is None:
                    a.route = "INVALID_ROUTE"
                    return False
                routes.append("@" + d)
                while lx.peek() == ",":
                    lx.i += 1
                    lx.skip_lwsp()
            if lx.peek() != ":":
                a.route = "INVALID_ROUTE"
                return False
            a.route = ",".join(routes)
            lx.i += 1
            if lx.skip_lwsp() <= 0:
                return False
        local = lx.dot_atom()
        if local is None:
            return False
        a.mailbox = local
        if lx.peek() == "@":
            d = lx.domain()
            if d is None:
                return False
            a.domain = d
        if lx.peek() != ">":
            return False
        lx.i += 1
        lx.skip_lwsp()
        return True

    def _mailbox(self) -> bool:
        lx = self.lx
        start = lx.i
        name = lx.phrase()
        if lx.peek() == "<":
            a = Address(name or None, None, None, None)
            if not self._angle(a):
                a.domain = "SYNTAX_ERROR"
            self._fixed(a)
            return not lx.at_end()
        # addr-spec
        lx.i = start
        lx.last_comment = ""
        a = Address(None, None, None, None)
        quoted = lx.peek() == '"'
        local = lx.dot_atom()
        a.mailbox = local
        has_domain = False
        if lx.peek() == "@":
            has_domain = True
            d = lx.domain()
            a.domain = d
        if lx.last_comment:
            a.name = lx.last_comment
        elif not has_domain:
            more = lx.phrase()
            if more:
                a.name = ((local or "") + " " + more).strip()
                a.mailbox = None
            elif not quoted:
                a.domain = ""
            if a.name is None and a.mailbox is not None and a.domain is None:
                a.name, a.mailbox = a.mailbox, None
        self._fixed(a)
        return not lx.at_end() and local is not None or (lx.peek() == ",")

    def _group(self) -> bool | None:
        """None: not a group (caller rewinds)."""
        lx = self.lx
        name = lx.phrase()
        if not name or lx.peek() != ":":
            return None
        lx.i += 1
        self.out.append(Address(None, None, name, None))
        ok = lx.skip_lwsp() > 0
        if ok and lx.peek() != ";":
            while True:
                if not self._mailbox():
                    ok = False
                    break
                if lx.peek() != ",":
                    break
                lx.i += 1
                if lx.skip_lwsp() <= 0:
                    ok = False
                    break
        if ok and lx.peek() == ";":
            lx.i += 1
            lx.skip_lwsp()
        self.out.append(Address(None, None, None, None))
        return not lx.at_end()

    def parse(self) -> list[Address]:
        lx = self.lx
        if lx.skip_lwsp() <= 0:
            return []
        guard = 0
        while not lx.at_end() and guard < 10000:
            guard += 1
            start = lx.i
            more = self._group()
            if more is None:
                lx.i = start
                more = self._mailbox()
            if not more or lx.peek() != ",":
                break
            lx.i += 1
            if lx.skip_lwsp() <= 0:
                break
        return self.out


def parse_addresses(value: str) -> list[Address]:
    """An address-list header value as Dovecot's ENVELOPE shows it (groups as NIL-domain markers)."""
    return _AddressParser(value).parse()
