"""Recoverable items and legal hold: where an organisation's server keeps what leaves its users' view, and for
how long (Exchange Online's Recoverable Items folder; docs/recall-sources.md section 3, docs/recoverable-items.md).

Why every removal, not only held mailboxes: in Exchange Online single item recovery is on by default, so a
message that leaves a user's view by any path (the user's own client expunging it, a cloud recall, a retention
purge) is kept for the deleted item retention period (14 days by default, at most 30) and then purged; a
mailbox on hold keeps its items with no purge while the hold lasts. The area sees every removal through the
store's removal hook (`MailStore.subscribe_removals`), called before the bytes are gone, so nothing that deletes
mail has to remember to preserve it first: one rule, one home.

Why a separate area and not a folder of the user: the items must be out of the user's view (no IMAP client may
list them, so they are not a mailbox of the store) yet stay with the organisation. The domain's services object
owns one area (`DomainServices.recoverable`), so the Lab and tests reach it as
`lab.services(domain).recoverable.items(user)`. The area starts detached (keeping nothing); the `legal_hold`
policy (fake_servers/policies/legal_hold.py) owns it: it reads the settings, attaches the area to the store and
runs the purge by the domain's clock. The cloud recall (recall/policy.py) only reads the hold list for its
report. The dependency runs one way, policies -> recall.

Config (the domain's `policies` table):
    legal_hold = ["bob@corp.example", ...]   held mailboxes (local parts allowed): no purge while held
    deleted_item_retention_days = 14         1..30 (Exchange: Set-Mailbox -RetainDeletedItemsFor)
    single_item_recovery = true              keep every removal (Set-Mailbox -SingleItemRecoveryEnabled);
                                             false: keep only what held mailboxes lose
    recoverable_items_quota = 104857600      bytes per user (Exchange: 30 GB, 100 GB on hold); over it the
                                             oldest items of a mailbox not on hold go first
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from recall_lab.fake_servers.store.base import MailStore, MessagesRemoving, StoreError

log = logging.getLogger(__name__)

#: The setting naming the held mailboxes.
SETTING = "legal_hold"
RETENTION_SETTING = "deleted_item_retention_days"
SINGLE_ITEM_RECOVERY_SETTING = "single_item_recovery"
QUOTA_SETTING = "recoverable_items_quota"

DEFAULT_RETENTION_DAYS = 14  # Exchange Online's default; allowed 1..30 (docs/recall-sources.md section 3)
MAX_RETENTION_DAYS = 30
DEFAULT_QUOTA_BYTES = 100 * 1024 * 1024  # the lab's cap per user (Exchange: 30 GB, 100 GB on hold)
DAY = 86400.0


def held_users(settings: Mapping[str, Any], domain: str) -> frozenset[str]:
    """The held addresses from the domain's settings (a list of addresses or local parts); ValueError if malformed."""
    value = settings.get(SETTING, ()) or ()
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"policies.{SETTING} must be a list of addresses")
    return frozenset((v if "@" in v else f"{v}@{domain}").strip().lower() for v in value)


@dataclass(frozen=True, slots=True)
class RecoverableSettings:
    """What the area keeps and for how long (immutable; the legal_hold policy builds it from the settings)."""

    retention_days: float = DEFAULT_RETENTION_DAYS
    single_item_recovery: bool = True
    quota_bytes: int = DEFAULT_QUOTA_BYTES
    held: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], domain: str) -> RecoverableSettings:
        days = settings.get(RETENTION_SETTING, DEFAULT_RETENTION_DAYS)
        if isinstance(days, bool) or not isinstance(days, int | float) or not 1 <= days <= MAX_RETENTION_DAYS:
            raise ValueError(f"policies.{RETENTION_SETTING} must be a number of days from 1 to {MAX_RETENTION_DAYS}")
        sir = settings.get(SINGLE_ITEM_RECOVERY_SETTING, True)
        if not isinstance(sir, bool):
            raise ValueError(f"policies.{SINGLE_ITEM_RECOVERY_SETTING} must be true or false")
        quota = settings.get(QUOTA_SETTING, DEFAULT_QUOTA_BYTES)
        if isinstance(quota, bool) or not isinstance(quota, int) or quota <= 0:
            raise ValueError(f"policies.{QUOTA_SETTING} must be a number of bytes > 0")
        return cls(float(days), sir, quota, held_users(settings, domain))

    @property
    def retention_seconds(self) -> float:
        return self.retention_days * DAY

    def holds(self, user: str) -> bool:
        return user.strip().lower() in self.held

    def keeps(self, user: str) -> bool:
        """Whether a removal from this user's mailbox is kept at all."""
        return self.single_item_recovery or self.holds(user)


def reason_for(removing: MessagesRemoving) -> str:
    """Why the items went: the server's own removals name themselves ("recall", "retention"); anything else is
    the user's client (an IMAP session passes itself as origin), or the deletion of a whole mailbox."""
    if isinstance(removing.origin, str) and removing.origin:
        return removing.origin
    return "mailbox-deleted" if removing.cause == "mailbox-deleted" else "client"


