"""The SORT and THREAD keys of each message, computed once and kept in a bounded cache shared by sessions.

Why: SORT and THREAD over a mailbox read every message's header (subject, Date, addresses, Message-ID,
References). Parsing 10,000 headers costs about half a second; the parsed messages (MessageView) do not stay
in the ViewCache, whose byte budget holds whole messages, so every SORT parsed them again. A message's keys
are a few hundred bytes: keeping them makes a second SORT/THREAD a sort of cached values, as a server with
an index answers.

What is kept: the values sort.py and thread.py derive from the top header, with their functions (one parser
per meaning: the MessageView's header fields and ENVELOPE): the base subject and its reply mark, the Date
header's instant, the first address of From/To/Cc as RFC 5256 and RFC 5957 sort them, Message-ID and
References. Size and arrival are not: the store's record has them at no cost. The addresses are filled
when a command first needs them (a SORT by SUBJECT does not parse the ENVELOPE); the ids always are, as they
cost little once the header is read, so a THREAD after a SORT reads no header again.

Why the key is safe: entries are keyed as the ViewCache keys its views, (user, mailbox, UIDVALIDITY, UID).
A message's content never changes under its UID (IMAP: UID and UIDVALIDITY name one message for good, only
flags change); the store gives a mailbox created again (even within the same second) a UIDVALIDITY above any
it gave before and carries its UIDNEXT over, so no key is ever reused for other content; a renamed mailbox
keeps its UIDVALIDITY and messages under a new name, which is a new key. One cache serves one server (one
store): it hangs off the server's ViewCache.

Why bounded by count and by bytes, least recently used first: a key holds text a client controls (a subject
or References of up to MimeLimits.max_value_bytes), so a count alone would let hostile headers pin memory.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

from ..store.base import NoSuchMessage
from .sort import ascii_casemap, base_subject_info, display_key, first_mailbox_key, header_date

#: At most this many ids of one message's References count: the first and the last MAX_REFERENCES - 1.
MAX_REFERENCES = 100

#: Which optional key groups a command may ask for.
ADDRESSES = "addresses"
IDS = "ids"

#: The groups read with the subject and date whatever a command asks for (cheap once the header is parsed).
_ALWAYS = frozenset({IDS})

#: What one entry costs beyond its strings (the object, its slots, the cache's bookkeeping), roughly.
_ENTRY_OVERHEAD = 400
_STRING_OVERHEAD = 50

_MSG_ID = re.compile(r"<([^>]*)>")
_COMMENT = re.compile(r"\([^()]*\)")
_BLANK = re.compile(r"[ \t\r\n]+")


def message_ids(value: str) -> list[str]:
    """The valid msg-ids of a header value, in order, without angle brackets: an id needs an "@" with text
    on both sides; comments, blanks (folding) and the quotes around a quoted local part are dropped, and ids
    are then compared as written."""
    found = []
    for m in _MSG_ID.finditer(value):
        text = m.group(1)
        if "(" in text:
            text = _COMMENT.sub("", text)
        text = _BLANK.sub("", text)
        if text.startswith('"') and '"@' in text:
            local, _, domain = text[1:].partition('"@')
            text = f"{local}@{domain}"
        if "@" in text and text[0] != "@" and text[-1] != "@":
            found.append(text)
    return found


def trim_references(refs: list[str]) -> list[str]:
    """At most MAX_REFERENCES ids: the first (the thread's start) and the last ones (its nearest
    ancestors)."""
    if len(refs) <= MAX_REFERENCES:
        return refs
    return refs[:1] + refs[-(MAX_REFERENCES - 1):]


class SortKeys(NamedTuple):
    """One message's sort and thread keys. `addresses` stays None and `ids` False until a command needs them.

    Why a tuple of plain values: it is immutable (filling a group makes a new one) and holds no container
    the garbage collector must follow, so CPython stops tracking it: 10,000 cached keys add nothing to the
    full collections that a server's allocations trigger."""

    subject: str | None  # the first Subject, RFC 2047-decoded; None without one
    base: bytes  # i;ascii-casemap form of the RFC 5256 base subject
    reply: bool  # the subject marked a reply or forward
    date: float | None  # the first Date header's instant; None: none readable (INTERNALDATE counts)
    #: FROM, TO, CC (first addr-mailbox), DISPLAYFROM, DISPLAYTO (RFC 5957), all i;ascii-casemap
    addresses: tuple[bytes, bytes, bytes, bytes, bytes] | None
    ids: bool  # message_id and references are filled
    message_id: str | None
    references: tuple[str, ...]  # References, else the first In-Reply-To id; trimmed
    weight: int  # what the entry costs the cache, roughly (bytes)

    def has(self, groups: frozenset[str]) -> bool:
        return (ADDRESSES not in groups or self.addresses is not None) and (IDS not in groups or self.ids)

    def fill(self, view: Any, groups: frozenset[str]) -> SortKeys:
        """These keys with the groups not yet here computed from `view` (a MessageView)."""
        keys = self
        if ADDRESSES in groups and keys.addresses is None:
            addresses = (first_mailbox_key(view, "FROM"), first_mailbox_key(view, "TO"),
                         first_mailbox_key(view, "CC"), display_key(view, "FROM"), display_key(view, "TO"))
            keys = keys._replace(addresses=addresses,
                                 weight=keys.weight + sum(_STRING_OVERHEAD + len(a) for a in addresses))
        if IDS in groups and not keys.ids:
            found = message_ids(next(iter(view.header_values("Message-ID")), ""))
            message_id = found[0] if found else None
            refs = message_ids(next(iter(view.header_values("References")), ""))
            if not refs:
                refs = message_ids(next(iter(view.header_values("In-Reply-To")), ""))[:1]
            references = tuple(trim_references(refs))
            grown = sum(_STRING_OVERHEAD + len(r) for r in references)
            grown += _STRING_OVERHEAD + len(message_id or "")
            keys = keys._replace(ids=True, message_id=message_id, references=references,
                                 weight=keys.weight + grown)
        return keys


