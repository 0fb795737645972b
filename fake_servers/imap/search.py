"""SEARCH: parsing search keys (RFC 3501 6.4.4, RFC 7162 MODSEQ) into a predicate over messages.

Why compiled to closures: a search runs over every message of a mailbox; the key tree is walked once at parse
time, so evaluating 10,000 messages is a loop of plain calls. Keys that need the message body (HEADER, TEXT,
BODY, FROM, SENT*) reach for the parsed MessageView lazily, only for messages the cheaper keys let through.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from .errors import CommandFailed, ParseError
from .lexer import Lexer
from .seqset import SequenceSet

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DATE = re.compile(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})\Z")


@dataclass(slots=True)
class Msg:
    """What a search key may look at for one message."""

    seq: int
    uid: int
    record: Any  # MessageRecord
    recent: bool
    view: Callable[[], Any]  # -> MessageView (cached)


Pred = Callable[[Msg], bool]


@dataclass(slots=True)
class SearchProgram:
    pred: Pred
    uses_modseq: bool = False
    message_id: str | None = None  # set when a top-level key is HEADER MESSAGE-ID <x> (index lookup)
    uid_sets: tuple[SequenceSet, ...] = ()  # top-level UID keys (to narrow candidates cheaply)


def parse_date(text: str) -> date:
    m = _DATE.match(text)
    if not m or m.group(2).lower() not in _MONTHS:
        raise ParseError(f"bad date {text[:30]!r} (want d-Mon-yyyy)")
    try:
        return date(int(m.group(3)), _MONTHS.index(m.group(2).lower()) + 1, int(m.group(1)))
    except ValueError:
        raise ParseError(f"bad date {text[:30]!r}") from None


class _Parser:
    def __init__(self, lx: Lexer, count: Callable[[], int], largest_uid: Callable[[], int]) -> None:
        self.lx = lx
        self.count = count
        self.largest_uid = largest_uid
        self.uses_modseq = False
        self.message_id: str | None = None
        self.uid_sets: list[SequenceSet] = []

    def string(self) -> str:
        self.lx.sp()
        return self.lx.astring()

    def date(self) -> date:
        self.lx.sp()
        if self.lx.peek() == 0x22:
            return parse_date(self.lx.quoted().decode("ascii", "replace"))
        return parse_date(self.lx.atom("date"))

    def key(self, top: bool = False) -> Pred:
        lx = self.lx
        if lx.peek() == 0x28:
            preds = lx.paren_list(self.key)
            if not preds:
                raise ParseError("empty search key list")
            return _all_of(preds)
        word = lx.atom("search key")
        name = word.upper()
        flag_keys = _FLAG_KEYS.get(name)
        if flag_keys is not None:
            flag, want = flag_keys
            return (lambda m: flag in m.record.flags) if want else (lambda m: flag not in m.record.flags)
        if name == "ALL":
            return lambda m: True
        if name in ("NEW", "OLD", "RECENT"):
            if name == "NEW":
                return lambda m: m.recent and "\\Seen" not in m.record.flags
            if name == "OLD":
                return lambda m: not m.recent
            return lambda m: m.recent
        if name in ("KEYWORD", "UNKEYWORD"):
            lx.sp()
            flag = lx.flag()
            if name == "KEYWORD":
                return lambda m: flag in m.record.flags
            return lambda m: flag not in m.record.flags
        if name in ("BEFORE", "ON", "SINCE"):
            d = self.date()
            if name == "BEFORE":
                return lambda m: m.record.internaldate.date() < d
            if name == "ON":
                return lambda m: m.record.internaldate.date() == d
            return lambda m: m.record.internaldate.date() >= d
        if name in ("SENTBEFORE", "SENTON", "SENTSINCE"):
            d = self.date()

            # a message without a (valid) Date: header matches no SENT* key, as in Dovecot
            if name == "SENTBEFORE":
                return lambda m: (s := m.view().sent_date()) is not None and s < d
            if name == "SENTON":
                return lambda m: (s := m.view().sent_date()) is not None and s == d
            return lambda m: (s := m.view().sent_date()) is not None and s >= d
        if name in ("LARGER", "SMALLER"):
            lx.sp()
            n = lx.number("size")
            if name == "LARGER":
                return lambda m: m.record.size > n
            return lambda m: m.record.size < n
        if name in ("FROM", "TO", "CC", "BCC", "SUBJECT"):
            needle = self.string().casefold()
            header = name.capitalize()
            return lambda m: any(needle in v.casefold() for v in m.view().header_values(header))
        if name == "HEADER":
            field = self.string()
            needle = self.string()
            if top and field.lower() == "message-id" and needle.strip().startswith("<") and self.message_id is None:
                self.message_id = needle.strip()
            low = needle.casefold()
            if not low:
                return lambda m: bool(m.view().header_values(field))
            return lambda m: any(low in v.casefold() for v in m.view().header_values(field))
        if name == "BODY":
            needle = self.string().casefold()
            return lambda m: needle in m.view().body_text().casefold()
        if name == "TEXT":
            needle = self.string().casefold()
            return lambda m: (needle in m.view().header_text().casefold()
                              or needle in m.view().body_text().casefold())
        if name == "UID":
            lx.sp()
            uset = SequenceSet.parse(lx.atom("UID set"))
            if top:
                self.uid_sets.append(uset)
            resolved = uset.resolve(self.largest_uid())
            return lambda m: any(lo <= m.uid <= hi for lo, hi in resolved)
        if name == "NOT":
            lx.sp()
            inner = self.key()
            return lambda m: not inner(m)
        if name == "OR":
            lx.sp()
            a = self.key()
            lx.sp()
            b = self.key()
            return lambda m: a(m) or b(m)
        if name == "MODSEQ":
            self.uses_modseq = True
            lx.sp()
            if lx.peek() == 0x22:  # entry-name entry-type-req
                lx.quoted()
                lx.sp()
                kind = lx.atom("entry type").lower()
                if kind not in ("priv", "shared", "all"):
                    raise ParseError("bad MODSEQ entry type")
                lx.sp()
            n = lx.number("mod-sequence")
            return lambda m: m.record.modseq + 1 >= n  # store MODSEQ + MODSEQ_SHIFT (selected.py)
        if name[:1].isdigit() or name[:1] == "*":
            sset = SequenceSet.parse(word)
            resolved = sset.resolve(self.count())
            return lambda m: any(lo <= m.seq <= hi for lo, hi in resolved)
        raise ParseError(f"unknown search key {word[:30]!r}")


_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True), "UNANSWERED": ("\\Answered", False),
    "DELETED": ("\\Deleted", True), "UNDELETED": ("\\Deleted", False),
    "DRAFT": ("\\Draft", True), "UNDRAFT": ("\\Draft", False),
    "FLAGGED": ("\\Flagged", True), "UNFLAGGED": ("\\Flagged", False),
    "SEEN": ("\\Seen", True), "UNSEEN": ("\\Seen", False),
}


def _all_of(preds: list[Pred]) -> Pred:
    if len(preds) == 1:
        return preds[0]
    return lambda m: all(p(m) for p in preds)


def parse_search(lx: Lexer, count: Callable[[], int], largest_uid: Callable[[], int]) -> SearchProgram:
    """Parse `[CHARSET x] key *(SP key)` (after the command name and its space)."""
    first = lx.pos
    word = lx.atom("search key") if lx.peek() not in (0x28, None) else ""
    if word.upper() == "CHARSET":
        lx.sp()
        charset = lx.astring().upper()
        if charset not in ("UTF-8", "US-ASCII", "UTF8"):
            raise CommandFailed(f"charset {charset} is not supported", "BADCHARSET (UTF-8 US-ASCII)")
        lx.sp()
    else:
        lx.pos = first
    p = _Parser(lx, count, largest_uid)
    preds = [p.key(top=True)]
    while lx.maybe_sp():
        preds.append(p.key(top=True))
    lx.end()
    return SearchProgram(_all_of(preds), p.uses_modseq, p.message_id, tuple(p.uid_sets))


def internal_date_text(when: datetime) -> str:
    """RFC 3501 date-time, English month names whatever the locale."""
    off = when.utcoffset()
    minutes = int(off.total_seconds() // 60) if off is not None else 0
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return (f"{when.day:02d}-{_MONTHS[when.month - 1].capitalize()}-{when.year:04d} "
            f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} {sign}{minutes // 60:02d}{minutes % 60:02d}")
