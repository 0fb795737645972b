"""Delayed send: a submitted message waits N seconds in the sender's Outbox, where she can still cancel it.

Why this is the article's recommendation: a recall races the recipient and usually loses; a message that has
not left yet cannot be read by anyone, so cancelling it always works. Within the window the message is held by
the pipeline (`Verdict.HOLD`) and a copy sits in the sender's `Outbox` folder; deleting that copy over IMAP (or
moving it away, as Outlook does when you drag it to Drafts) cancels the send. When the window ends the policy
removes the Outbox copy and releases the delivery (Sent copy, local INBOXes, relay) exactly as if it had just
been submitted.

Settings (the domain's `policies` table):
    delayed_send_seconds = 30      # absent or 0: no delay (`delayed_send = 30` is accepted as an alias)

What is held: mail submitted by an authenticated user (channel "submission"). Machine messages carrying recall
headers (recall instructions, notices) are not held: delaying a recall or its notice helps nobody.

Cancelling races nothing: the store tells this policy of the Outbox expunge synchronously, inside the user's
IMAP command, so the delivery is discarded before the command is even answered; once released, the Outbox copy
is gone, and there is nothing left to delete. Time is the domain's clock (`services.clock`, passed in when the
domain is built; a unit test may pass `clock=`), and `await release_due()` releases what is due by it, so tests
advance a clock instead of sleeping.

Lab API (besides IMAP): `delayed_send_for(lab.services(domain))` -> the policy (the domain's services know its
policies); `.pending()` lists what is held,
`.cancel(message_id_or_queue_id)` cancels like deleting from the Outbox, `await .release_now(key)` ends the
window at once ("send now"; simulated-time trials end the window at their planned instant with it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from recall_lab.fake_servers.background import cancel_and_wait
from recall_lab.fake_servers.pipeline import Delivery, DomainServices, Verdict, register_policy
from recall_lab.fake_servers.recall.format import (
    HEADER_MESSAGE_ID,
    HEADER_NOTICE,
    HEADER_REPORT,
    has_recall_headers,
)
from recall_lab.fake_servers.smtp import headers
from recall_lab.fake_servers.store.base import (
    MailboxDeleted,
    MailboxRenamed,
    MessagesExpunged,
    NoSuchMailbox,
    StoreError,
    StoreEvent,
)

SETTING = "delayed_send_seconds"
ALIAS = "delayed_send"
OUTBOX = "Outbox"
ORIGIN = "delayed-send"
#: The fields that mark a machine message of the recall protocol (never held): a recall, a notice, a report.
_MACHINE_FIELDS = frozenset(name.lower().encode() for name in (HEADER_MESSAGE_ID, HEADER_NOTICE, HEADER_REPORT))


def delayed_send_for(services: DomainServices) -> DelayedSendPolicy | None:
    """The domain's delayed-send policy, when it runs one (the Lab and tests list, cancel and release through it)."""
    policy = services.policy(DelayedSendPolicy.name)
    return policy if isinstance(policy, DelayedSendPolicy) else None


def delay_from(settings: Mapping[str, Any]) -> float:
    """The window in seconds: `delayed_send_seconds`, or its short alias `delayed_send`; 0 when neither is set."""
    name = SETTING if SETTING in settings else ALIAS
    value = settings.get(name, 0)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"policies.{name} must be a number of seconds >= 0")
    return float(value)


@dataclass
class Pending:
    queue_id: str
    user: str  # the sender (the authenticated user), whose Outbox holds the copy
    outbox_uid: int
    message_id: str | None
    due: float  # by the policy's clock


def _is_recall_machine_message(raw: bytes) -> bool:
    """Whether the header block has a recall, notice or report field (the recall format's names and reader)."""
    if not has_recall_headers(raw):  # ordinary mail: one cheap look
        return False
    head, _body = headers.split_message(raw)
    return any(name in _MACHINE_FIELDS for name in headers.field_names(head))


