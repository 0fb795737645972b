"""The hidden recoverable-items area: where a mailbox under legal hold keeps what the server removed from view.

Why a separate area and not a folder of the user: a held message must leave the user's view (no IMAP client
may list it, so it is not a mailbox of the store) yet stay with the organisation for eDiscovery, as Exchange's
"Recoverable Items" does. The area hangs off the domain's store (one per store, created on first use), so the
Lab and tests reach it with only the store's public object: `recoverable_items(lab.store(domain), user)`.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from datetime import UTC, datetime

from fake_servers.store.base import MailStore


@dataclass(frozen=True, slots=True)
class RecoverableItem:
    """One message the server took out of a held mailbox, with where it was and why it went."""

    user: str
    mailbox: str  # the folder it was removed from
    uid: int  # its UID there
    message_id: str | None
    flags: frozenset[str]
    internaldate: datetime
    raw: bytes
    removed_at: datetime
    reason: str  # "recall" or "retention"


class RecoverableItems:
    """Per-user lists of preserved messages; append-only (nothing in the lab purges a hold)."""

    def __init__(self) -> None:
        self._items: dict[str, list[RecoverableItem]] = {}

    def preserve(self, store: MailStore, user: str, mailbox: str, uid: int, reason: str) -> RecoverableItem:
        """Copy one message out of the store into the area (call it before expunging the message)."""
        record = store.get(user, mailbox, uid)
        item = RecoverableItem(user=user.lower(), mailbox=mailbox, uid=uid, message_id=record.message_id,
                               flags=record.flags, internaldate=record.internaldate,
                               raw=store.fetch_raw(user, mailbox, uid), removed_at=datetime.now(UTC),
                               reason=reason)
        self._items.setdefault(item.user, []).append(item)
        return item

    def items(self, user: str) -> list[RecoverableItem]:
        return list(self._items.get(user.lower(), ()))

    def users(self) -> list[str]:
        return sorted(u for u, items in self._items.items() if items)


_AREAS: weakref.WeakKeyDictionary[MailStore, RecoverableItems] = weakref.WeakKeyDictionary()


def recoverable_area(store: MailStore) -> RecoverableItems:
    """The area of this store, created on first use (it lives as long as the store)."""
    area = _AREAS.get(store)
    if area is None:
        area = _AREAS[store] = RecoverableItems()
    return area


def recoverable_items(store: MailStore, user: str) -> list[RecoverableItem]:
    """What the server preserved for `user` under legal hold, oldest first (the Lab's listing)."""
    area = _AREAS.get(store)
    return [] if area is None else area.items(user)
