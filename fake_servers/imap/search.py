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
from .mime.text import decode_words
from .objectid import email_id
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


def seq_uid(m: Msg) -> tuple[int, int]:
    """What SORT and THREAD keep of a hit: two numbers (a tuple of them is not followed by the garbage
    collector, a Msg per hit would be, and 10,000 of them kept over a command's steps trigger its full
    collections). A search that keeps only these may skip the Msg (message_commands._record_matches)."""
    return m.seq, m.uid


def match_all(m: Msg) -> bool:
    """The predicate of ALL (one function, so a program made only of it is recognised: `matches_all`)."""
    return True


#: Keys answered from the message's record, flags and numbers alone (the others read the message).
_RECORD_KEYS = frozenset({"ALL", "NEW", "OLD", "RECENT", "KEYWORD", "UNKEYWORD", "BEFORE", "ON", "SINCE",
                          "LARGER", "SMALLER", "UID", "MODSEQ", "$", "ANSWERED", "UNANSWERED", "DELETED",
                          "UNDELETED", "DRAFT", "UNDRAFT", "FLAGGED", "UNFLAGGED", "SEEN", "UNSEEN"})


@dataclass(frozen=True, slots=True)
class SearchLimits:
    """How big a search program a client may send.

    Why bounded: keys nest (parentheses, NOT, OR) and the parser and the compiled predicate recurse once per
    level, so 20,000 nested parentheses would exhaust the stack; and every key is evaluated once per message,
    so the key count multiplies the work of a whole-mailbox search. Chains of OR and of NOT are flattened
    (an OR tree is the disjunction of its leaves), so only alternating or parenthesised nesting counts as
    depth: a long `OR a OR b OR c ...` disjunction is fine.
    """

    max_depth: int = 100
    max_keys: int = 1000


@dataclass(slots=True)
class SearchProgram:
    pred: Pred
    uses_modseq: bool = False
    message_id: str | None = None  # set when a top-level key is HEADER MESSAGE-ID <x> (index lookup)
    uid_sets: tuple[SequenceSet, ...] = ()  # top-level UID keys (to narrow candidates cheaply)
    needs_text: bool = False  # a BODY or TEXT key: each message's decoded text is made (in steps) first
    #: No key reads the message (only its record, flags, numbers): `pred` never calls `m.view`.
    record_only: bool = False
    #: Every message matches (ALL, or keys made only of ALL): a SORT or THREAD need not ask `pred` at all.
    matches_all: bool = False


def parse_date(text: str) -> date:
    m = _DATE.match(text)
    if not m or m.group(2).lower() not in _MONTHS:
        raise ParseError(f"bad date {text[:30]!r} (want d-Mon-yyyy)")
    try:
        return date(int(m.group(3)), _MONTHS.index(m.group(2).lower()) + 1, int(m.group(1)))
    except ValueError:
        raise ParseError(f"bad date {text[:30]!r}") from None