class DelayedSendPolicy:
    name = "delayed_send"

    def __init__(self, settings: Mapping[str, Any], services: DomainServices,
                 clock: Callable[[], float] | None = None) -> None:
        """`clock`: seconds by which the window runs; the domain's (`services.clock`) unless given."""
        self.delay = delay_from(settings)
        self.services = services
        self.store = services.store
        self._clock = clock if clock is not None else services.clock
        self._pending: dict[str, Pending] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._subscribed = False

    @property
    def clock(self) -> Callable[[], float]:
        """The clock this policy was built with (read-only: time is passed in, never patched into it)."""
        return self._clock

    # -- the hook ---------------------------------------------------------------------------------------

    async def on_delivery(self, delivery: Delivery, services: DomainServices) -> Verdict:
        if (self.delay <= 0 or delivery.channel != "submission" or not delivery.auth_user
                or not services.user_exists(delivery.auth_user) or _is_recall_machine_message(delivery.raw)):
            return Verdict.CONTINUE
        self._ensure_started()
        user = services.accounts.canonical(delivery.auth_user) or delivery.auth_user
        record = self._put_in_outbox(user, delivery)
        self._pending[delivery.queue_id] = Pending(delivery.queue_id, user, record.uid, delivery.message_id,
                                                   self.clock() + self.delay)
        services.log("delayed-send-held", queue_id=delivery.queue_id, user=user, seconds=self.delay,
                     message_id=delivery.message_id)
        self._poke()
        return Verdict.HOLD

    def _put_in_outbox(self, user: str, delivery: Delivery) -> Any:
        """The sender's copy, like the Sent copy it stands in for: with a Bcc field naming the Bcc recipients
        (submission removed it from what is sent), so her mail program can recall the message from everyone."""
        raw = delivery.raw
        if delivery.bcc:
            raw = headers.append_headers(headers.remove_headers(raw, ["Bcc"]), [("Bcc", ", ".join(delivery.bcc))])
        try:
            self.store.mailbox(user, OUTBOX)
        except NoSuchMailbox:
            self.store.create_mailbox(user, OUTBOX, origin=ORIGIN)
        return self.store.append(user, OUTBOX, raw, flags=("\\Seen",), origin=ORIGIN)

    # -- life cycle -------------------------------------------------------------------------------------

    async def start(self, services: DomainServices) -> None:
        if self.delay <= 0:
            return
        self._ensure_started()
        # held deliveries that came back after a restart (Maildir spool): re-arm them with what is left
        now_utc = datetime.now(UTC)
        for delivery in services.held():
            if delivery.held_by != self.name or delivery.queue_id in self._pending or not delivery.auth_user:
                continue
            user = services.accounts.canonical(delivery.auth_user) or delivery.auth_user
            left = max(0.0, self.delay - (now_utc - delivery.received_at).total_seconds())
            uid = self._outbox_uid(user, delivery.message_id)
            if uid is None:
                uid = self._put_in_outbox(user, delivery).uid
            self._pending[delivery.queue_id] = Pending(delivery.queue_id, user, uid, delivery.message_id,
                                                       self.clock() + left)
        self._poke()

    def _ensure_started(self) -> None:
        if not self._subscribed:
            self.store.subscribe(self._on_event)
            self._subscribed = True
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                name=f"delayed send {self.services.domain}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._subscribed:
            self.store.unsubscribe(self._on_event)
            self._subscribed = False

    def _outbox_uid(self, user: str, message_id: str | None) -> int | None:
        if not message_id:
            return None
        for location in self.store.find_by_message_id(user, message_id):
            if location.mailbox == OUTBOX:
                return location.uid
        return None

    # -- cancelling -------------------------------------------------------------------------------------

    def _on_event(self, event: StoreEvent) -> None:
        if event.origin == ORIGIN:
            return
        if isinstance(event, MessagesExpunged) and event.mailbox == OUTBOX:
            gone = set(event.uids)
            for pending in [p for p in self._pending.values() if p.user == event.user and p.outbox_uid in gone]:
                self._cancel(pending, "deleted from the Outbox")
        elif isinstance(event, MailboxDeleted | MailboxRenamed) and event.mailbox == OUTBOX:
            for pending in [p for p in self._pending.values() if p.user == event.user]:
                self._cancel(pending, "Outbox removed")

    def _cancel(self, pending: Pending, how: str) -> None:
        self._pending.pop(pending.queue_id, None)
        with contextlib.suppress(KeyError):
            self.services.discard(pending.queue_id)
        self.services.log("delayed-send-cancelled", queue_id=pending.queue_id, user=pending.user,
                          message_id=pending.message_id, how=how)

    def cancel(self, key: str) -> bool:
        """Cancel by queue id or Message-ID, as deleting the Outbox copy does; False when nothing is pending
        (already sent, or never held)."""
        self._forget_gone()
        pending = self._find(key)
        if pending is None:
            return False
        self._pending.pop(pending.queue_id, None)
        with contextlib.suppress(StoreError):
            self.store.expunge(pending.user, OUTBOX, [pending.outbox_uid], origin=ORIGIN)
        self._cancel(pending, "cancelled through the lab")
        return True

    def pending(self) -> list[Pending]:
        """What is held now, soonest first (entries released or discarded behind the policy's back dropped)."""
        self._forget_gone()
        return sorted(self._pending.values(), key=lambda p: p.due)

    def _find(self, key: str) -> Pending | None:
        wanted = key.strip().strip("<>")
        for pending in self._pending.values():
            mid = (pending.message_id or "").strip().strip("<>")
            if pending.queue_id == key or (mid and mid == wanted):
                return pending
        return None

    def _forget_gone(self) -> None:
        """A delivery someone released or discarded through DomainServices directly is no longer ours to send:
        drop it and its Outbox copy."""
        if not self._pending:
            return
        held = {d.queue_id for d in self.services.held()}
        for pending in [p for p in self._pending.values() if p.queue_id not in held]:
            self._pending.pop(pending.queue_id, None)
            with contextlib.suppress(StoreError):
                self.store.expunge(pending.user, OUTBOX, [pending.outbox_uid], origin=ORIGIN)

    async def release_now(self, key: str) -> bool:
        """"Send now": end the window of one held message (queue id or Message-ID) at once; False when nothing
        is pending under that key. Simulated-time trials use this to end the window at its planned instant."""
        self._forget_gone()
        pending = self._find(key)
        if pending is None:
            return False
        await self._release(pending)
        return True

    # -- sending when the window ends -------------------------------------------------------------------

    async def release_due(self) -> int:
        """Release every delivery whose window has ended by `self.clock`; returns how many."""
        now = self.clock()
        released = 0
        for pending in [p for p in self.pending() if p.due <= now]:
            if pending.queue_id in self._pending:  # not cancelled meanwhile
                await self._release(pending)
                released += 1
        return released

    async def _release(self, pending: Pending) -> None:
        self._pending.pop(pending.queue_id, None)
        with contextlib.suppress(StoreError):
            self.store.expunge(pending.user, OUTBOX, [pending.outbox_uid], origin=ORIGIN)
        self.services.log("delayed-send-released", queue_id=pending.queue_id, user=pending.user,
                          message_id=pending.message_id)
        await self.services.release(pending.queue_id)

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            pending = self.pending()
            if not pending:
                await self._wake.wait()
                continue
            delay = pending[0].due - self.clock()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                continue
            try:
                await self.release_due()
            except Exception as exc:  # a failed release stays logged; the loop must keep serving others
                self.services.log("delayed-send-error", error=repr(exc))
            await asyncio.sleep(0)


register_policy("delayed_send", DelayedSendPolicy, default_roles=("organisation", "external"), order=30,
                settings=(SETTING, ALIAS))
