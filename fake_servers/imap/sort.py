"""SORT (RFC 5256): ordering the messages a search selects by one or more keys.

Why here and so small: clients (and imapclient's live test) use SORT when the server offers it; the keys need
only what SEARCH already reads (the record and the cached MessageView), so sorting is a key function.
Strings are compared with i;ascii-casemap (RFC 4790: ASCII letters upper-cased, then octet by octet), the
collation RFC 5256 names (so "_" sorts after every letter, as it would not with lower-casing); ties fall
back to the sequence number, to which REVERSE does not apply. DISPLAYFROM and DISPLAYTO (RFC 5957,
SORT=DISPLAY) order by what a client shows for the first address: its display name, else its address.
The base subject is THREAD's too (thread.py), with whether the subject marked a reply. The keys are read
once per message and cached (sort_keys.py), so a sort reads cached values, not headers.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from .errors import ParseError
from .mime.text import decode_words
from .search import Msg, envelope_addresses

if TYPE_CHECKING:
    from .sort_keys import SortKeys

_KEYS = ("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO")

#: How many criteria one SORT may name (each key once, with REVERSE: anything longer is not a real request).
MAX_CRITERIA = 32

# RFC 5256 section 5 (ABNF), after step (1) has turned every run of blanks into one SP:
#   subj-blob   = "[" *BLOBCHAR "]" *WSP          BLOBCHAR: any CHAR except "[" and "]"
#   subj-refwd  = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
#   subj-leader = (*subj-blob subj-refwd) / WSP
_BLOB = r"\[[^\[\]\x00]*\] *"
_SUBJ_BLOB = re.compile(_BLOB)
_SUBJ_LEADER = re.compile(rf"(?:{_BLOB})*(?:re|fwd?) *(?:{_BLOB})?:| ", re.IGNORECASE | re.ASCII)
_SUBJ_FWD_HDR = re.compile(r"\[fwd:", re.IGNORECASE | re.ASCII)
_SUBJ_TRAILER = re.compile(r"\(fwd\)", re.IGNORECASE | re.ASCII)
_BLANKS = re.compile(r"[ \t\r\n]+")


def base_subject(subject: str) -> str:
    """The RFC 5256 section 2.1 base subject of an already RFC 2047-decoded subject (steps 1 to 7)."""
    return base_subject_info(subject)[0]


def base_subject_info(subject: str) -> tuple[str, bool]:
    """The base subject, and whether the subject marked a reply or forward (a "re:"/"fw:"/"fwd:" leader, a
    "(fwd)" trailer or a "[fwd: ...]" wrapper was removed): THREAD=REFERENCES (RFC 5256 section 4, step 5)
    needs both.

    Why positions instead of slicing: each step only moves `start` or `end`, so a hostile subject of
    thousands of "[x]" blobs or nested "[fwd: ...]" costs linear time, not quadratic.
    """
    text = _BLANKS.sub(" ", subject)  # (1) tabs, continuations and runs of blanks become one space
    start, end = 0, len(text)
    reply = False
    while True:
        # (2) remove subj-trailers ("(fwd)" or WSP) from the end, as long as there are any
        while end > start:
            if text[end - 1] == " ":
                end -= 1
            elif end - start >= 5 and _SUBJ_TRAILER.match(text, end - 5, end):
                end -= 5
                reply = True
            else:
                break
        # (3) remove subj-leaders; (4) remove a leading subj-blob if a non-empty subj-base is left; (5) repeat.
        # Once (3) fails at a blob, it fails after each blob (4) removes (a leader there would have been a
        # leader before it too), so (4) then runs alone.
        while (m := _SUBJ_LEADER.match(text, start, end)) is not None:
            reply = reply or m.end() - start > 1  # more than the lone WSP leader: a subj-refwd
            start = m.end()
        while (m := _SUBJ_BLOB.match(text, start, end)) is not None and m.end() < end:
            start = m.end()
        # (6) "[fwd:" subject "]": unwrap and go back to (2)
        if end - start >= 6 and text[end - 1] == "]" and _SUBJ_FWD_HDR.match(text, start, end):
            start += 5
            end -= 1
            reply = True
            continue
        return text[start:end], reply  # (7)


def ascii_casemap(text: str) -> bytes:
    """The i;ascii-casemap sort key of a string: its UTF-8 octets with a-z upper-cased."""
    return text.encode("utf-8", "surrogateescape").upper()


def first_mailbox_key(view: Any, header: str) -> bytes:
    """RFC 5256: the addr-mailbox of the first address; for a group, the group name (the ENVELOPE's group
    start carries it in the mailbox field). Empty when there is no such address."""
    addresses = envelope_addresses(view, header)
    if not addresses:
        return b""
    mailbox = addresses[0][2]
    if mailbox is None or mailbox == "MISSING_MAILBOX":
        return b""
    return ascii_casemap(mailbox)


def display_key(view: Any, header: str) -> bytes:
    """RFC 5957 (SORT=DISPLAY) section 3: the sort value of the first address of From or To: its display
    name (RFC 2047-decoded) when that is not empty, else `mailbox@host`, else the mailbox alone (for a group,
    the group name, which the ENVELOPE's group start carries there); empty when there is no address. The
    parts are the ENVELOPE's, placeholders included (`d` is `d@MISSING_DOMAIN`), as Dovecot sorts them."""
    addresses = envelope_addresses(view, header)
    if not addresses:
        return b""
    name, _route, mailbox, host = addresses[0]
    display = decode_words(name) if name else ""
    if not display:
        display = f"{mailbox}@{host}" if mailbox is not None and host is not None else mailbox or ""
    return ascii_casemap(display)


def header_date(view: Any) -> float | None:
    """The first Date: header as an instant (UTC; a zone-less date counts as UTC), None when there is no
    Date: header or it cannot be read."""
    values = view.header_values("Date")
    if values:
        try:
            when = parsedate_to_datetime(values[0])
        except (TypeError, ValueError, IndexError, OverflowError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            try:
                return when.timestamp()
            except (OverflowError, ValueError, OSError):
                pass
    return None


def sent_time(m: Msg) -> float:
    """RFC 5256 2.2 sent date: the first Date: header as an instant, or INTERNALDATE when there is no Date:
    header or it cannot be read."""
    when = header_date(m.view())
    return instant(m.record.internaldate) if when is None else when


def instant(when: datetime) -> float:
    """A datetime as seconds since the epoch (a zone-less one counts as UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


_ADDRESS_SLOT = {"FROM": 0, "TO": 1, "CC": 2, "DISPLAYFROM": 3, "DISPLAYTO": 4}


def _column(name: str, records: list[Any], cached: list[SortKeys]) -> list[Any]:
    """One sort key's values for a list of messages, from their records and cached keys (sort_keys.py): a
    comprehension per key, no call per message."""
    if name == "SUBJECT":
        return [k.base for k in cached]
    if name == "DATE":
        return [instant(r.internaldate) if k.date is None else k.date for r, k in zip(records, cached, strict=True)]
    if name == "ARRIVAL":
        return [instant(r.internaldate) for r in records]
    if name == "SIZE":
        return [r.size for r in records]
    slot = _ADDRESS_SLOT[name]
    return [k.addresses[slot] for k in cached]


class SortProgram:
    """A parsed sort criteria list: `order` sorts messages by it; `groups` are the optional key groups
    (sort_keys.py) it reads."""

    __slots__ = ("criteria", "groups")

    def __init__(self, criteria: list[tuple[str, bool]], groups: frozenset[str]) -> None:
        self.criteria = criteria  # (key name, reversed)
        self.groups = groups

    def order(self, hits: list[tuple[int, int]], records: list[Any], cached: list[SortKeys]
              ) -> list[tuple[int, int]]:
        """`hits` ((sequence number, UID) pairs, in sequence order) sorted by the criteria, ties by sequence
        number; `records` and `cached` are the hits' MessageRecords and keys, in the same order.

        Why one stable sort per criterion, the last first: each keeps the order the later criteria (and,
        under them all, the sequence numbers) gave to equal values, REVERSE included (a reversed stable sort
        keeps equal items in order). No row tuple or wrapper is made per message."""
        index = list(range(len(hits)))
        for name, reverse in reversed(self.criteria):
            index.sort(key=_column(name, records, cached).__getitem__, reverse=reverse)
        return [hits[i] for i in index]


def parse_criteria(words: list[str], max_criteria: int = MAX_CRITERIA) -> SortProgram:
    """(REVERSE SIZE SUBJECT ...) -> a sort program."""
    if len(words) > max_criteria:
        raise ParseError(f"too many sort criteria (at most {max_criteria})")
    criteria: list[tuple[str, bool]] = []
    groups: set[str] = set()
    reverse = False
    for word in words:
        name = word.upper()
        if name == "REVERSE":
            if reverse:
                raise ParseError("REVERSE twice")
            reverse = True
            continue
        if name not in _KEYS:
            raise ParseError(f"unknown sort key {word[:20]}")
        if name in _ADDRESS_SLOT:
            groups.add("addresses")  # sort_keys.ADDRESSES
        criteria.append((name, reverse))
        reverse = False
    if reverse or not criteria:
        raise ParseError("sort criteria must end with a key")
    return SortProgram(criteria, frozenset(groups))
