"""Legal hold and the hidden recoverable-items area: which mailboxes are held, and where the server keeps what
it removes from their view.

Why a separate area and not a folder of the user: a held message must leave the user's view (no IMAP client
may list it, so it is not a mailbox of the store) yet stay with the organisation for eDiscovery, as Exchange's
"Recoverable Items" does. The domain's services object owns one area (`DomainServices.recoverable`, made when
the domain is built), so the Lab and tests reach it as `lab.services(domain).recoverable.items(user)`.

Why the legal-hold rule lives here, in the recall package, and not in fake_servers/policies: the cloud recall
(recall/policy.py) must apply it, and the policies package already depends on this one (policies/recall.py
registers the recall policy; retention applies the same rule; delayed send reads the recall format). Keeping the
rule beside the area it fills lets the dependency run one way only, policies -> recall; the `legal_hold` policy
in policies/legal_hold.py only writes the hold into the audit log.

Config (the domain's `policies` table): `legal_hold = ["bob@corp.example", ...]` (local parts allowed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from recall_lab.fake_servers.store.base import MailStore

#: The setting naming the held mailboxes.
SETTING = "legal_hold"


def held_users(settings: Mapping[str, Any], domain: str) -> frozenset[str]:
    """The held addresses from the domain's settings (a list of addresses or local parts); ValueError if malformed."""
    value = settings.get(SETTING, ()) or ()
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"policies.{SETTING} must be a list of addresses")
    return frozenset((v if "@" in v else f"{v}@{domain}").strip().lower() for v in value)


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

    def preserve_then_expunge(self, store: MailStore, user: str, mailbox: str, uid: int, reason: str
                              ) -> RecoverableItem:
        """Remove a held message from the user's view, keeping it here: the one way the server removes a message
        from a held mailbox (a hold outranks recall and retention)."""
        item = self.preserve(store, user, mailbox, uid, reason)
        store.expunge(user, mailbox, [uid], origin=f"legal-hold:{reason}")
        return item

    def items(self, user: str) -> list[RecoverableItem]:
        """What the server preserved for `user`, oldest first (the Lab's listing)."""
        return list(self._items.get(user.lower(), ()))

    def users(self) -> list[str]:
        return sorted(u for u, items in self._items.items() if items)
