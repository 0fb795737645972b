"""Retention: the server empties Trash when items reach `purge_deleted_after` seconds there.

Config (the domain's `policies` table): `purge_deleted_after = 3600` (seconds; absent: never purge).

Why it matters to recalls: a recalled message must still exist to be recalled. Once retention purged the
original from the recipient's Trash, a cloud recall finds nothing and reports `not-found`. What the purge removes
leaves the user's view only: the store's removal hook hands it to the domain's recoverable-items area (kept for
the deleted item retention period, or for as long as a hold lasts; fake_servers/recall/recoverable.py, owned by
the legal_hold policy), so this policy simply expunges and needs no hold rule of its own.

Why "age in Trash" and not the message's date: the clock starts when the message enters Trash (a store event),
as in Exchange's deleted-item retention. Messages already in Trash when the server starts count from then.
Time is the domain's clock (`services.clock`, passed in when the domain is built: a lab on simulated time gives
its own; a unit test may pass `clock=`), and `await purge_now()` runs one purge, so tests advance time instead
of sleeping; the background task only waits for the next deadline or the next message to enter Trash. The Lab
reaches the running policy through the domain's services: `retention_for(lab.services(domain))`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from recall_lab.fake_servers.background import cancel_and_wait
from recall_lab.fake_servers.pipeline import Delivery, DomainServices, Verdict, register_policy
from recall_lab.fake_servers.store.base import (
    MailboxCreated,
    MailboxDeleted,
    MailboxRenamed,
    MessageAppended,
    MessagesExpunged,
    StoreError,
    StoreEvent,
)

SETTING = "purge_deleted_after"
ORIGIN = "retention"


def retention_for(services: DomainServices) -> RetentionPolicy | None:
    """The domain's retention policy, when it runs one (the Lab and tests call its `purge_now()`)."""
    policy = services.policy(RetentionPolicy.name)
    return policy if isinstance(policy, RetentionPolicy) else None


def purge_after(settings: Mapping[str, Any]) -> float | None:
    value = settings.get(SETTING)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"policies.{SETTING} must be a number of seconds >= 0")
    return float(value)


class RetentionPolicy:
    name = "retention"

    def __init__(self, settings: Mapping[str, Any], services: DomainServices,
                 clock: Callable[[], float] | None = None) -> None:
        """`clock`: seconds by which Trash ages; the domain's (`services.clock`) unless given."""
        self.after = purge_after(settings)
        self._clock = clock if clock is not None else services.clock
        self.services = services
        self.store = services.store
        # (user, mailbox) -> uid -> when it entered Trash (by self.clock)
        self._entered: dict[tuple[str, str], dict[int, float]] = {}
        self._is_trash: dict[tuple[str, str], bool] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def clock(self) -> Callable[[], float]:
        """The clock this policy was built with (read-only: time is passed in, never patched into it)."""
        return self._clock

    async def on_delivery(self, delivery: Delivery, services: DomainServices) -> Verdict:
        return Verdict.CONTINUE

    # -- life cycle -------------------------------------------------------------------------------------

    async def start(self, services: DomainServices) -> None:
        if self.after is None:
            return
        self._wake = asyncio.Event()
        self.store.subscribe(self._on_event)
        now = self.clock()
        for user in self.store.users():
            for info in self.store.list_mailboxes(user):
                if self._trash(user, info.name):
                    self._entered[(user, info.name)] = {r.uid: now for r in self.store.messages(user, info.name)}
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"retention {services.domain}")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
            self.store.unsubscribe(self._on_event)

    # -- tracking what is in Trash ----------------------------------------------------------------------

    def _trash(self, user: str, mailbox: str) -> bool:
        key = (user, mailbox)
        known = self._is_trash.get(key)
        if known is None:
            try:
                known = self.store.mailbox(user, mailbox).special_use == "\\Trash"
            except StoreError:
                known = False
            self._is_trash[key] = known
        return known

    def _on_event(self, event: StoreEvent) -> None:
        if isinstance(event, MessageAppended):
            if self._trash(event.user, event.mailbox):
                self._entered.setdefault((event.user, event.mailbox), {})[event.record.uid] = self.clock()
                if self._wake is not None:
                    self._wake.set()
        elif isinstance(event, MessagesExpunged):
            entered = self._entered.get((event.user, event.mailbox))
            if entered:
                for uid in event.uids:
                    entered.pop(uid, None)
        elif isinstance(event, MailboxCreated | MailboxDeleted | MailboxRenamed):
            for key in [k for k in self._is_trash if k[0] == event.user]:
                del self._is_trash[key]
            for key in [k for k in self._entered if k[0] == event.user and k[1] == event.mailbox]:
                del self._entered[key]

    def next_deadline(self) -> float | None:
        if self.after is None:
            return None
        firsts = [min(entered.values()) for entered in self._entered.values() if entered]
        return min(firsts) + self.after if firsts else None

    # -- purging ----------------------------------------------------------------------------------------

    async def purge_now(self) -> int:
        """Expunge every Trash item that reached the age limit (by `self.clock`); returns how many went."""
        if self.after is None:
            return 0
        now = self.clock()
        purged = 0
        for (user, mailbox), entered in list(self._entered.items()):
            due = sorted(uid for uid, at in entered.items() if now - at >= self.after)
            if not due:
                continue
            for uid in due:
                entered.pop(uid, None)
            try:
                gone = self.store.expunge(user, mailbox, due, origin=ORIGIN)  # the removal hook keeps them
            except StoreError as exc:  # the mailbox went meanwhile; nothing left to purge there
                self.services.log("retention-error", user=user, mailbox=mailbox, error=str(exc))
                continue
            if gone:
                purged += len(gone)
                self.services.log("retention-purge", user=user, mailbox=mailbox, uids=list(gone),
                                  preserved=self.services.recoverable.attached
                                  and self.services.recoverable.settings.keeps(user))
        return purged

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            deadline = self.next_deadline()
            if deadline is None:
                await self._wake.wait()
            else:
                delay = deadline - self.clock()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=delay)
            await self.purge_now()
            await asyncio.sleep(0)  # let other tasks run between purges when items keep arriving


register_policy("retention", RetentionPolicy, default_roles=("organisation",), order=80, settings=(SETTING,))
