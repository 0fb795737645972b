"""FETCH data items: parsing the attribute list a client asks for (RFC 3501 6.4.5, RFC 7162 MODSEQ, RFC 3516
BINARY).

Why parsed into plain objects first: the session decides side effects (\\Seen for a non-PEEK body, implied
UID for UID FETCH, MODSEQ with CHANGEDSINCE) once for the whole command before rendering any message.
Part numbers in a section are 32-bit nz-numbers, a partial's <origin.count> 63-bit number64s (RFC 9051
section 9): anything larger is a BAD with a reason, never a conversion of thousands of digits (which Python
refuses with a ValueError).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ParseError
from .lexer import NUMBER64_MAX, NUMBER_MAX, Lexer, check_number

_SIMPLE = frozenset({"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY",
                     "MODSEQ", "RFC822", "RFC822.HEADER", "RFC822.TEXT",
                     "EMAILID", "THREADID"})  # RFC 8474 OBJECTID (objectid.py)
_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_BODY_ITEM = re.compile(r"(BODY|BODY\.PEEK|BINARY|BINARY\.PEEK|BINARY\.SIZE)\[([^\]]*)\](?:<(\d+)(?:\.(\d+))?>)?\Z",
                        re.IGNORECASE)
_PART = re.compile(r"\d+(\.\d+)*")
_BINARY_SECTION = re.compile(r"([0-9]+(\.[0-9]+)*)?\Z")


def _number(text: str, what: str, limit: int = NUMBER_MAX) -> int:
    """A number (part numbers) or, with NUMBER64_MAX, a number64 (a partial's origin and count)."""
    return check_number(text, what, limit)


@dataclass(frozen=True, slots=True)
class Section:
    part: tuple[int, ...]
    kind: str | None  # None, HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME
    fields: tuple[str, ...]
    label: str  # the section text echoed in the response, e.g. HEADER.FIELDS (SUBJECT)


@dataclass(frozen=True, slots=True)
class FetchItem:
    name: str  # FLAGS, UID, ..., or BODY[] for sections
    section: Section | None = None
    peek: bool = False
    origin: int | None = None
    count: int | None = None

    @property
    def sets_seen(self) -> bool:
        if self.section is not None:
            return not self.peek
        return self.name in ("RFC822", "RFC822.TEXT")


def parse_section(text: str) -> Section:
    lx = Lexer(text.encode("ascii", "replace"))
    part: list[int] = []
    kind: str | None = None
    fields: tuple[str, ...] = ()
    if lx.at_end():
        return Section((), None, (), "")
    head = lx.atom("section")
    pieces = head.split(".")
    i = 0
    while i < len(pieces) and pieces[i].isdigit():
        n = _number(pieces[i], "a section part number")
        if n == 0:
            raise ParseError("section part numbers start at 1")
        part.append(n)
        i += 1
    kind_text = ".".join(pieces[i:]).upper()
    if kind_text == "":
        kind = None
    elif kind_text in ("HEADER", "TEXT", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        kind = kind_text
    elif kind_text == "MIME" and part:
        kind = "MIME"
    else:
        raise ParseError(f"bad section {text[:40]!r}")
    label = ".".join([str(p) for p in part] + ([kind] if kind else []))
    if kind in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        lx.sp()
        names = lx.paren_list(lx.astring)
        if not names:
            raise ParseError("empty header field list")
        fields = tuple(names)
        label += " (" + " ".join(_field_label(f) for f in fields) + ")"
    lx.end()
    return Section(tuple(part), kind, fields, label)


def _field_label(name: str) -> str:
    if name and all(0x21 <= ord(c) <= 0x7E and c not in '()"{\\%*' for c in name):
        return name.upper()
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_item(text: str) -> FetchItem:
    upper = text.upper()
    if upper in _SIMPLE:
        return FetchItem(upper)
    m = _BODY_ITEM.match(text)
    if not m:
        raise ParseError(f"unknown FETCH item {text[:40]!r}")
    kind = m.group(1).upper()
    binary = kind.startswith("BINARY")
    if binary and not _BINARY_SECTION.match(m.group(2)):  # RFC 3516: section-binary is part numbers only
        raise ParseError(f"bad BINARY section {m.group(2)[:40]!r}")
    section = parse_section(m.group(2))
    origin = _number(m.group(3), "a partial origin", NUMBER64_MAX) if m.group(3) is not None else None
    count = _number(m.group(4), "a partial count", NUMBER64_MAX) if m.group(4) is not None else None
    if origin is not None and count is None:
        raise ParseError("partial fetch needs <origin.count>")
    if kind == "BINARY.SIZE":
        if origin is not None:
            raise ParseError("BINARY.SIZE takes no partial")
        return FetchItem("BINARY.SIZE[]", section, peek=True)
    if binary:
        return FetchItem("BINARY[]", section, peek=kind == "BINARY.PEEK", origin=origin, count=count)
    return FetchItem("BODY[]", section, peek=kind == "BODY.PEEK", origin=origin, count=count)


@dataclass(slots=True)
class FetchRequest:
    items: list[FetchItem]
    changedsince: int | None = None
    vanished: bool = False


def parse_fetch_args(lx: Lexer) -> FetchRequest:
    """Parse `att` (a macro, one item or a list) and the optional RFC 7162 modifiers."""
    items: list[FetchItem] = []
    if lx.peek() == 0x28:
        for text in lx.paren_list(lambda: lx.atom("FETCH item")):
            if text.upper() in _MACROS:
                raise ParseError("a FETCH macro cannot appear in a list")
            items.append(parse_item(text))
        if not items:
            raise ParseError("empty FETCH item list")
    else:
        text = lx.atom("FETCH item")
        macro = _MACROS.get(text.upper())
        items = [FetchItem(n) for n in macro] if macro else [parse_item(text)]
    req = FetchRequest(items)
    if lx.maybe_sp():
        def modifier():
            name = lx.atom("FETCH modifier").upper()
            if name == "CHANGEDSINCE":
                lx.sp()
                req.changedsince = lx.number("mod-sequence")
            elif name == "VANISHED":
                req.vanished = True
            else:
                raise ParseError(f"unknown FETCH modifier {name}")
            return name
        lx.paren_list(modifier)
    lx.end()
    return req
