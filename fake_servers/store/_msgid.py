"""Finding a message's Message-ID quickly, and the per-user index that maps it to where the message is.

Why not `email.parser`: delivery of 100k messages must stay fast, and the index needs one header only; a
regular expression over the header block (up to the first empty line) is about twenty times cheaper than a
full header parse and gives the same value for any well-formed header (folding is unfolded).
"""

from __future__ import annotations

import re

from recall_lab.fake_servers.store.base import MessageLocation

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_MESSAGE_ID = re.compile(rb"^message-id[ \t]*:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


def header_block(raw: bytes) -> bytes:
    end = _HEADER_END.search(raw)
    return raw if end is None else raw[: end.start()]


def extract_message_id(raw: bytes) -> str | None:
    """The first Message-ID header's value, unfolded and stripped, angle brackets kept; None if absent."""
    match = _MESSAGE_ID.search(header_block(raw))
    if match is None:
        return None
    value = re.sub(rb"\r?\n[ \t]", b" ", match.group(1)).strip()
    if not value:
        return None
    return value.decode("utf-8", errors="replace")


def id_key(message_id: str) -> str:
    """The form Message-IDs are compared in: surrounding space and one pair of angle brackets removed."""
    key = message_id.strip()
    if key.startswith("<") and key.endswith(">"):
        key = key[1:-1].strip()
    return key


class MessageIdIndex:
    """One user's Message-ID -> locations map; every lookup and update is a dict operation (O(1)).

    Locations per id are kept as an insertion-ordered dict used as a set; a lookup returns them sorted so
    both store implementations answer in the same order.
    """

    __slots__ = ("_by_id",)

    def __init__(self) -> None:
        self._by_id: dict[str, dict[tuple[str, int], None]] = {}

    def add(self, message_id: str | None, mailbox: str, uid: int) -> None:
        if message_id is None:
            return
        key = id_key(message_id)
        if key:
            self._by_id.setdefault(key, {})[(mailbox, uid)] = None

    def remove(self, message_id: str | None, mailbox: str, uid: int) -> None:
        if message_id is None:
            return
        key = id_key(message_id)
        places = self._by_id.get(key)
        if places is None:
            return
        places.pop((mailbox, uid), None)
        if not places:
            del self._by_id[key]

    def find(self, message_id: str) -> list[MessageLocation]:
        places = self._by_id.get(id_key(message_id))
        if not places:
            return []
        return [MessageLocation(mailbox, uid) for mailbox, uid in sorted(places)]

    def __len__(self) -> int:
        return len(self._by_id)
