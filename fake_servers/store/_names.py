"""Mailbox and user names: the one place that decides which spellings name the same thing.

Why its own module: IMAP, delivery and both store implementations must agree that "inbox", "Inbox/x" and
"INBOX/x" are the same mailboxes, and which names are refused, or a mailbox could be created twice.
"""

from __future__ import annotations

from recall_lab.fake_servers.store.base import SEPARATOR, StoreError

INBOX = "INBOX"

#: Characters no mailbox name may hold: IMAP LIST wildcards and control characters (they cannot be listed
#: or typed back by a client).
_FORBIDDEN = frozenset("*%") | frozenset(chr(c) for c in range(0x20)) | {"\x7f"}


def user_key(user: str) -> str:
    """The stored spelling of a user: the full address in lower case, as `recall_lab.fake_servers.accounts` keeps it."""
    return user.strip().lower()


#: Names already checked and spelled (every store call names its mailbox: FETCH 1:* of a header section asks
#: for 10,000 messages of the same one); started over when it grows past this.
_CANONICAL_CACHE = 4096
_canonical: dict[str, str] = {}


def canonical(name: str) -> str:
    """The stored spelling of a mailbox name; raises StoreError for a name no mailbox may have.

    INBOX is case-insensitive, also as the first component of a child ("inbox/x" is "INBOX/x"); one trailing
    separator is dropped (RFC 3501 CREATE "foo/").
    """
    if type(name) is str:
        known = _canonical.get(name)
        if known is not None:
            return known
    spelled = _spell(name)
    if len(_canonical) >= _CANONICAL_CACHE:
        _canonical.clear()
    _canonical[name] = spelled
    return spelled


def _spell(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise StoreError("Mailbox name is empty")
    if name.endswith(SEPARATOR) and len(name) > 1:
        name = name[:-1]
    bad = _FORBIDDEN.intersection(name)
    if bad:
        raise StoreError(f"Mailbox name may not contain {''.join(sorted(bad))!r}")
    parts = name.split(SEPARATOR)
    if any(part == "" for part in parts):
        raise StoreError(f"Mailbox name {name!r} has an empty hierarchy level")
    if parts[0].upper() == INBOX:
        parts[0] = INBOX
    return SEPARATOR.join(parts)


def parents(name: str) -> list[str]:
    """Every ancestor of a canonical name, outermost first: "a/b/c" -> ["a", "a/b"]."""
    parts = name.split(SEPARATOR)
    return [SEPARATOR.join(parts[:i]) for i in range(1, len(parts))]


def is_descendant(name: str, ancestor: str) -> bool:
    return name.startswith(ancestor + SEPARATOR)


def sort_key(name: str) -> tuple[int, str]:
    """INBOX first, then by name (the order `list_mailboxes` promises)."""
    return (0 if name == INBOX else 1, name)
