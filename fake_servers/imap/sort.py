"""SORT (RFC 5256): ordering the messages a search selects by one or more keys.

Why here and so small: clients (and imapclient's live test) use SORT when the server offers it; the keys need
only what SEARCH already reads (the record and the cached MessageView), so sorting is a key function.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.utils import getaddresses
from typing import Any

from .errors import ParseError
from .search import Msg

_KEYS = ("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO")
_SUBJECT_PREFIX = re.compile(r"^(\s*(re|fwd?)\s*(\[[^\]]*\])?\s*:|\s*\[[^\]]*\]\s*)", re.IGNORECASE)
_SUBJECT_TRAILER = re.compile(r"(\s*\(fwd\))+\s*$", re.IGNORECASE)


def base_subject(subject: str) -> str:
    """RFC 5256 2.1 base subject, simplified: no Re:/Fwd:/[list] prefixes, no (fwd) trailers, folded space."""
    text = " ".join(subject.split())
    while True:
        new = _SUBJECT_TRAILER.sub("", text)
        new = _SUBJECT_PREFIX.sub("", new).strip()
        if new.lower().startswith("[fwd:") and new.endswith("]"):
            new = new[5:-1].strip()
        if new == text:
            return text.casefold()
        text = new


def _first_mailbox(m: Msg, header: str) -> str:
    addresses = getaddresses(m.view().header_values(header))
    for _, addr in addresses:
        if addr:
            return addr.partition("@")[0].casefold()
    return ""


def _key(name: str) -> Callable[[Msg], Any]:
    if name == "ARRIVAL":
        return lambda m: m.record.internaldate.timestamp()
    if name == "SIZE":
        return lambda m: m.record.size
    if name == "DATE":
        return lambda m: (m.view().sent_date() or m.record.internaldate.date()).toordinal()
    if name == "SUBJECT":
        return lambda m: base_subject(" ".join(m.view().header_values("Subject")))
    return lambda m: _first_mailbox(m, name.capitalize())


class _Reverse:
    """Inverts the order of any comparable value (REVERSE applies to one key)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Reverse) -> bool:
        return other.value < self.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reverse) and other.value == self.value


def parse_criteria(words: list[str]) -> Callable[[Msg], tuple]:
    """(REVERSE SIZE SUBJECT ...) -> a sort key; ties fall back to the sequence number."""
    keys: list[Callable[[Msg], Any]] = []
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
        fn = _key(name)
        keys.append((lambda f: (lambda m: _Reverse(f(m))))(fn) if reverse else fn)
        reverse = False
    if reverse or not keys:
        raise ParseError("sort criteria must end with a key")
    return lambda m: tuple(k(m) for k in keys) + (m.seq,)