class _Parser:
    def __init__(self, lx: Lexer, count: Callable[[], int], largest_uid: Callable[[], int],
                 limits: SearchLimits) -> None:
        self.lx = lx
        self.count = count
        self.largest_uid = largest_uid
        self.limits = limits
        self.keys = 0
        self.uses_modseq = False
        self.needs_text = False
        self.message_id: str | None = None
        self.uid_sets: list[SequenceSet] = []
        self.record_only = True  # until a key that reads the message is met

    def _counted(self) -> None:
        self.keys += 1
        if self.keys > self.limits.max_keys:
            raise ParseError(f"too many search keys (at most {self.limits.max_keys})")

    def _at_word(self, word: bytes) -> bool:
        """True (and the word consumed) when the next token is `word` followed by a space."""
        lx = self.lx
        end = lx.pos + len(word)
        if lx.buf[lx.pos:end].upper() == word and lx.buf[end:end + 1] == b" ":
            lx.pos = end
            return True
        return False

    def key(self, top: bool = False, depth: int = 0) -> Pred:
        """One search key; NOT and OR chains are read in loops, so only real nesting deepens `depth`."""
        if depth > self.limits.max_depth:
            raise ParseError(f"search keys nested too deeply (at most {self.limits.max_depth} levels)")
        negate = False
        while self._at_word(b"NOT"):
            self._counted()
            negate = not negate
            self.lx.sp()
        if self._at_word(b"OR"):
            pred = self._or_chain(depth)
        else:
            pred = self._simple(top and not negate, depth)
        if negate:
            inner = pred
            return lambda m: not inner(m)
        return pred

    def _or_chain(self, depth: int) -> Pred:
        """After an "OR": its two operands, where an operand that is itself an OR adds one more (a tree of ORs
        is the disjunction of its leaves, whichever way it nests)."""
        self._counted()
        leaves: list[Pred] = []
        needed = 2
        while needed:
            self.lx.sp()
            if self._at_word(b"OR"):
                self._counted()
                needed += 1
                continue
            leaves.append(self.key(depth=depth + 1))
            needed -= 1
        return lambda m: any(p(m) for p in leaves)

    def string(self) -> str:
        self.lx.sp()
        return self.lx.astring()

    def date(self) -> date:
        self.lx.sp()
        if self.lx.peek() == 0x22:
            return parse_date(self.lx.quoted().decode("ascii", "replace"))
        return parse_date(self.lx.atom("date"))

    def _simple(self, top: bool, depth: int) -> Pred:
        """A key that is not NOT or OR (those are read by `key`)."""
        lx = self.lx
        self._counted()
        if lx.peek() == 0x28:
            preds = lx.paren_list(lambda: self.key(depth=depth + 1))
            if not preds:
                raise ParseError("empty search key list")
            return _all_of(preds)
        word = lx.atom("search key")
        name = word.upper()
        if name not in _RECORD_KEYS and not (name[:1].isdigit() or name[:1] == "*"):
            self.record_only = False
        flag_keys = _FLAG_KEYS.get(name)
        if flag_keys is not None:
            flag, want = flag_keys
            return (lambda m: flag in m.record.flags) if want else (lambda m: flag not in m.record.flags)
        if name == "ALL":
            return match_all
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
        if name in ("FROM", "TO", "CC", "BCC"):
            return _address_key(name, self.string().casefold())
        if name == "SUBJECT":
            needle = self.string().casefold()
            return lambda m: any(needle in v.casefold() for v in m.view().header_values("Subject"))
        if name in ("EMAILID", "THREADID"):  # RFC 8474 6 (objectid.py: no message has a THREADID)
            wanted = self.string()
            if name == "THREADID":
                return lambda m: False
            return lambda m: email_id(m.view().raw) == wanted
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
            self.needs_text = True
            needle = self.string().casefold()
            return lambda m: needle in m.view().body_text().casefold()
        if name == "TEXT":
            self.needs_text = True
            needle = self.string().casefold()
            return lambda m: (needle in m.view().header_text().casefold()
                              or needle in m.view().body_text().casefold())
        if name == "UID":
            lx.sp()
            text = lx.atom("UID set")
            if text == "$" and lx.saved is not None:  # SEARCHRES (IMAP4rev2, rev2.py)
                saved = lx.saved
                return lambda m: m.uid in saved
            uset = SequenceSet.parse(text)
            if top:
                self.uid_sets.append(uset)
            resolved = uset.resolve(self.largest_uid())
            return lambda m: any(lo <= m.uid <= hi for lo, hi in resolved)
        if name in ("NOT", "OR"):  # at the very end of the command (no operand follows)
            raise ParseError(f"{name} needs {'a search key' if name == 'NOT' else 'two search keys'}")
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
        if word == "$" and self.lx.saved is not None:  # SEARCHRES (IMAP4rev2, rev2.py)
            saved_uids = self.lx.saved
            return lambda m: m.uid in saved_uids
        if name[:1].isdigit() or name[:1] == "*":
            sset = SequenceSet.parse(word)
            resolved = sset.resolve(self.count())
            return lambda m: any(lo <= m.seq <= hi for lo, hi in resolved)
        raise ParseError(f"unknown search key {word[:30]!r}")