def keys_of_view(view: Any, groups: frozenset[str] = frozenset()) -> SortKeys:
    """A message's keys, computed from its MessageView."""
    subjects = view.header_values("Subject")  # already RFC 2047-decoded and unfolded
    subject = subjects[0] if subjects else None
    if subject is None:
        base, reply = b"", False
    else:
        text, reply = base_subject_info(subject)
        base = ascii_casemap(text)
    weight = _ENTRY_OVERHEAD + 2 * (_STRING_OVERHEAD + len(subject or ""))
    keys = SortKeys(subject, base, reply, header_date(view), None, False, None, (), weight)
    return keys.fill(view, groups | _ALWAYS)


#: The keys of a message that went away before its keys could be read: sorted by what the record says.
GONE = SortKeys(None, b"", False, None, (b"", b"", b"", b"", b""), True, None, (), 0)


class SortKeyCache:
    """SortKeys by message key, least recently used dropped first when there are more than `size` of them or
    they weigh more than `max_bytes` together (the most recently used one is never dropped)."""

    def __init__(self, size: int = 200_000, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self._keys: OrderedDict[tuple, SortKeys] = OrderedDict()
        self._total = 0
        #: how many times keys were computed (a step that computed some parsed a header: time to yield)
        self.computed = 0

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def total_weight(self) -> int:
        return self._total

    def get(self, key: tuple, view: Callable[[tuple], Any], groups: frozenset[str] = frozenset()) -> SortKeys:
        """The keys of the message `key` names, with `groups`; `view(key)` gives its MessageView when they
        must be computed (it may raise NoSuchMessage: the message is gone, GONE answers, nothing is kept)."""
        entries = self._keys
        keys = entries.get(key)
        if keys is not None:
            entries.move_to_end(key)
            if keys.addresses is not None or ADDRESSES not in groups:  # has(groups) inlined (ids: always)
                return keys
        try:
            keys = keys_of_view(view(key), groups) if keys is None else keys.fill(view(key), groups)
        except NoSuchMessage:
            return GONE
        self.computed += 1
        old = entries.get(key)
        if old is not None:
            self._total -= old.weight
        entries[key] = keys
        self._total += keys.weight
        self._evict()
        return keys

    def cached(self, keys: list[tuple], groups: frozenset[str] = frozenset()) -> list[SortKeys | None]:
        """For each of `keys`, its SortKeys when they are cached with `groups`, else None (`get` computes
        those), each found one marked recently used: what a warm SORT of a whole mailbox needs, in a few
        C-level passes instead of a call per message."""
        entries = self._keys
        found = [entries.get(k) for k in keys]
        move = entries.move_to_end
        for k, v in zip(keys, found, strict=True):
            if v is not None:
                move(k)
        if ADDRESSES in groups:
            found = [v if v is not None and v.addresses is not None else None for v in found]
        return found

    def _evict(self) -> None:
        entries = self._keys
        while len(entries) > 1 and (len(entries) > self.size or self._total > self.max_bytes):
            _, old = entries.popitem(last=False)
            self._total -= old.weight

    def clear(self) -> None:
        self._keys.clear()
        self._total = 0


__all__ = ["ADDRESSES", "GONE", "IDS", "MAX_REFERENCES", "SortKeyCache", "SortKeys", "keys_of_view",
           "message_ids", "trim_references"]