@dataclass(frozen=True, slots=True)
class RecoverableItem:
    """One message that left a user's view, with where it was and why it went."""

    user: str
    mailbox: str  # the folder it was removed from
    uid: int  # its UID there
    message_id: str | None
    flags: frozenset[str]
    internaldate: datetime
    raw: bytes
    removed_at: datetime  # wall-clock, for people reading a listing
    reason: str  # "client", "recall", "retention", "mailbox-deleted", or another server origin
    kept_at: float = 0.0  # the domain's clock (seconds) when it was kept: the purge counts from here

    @property
    def size(self) -> int:
        return len(self.raw)


class RecoverableItems:
    """Per-user lists of kept messages, oldest first; bounded by age (purge) and by a per-user byte quota."""

    def __init__(self) -> None:
        self._items: dict[str, list[RecoverableItem]] = {}
        self._bytes: dict[str, int] = {}
        self._store: MailStore | None = None
        self.settings = RecoverableSettings()
        self._clock: Callable[[], float] = lambda: 0.0
        self._log: Callable[..., None] | None = None
        self._notify: Callable[[], None] | None = None

    # -- wiring (the legal_hold policy) ---------------------------------------------------------------------

    def attach(self, store: MailStore, settings: RecoverableSettings, clock: Callable[[], float], *,
               log_event: Callable[..., None] | None = None, notify: Callable[[], None] | None = None) -> None:
        """Keep what leaves `store`'s mailboxes from now on, under `settings`, aging by `clock` (seconds).
        `notify()` is called after an item was kept (the purge task waits for it)."""
        self.detach()
        self._store = store
        self.settings = settings
        self._clock = clock
        self._log = log_event
        self._notify = notify
        store.subscribe_removals(self.on_removal)

    def detach(self) -> None:
        """Stop keeping new removals (what is kept stays)."""
        if self._store is not None:
            self._store.unsubscribe_removals(self.on_removal)
            self._store = None
            self._notify = None

    @property
    def attached(self) -> bool:
        return self._store is not None

    def holds(self, user: str) -> bool:
        """Whether `user`'s mailbox is on hold (its items are never purged while it is)."""
        return self.settings.holds(user)

    # -- keeping --------------------------------------------------------------------------------------------

    def on_removal(self, removing: MessagesRemoving) -> None:
        """The store's removal hook: copy each message before it goes (see MailStore.subscribe_removals)."""
        user = removing.user.lower()
        if not self.settings.keeps(user):
            return
        reason = reason_for(removing)
        now = datetime.now(UTC)
        at = self._clock()
        kept = self._items.setdefault(user, [])
        for record in removing.records:
            try:
                raw = removing.read(record.uid)
            except StoreError as exc:  # the file vanished behind the store's back: nothing left to keep
                log.warning("recoverable items: %s/%s UID %s not kept: %s", user, removing.mailbox, record.uid, exc)
                continue
            kept.append(RecoverableItem(user=user, mailbox=removing.mailbox, uid=record.uid,
                                        message_id=record.message_id, flags=record.flags,
                                        internaldate=record.internaldate, raw=raw, removed_at=now, reason=reason,
                                        kept_at=at))
            self._bytes[user] = self._bytes.get(user, 0) + len(raw)
        self._enforce_quota(user)
        if self._notify is not None:
            self._notify()

    def _enforce_quota(self, user: str) -> None:
        """Over the quota, the oldest items go first, unless the mailbox is on hold (a hold outranks the cap)."""
        if self.holds(user):
            return
        kept = self._items.get(user, [])
        dropped = 0
        while kept and self._bytes.get(user, 0) > self.settings.quota_bytes:
            item = kept.pop(0)
            self._bytes[user] -= item.size
            dropped += 1
        if dropped and self._log is not None:
            self._log("recoverable-quota", user=user, dropped=dropped, quota=self.settings.quota_bytes)

    # -- purging --------------------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When (by the domain's clock) the next item of a mailbox not on hold is due to be purged."""
        firsts = [min(item.kept_at for item in items) for user, items in self._items.items()
                  if items and not self.holds(user)]
        return min(firsts) + self.settings.retention_seconds if firsts else None

    def purge_due(self) -> int:
        """Purge every item kept for the retention period or longer (mailboxes on hold keep theirs); how many."""
        now = self._clock()
        limit = self.settings.retention_seconds
        purged = 0
        for user, items in self._items.items():
            if self.holds(user) or not items:
                continue
            keep = [item for item in items if now - item.kept_at < limit]
            gone = len(items) - len(keep)
            if gone:
                items[:] = keep
                self._bytes[user] = sum(item.size for item in keep)
                purged += gone
                if self._log is not None:
                    self._log("recoverable-purge", user=user, purged=gone)
        return purged

    # -- listing --------------------------------------------------------------------------------------------

    def items(self, user: str) -> list[RecoverableItem]:
        """What the server keeps for `user`, oldest first (the Lab's listing)."""
        return list(self._items.get(user.lower(), ()))

    def size(self, user: str) -> int:
        """Bytes kept for `user` (what counts toward the quota)."""
        return self._bytes.get(user.lower(), 0)

    def users(self) -> list[str]:
        return sorted(u for u, items in self._items.items() if items)