# -- address keys --------------------------------------------------------------------------------------------
#: Where each address header sits in an ENVELOPE (RFC 3501 7.4.2).
_ENVELOPE_FIELD = {"FROM": 2, "TO": 5, "CC": 6, "BCC": 7}
#: What the ENVELOPE parser writes for a part it could not read (as Dovecot does); not text of the header.
_PLACEHOLDERS = frozenset({"MISSING_MAILBOX", "MISSING_DOMAIN", "SYNTAX_ERROR", "INVALID_ROUTE"})

Address = tuple[str | None, str | None, str | None, str | None]  # name, route (adl), mailbox, host


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return bytes(value).decode("utf-8", "replace")


def envelope_addresses(view: Any, header: str) -> list[Address]:
    """The ENVELOPE address list of FROM, TO, CC or BCC: (name, route, mailbox, host) with str values.

    A group is a start entry (host None, mailbox the group name) and an end entry (all None), as in ENVELOPE.
    """
    found = view.envelope()[_ENVELOPE_FIELD[header]]
    if not found:
        return []
    return [(_text(a[0]), _text(a[1]), _text(a[2]), _text(a[3])) for a in found]


def _real(part: str | None) -> str:
    return "" if part is None or part in _PLACEHOLDERS else part


def _one_address(name: str | None, route: str | None, mailbox: str | None, host: str | None) -> str:
    local, domain = _real(mailbox), _real(host)
    addr = f"{local}@{domain}" if local and domain else local or domain
    if _real(route) and addr:
        addr = f"{route}:{addr}"
    display = decode_words(name) if name else ""
    if display:
        return f"{display} <{addr}>" if addr else display
    return addr


def address_text(addresses: list[Address]) -> str:
    """An address list written the one normal way, for substring search (as Dovecot searches FROM/TO/CC/BCC):
    `Name <local@domain>` or `local@domain`, groups as `name: member, member;`, joined by ", ". Comments,
    quoting and folding of the original header are gone, display names are decoded (RFC 2047)."""
    items: list[str] = []
    group: list[str] | None = None
    group_name = ""
    for name, route, mailbox, host in addresses:
        if host is None:
            if group is not None:
                items.append(f"{group_name}: {', '.join(group)};")
            group = None
            if mailbox is not None:  # a group starts; its end is the entry with every field None
                group_name, group = decode_words(mailbox), []
            continue
        (group if group is not None else items).append(_one_address(name, route, mailbox, host))
    if group is not None:
        items.append(f"{group_name}: {', '.join(group)};")
    return ", ".join(items)


def _address_key(header: str, needle: str) -> Pred:
    """RFC 3501 6.4.4 FROM/TO/CC/BCC: the string is looked for in the header's addresses, not its raw text, so
    `<user (comment)@ (comment) domain.org>` is found by `user@domain.org`. Where the header could not be
    parsed, its decoded raw text is searched as well, so nothing a client can read is unsearchable."""
    field = header.capitalize()

    def match(m: Msg) -> bool:
        view = m.view()
        if not needle:
            return bool(view.header_values(field))
        addresses = envelope_addresses(view, header)
        if needle in address_text(addresses).casefold():
            return True
        if any(part in _PLACEHOLDERS for a in addresses for part in a[1:]):
            return any(needle in v.casefold() for v in view.header_values(field))
        return False

    return match


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


def parse_search(lx: Lexer, count: Callable[[], int], largest_uid: Callable[[], int],
                 limits: SearchLimits = SearchLimits()) -> SearchProgram:
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
    p = _Parser(lx, count, largest_uid, limits)
    preds = [p.key(top=True)]
    while lx.maybe_sp():
        preds.append(p.key(top=True))
    lx.end()
    return SearchProgram(_all_of(preds), p.uses_modseq, p.message_id, tuple(p.uid_sets), p.needs_text,
                         p.record_only, all(pred is match_all for pred in preds))


def internal_date_text(when: datetime) -> str:
    """RFC 3501 date-time, English month names whatever the locale."""
    off = when.utcoffset()
    minutes = int(off.total_seconds() // 60) if off is not None else 0
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return (f"{when.day:02d}-{_MONTHS[when.month - 1].capitalize()}-{when.year:04d} "
            f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} {sign}{minutes // 60:02d}{minutes % 60:02d}")
