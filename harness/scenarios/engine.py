"""Carrying a planned trial out over the real servers: one event after the other, each over SMTP or IMAP.

Why each step waits for the servers to settle before the next one runs: the plan says "Bob opens the message
at t = 544 s, Alice recalls it at t = 480 s"; for that order to be what happened, the recall must be fully
processed (pipeline done, the desktop client's IDLE push received, a legacy client's processing finished) before
the open is tried. So every step ends with `lab.wait_idle()` and, for a connected desktop client, `settle()`
(a NOOP round trip per folder). Then a trial is a pure function of its seed, in simulated time (jump straight
to the next event) as on the wall clock (`--realtime`).

A `Slot` is one sender and one recipient with their clients, reused trial after trial (fresh Message-IDs, the
mailboxes emptied between trials through the store API), so a run never restarts servers; a matrix runs as
many slots side by side as it wants concurrent recipients.

Faults (a scenario's `faults`, docs/faults.md) are rules of the domains, and every slot of a lab shares them: the
engine adds a trial's rules when it starts (or before its recall) and clears them when it ends, so a matrix
runs such trials one at a time, on the simulated clock the servers read (an outage's window counts on it). While
a domain is in an outage, the relay that met its 421 is paused once that first attempt is over: its retries
are spaced on the wall clock, and in simulated time every one of them would meet the same outage until the
queue gave up, where a real sender's queue keeps trying for days. When the trial's clock passes the outage's
end the engine resumes that relay and retries at once (`lab.retry_relay_now()`), and the waiting mail goes out.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formataddr
from pathlib import Path
from typing import Any

import aiosmtplib

from recall_lab.fake_servers.faults import FaultRule
from recall_lab.harness.own_name import client_name
from recall_lab.harness.scenarios import conditions
from recall_lab.harness.scenarios import org_routing as _org_routing  # noqa: F401 - registers lists, forwarding
from recall_lab.harness.scenarios.clock import SimClock
from recall_lab.harness.scenarios.model import Scenario
from recall_lab.harness.scenarios.results import TrialResult
from recall_lab.harness.scenarios.timeline import Event, EventKind, Plan

ORG = "corp.example"
EXTERNAL = "mail.example"
SETTLE_TIMEOUT = 10.0
#: A trial that takes longer than this (wall seconds, simulated time) is stopped and recorded as an error.
TRIAL_TIMEOUT = 60.0
#: The trials' labs file a cloud recall's report this long after the recall (simulated seconds; the matrix's
#: lab config sets it unless the base config does). An assumption: Microsoft documents the report but no delay
#: that was available (docs/modelling.md); a minute exercises the asynchronous report in every cloud trial, and
#: as the outcome is read `observe_for` (10 min or more) after the recall, no rate depends on it.
TRIAL_REPORT_DELAY = 60.0

_QUEUE_ID = re.compile(r"queued as (\S+)", re.IGNORECASE)
_nonce = itertools.count(1)

#: Who plays the sender and the recipients in slot k (slot 0 keeps the article's cast: alice, bob, carol, dave).
CAST = {"sender": "alice", "organisation": "bob", "held": "carol", "external": "dave"}


def cast_user(role: str, slot: int) -> str:
    """The local part of `role` in slot `slot` (alice, alice2, alice3 ...)."""
    base = CAST[role]
    return base if slot == 0 else f"{base}{slot + 1}"


class TrialError(Exception):
    """A step of a trial failed against the servers; the trial is recorded as failed with this text."""


@dataclass
class Slot:
    """One sender and one recipient (plus the recipient's desktop client, kept connected across trials)."""

    index: int
    sender: str
    recipient: str
    recipient_domain: str
    desktop: Any | None = None  # recall_lab.harness.clients.desktop.DesktopClient
    web_dir: Path | None = None
    smtp: aiosmtplib.SMTP | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # conditions.py: list members, phone, outside address


@dataclass
class AddedFault:
    """One of a trial's fault rules, added to `domain` at `at` seconds of the trial's clock."""

    domain: str
    rule: FaultRule
    at: float
    over: bool = False  # an outage whose end the engine has handled

    def outage_at(self, t: float) -> bool:
        """Whether this is an outage and its window holds at trial time t (as the domain's FaultSet sees it)."""
        return self.rule.kind == "outage" and self.rule.window[0] <= t - self.at < self.rule.window[1]

    @property
    def ends_at(self) -> float | None:
        return self.at + self.rule.window[1] if self.rule.kind == "outage" else None


@dataclass
class TrialContext:
    """What one trial has done and seen so far (the engine's notes and the outcome's inputs)."""

    scenario: Scenario
    plan: Plan
    mode: str
    index: int
    slot: Slot
    message_id: str
    subject: str
    web: Any | None = None  # recall_lab.harness.clients.web.WebClient (one per trial: it has no connection to keep)
    user: Any | None = None  # recall_lab.harness.clients.user.SimulatedUser: previews, applies the rule, opens
    queue_id: str | None = None
    delivered: bool = False
    cancelled: bool = False
    recalled: bool = False
    read_before_recall: bool = False
    preview_seen: bool = False
    report_status: str = ""
    recall_message_id: str = ""
    recall_handle: Any | None = None  # recall_lab.harness.recall_agent.RecallHandle
    report_due: float | None = None  # cloud: when the server files the recall's report (trial time), until it has
    outcome: dict[str, Any] = field(default_factory=dict)  # set by the observe event
    clock: SimClock | None = None
    faults: list[AddedFault] = field(default_factory=list)  # the scenario's rules, once added to their domains
    paused_relays: set[str] = field(default_factory=set)  # domains whose relay waits for an outage to end
    conditions: dict[str, Any] = field(default_factory=dict)  # conditions.py: escaped copies, members' reads
    log: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # human lines of the event just run (for the demo)

    def note(self, text: str) -> None:
        self.notes.append(text)


#: Called after every event: (context, event, the notes it produced). The demo narrates from it.
Observer = Callable[[TrialContext, Event, list[str]], None]


class TrialEngine:
    """Runs plans of the scenarios of one lab (one recall mode, one set of organisation policies)."""

    def __init__(self, lab: Any, mode: str, *, clock_factory: Callable[[], SimClock] = SimClock,
                 shared_clock: SimClock | None = None, observer: Observer | None = None,
                 state_dir: Path | None = None) -> None:
        self.lab = lab
        self.mode = mode
        self.clock_factory = clock_factory
        self.shared_clock = shared_clock
        self.observer = observer
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="recall-lab-web-")
            state_dir = Path(self._tmp.name)
        self.state_dir = state_dir

    # --- slots ---------------------------------------------------------------------------------------------

    async def open_slot(self, index: int, scenario: Scenario) -> Slot:
        """A slot for trials of `scenario`'s kind (organisation / held / external recipient, its folders)."""
        from recall_lab.harness.clients.desktop import DesktopClient

        role = "external" if scenario.recipient == "external" else ("held" if scenario.legal_hold else
                                                                    "organisation")
        domain = EXTERNAL if role == "external" else ORG
        recipient = f"{cast_user(role, index)}@{domain}"
        sender = f"{cast_user('sender', index)}@{ORG}"
        recipient = conditions.slot_recipient(self.lab, scenario, index, recipient)
        folders = ["INBOX"]
        if scenario.move_to:
            folders.append(scenario.move_to)
        if scenario.delete_delay.kind != "never":
            folders.append("Trash")
        store = self.lab.store(domain)
        for name in folders:
            if name != "INBOX" and name not in {m.name for m in store.list_mailboxes(recipient)}:
                store.create_mailbox(recipient, name)
        slot = Slot(index=index, sender=sender, recipient=recipient, recipient_domain=domain)
        if scenario.client == "desktop":
            legacy = self.mode == "legacy" and domain == ORG
            slot.desktop = DesktopClient(recipient, self.lab.password(recipient), self.lab.imap(domain),
                                         submission=self.lab.submission(domain), folders=folders,
                                         process_recalls_on_arrival=legacy and scenario.auto_process_recalls,
                                         name="desktop client")
            await asyncio.wait_for(slot.desktop.start(), SETTLE_TIMEOUT)
        else:
            slot.web_dir = self.state_dir / f"slot{index}"
            slot.web_dir.mkdir(parents=True, exist_ok=True)
        await conditions.open_slot(self, slot, scenario)
        return slot

    async def close_slot(self, slot: Slot) -> None:
        """Best effort: the lab closes every socket when it stops anyway."""
        await conditions.close_slot(self, slot)
        if slot.desktop is not None:
            with contextlib.suppress(Exception):
                # Drop the connections first: a polite LOGOUT out of IDLE can wait for the client's timeout.
                await asyncio.wait_for(slot.desktop.go_offline(), SETTLE_TIMEOUT)
                await asyncio.wait_for(slot.desktop.stop(), SETTLE_TIMEOUT)
        if slot.smtp is not None:
            try:
                await asyncio.wait_for(slot.smtp.quit(), SETTLE_TIMEOUT)
            except Exception:  # noqa: BLE001
                slot.smtp.close()

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # --- one trial -----------------------------------------------------------------------------------------

    async def run(self, slot: Slot, scenario: Scenario, plan: Plan, index: int) -> TrialResult:
        started = time.perf_counter()
        clock = self.shared_clock or self.clock_factory()
        clock.start_trial()
        nonce = next(_nonce)
        mid = f"<trial.{scenario.name}.{self.mode}.{index}.{nonce}@{ORG}>"
        ctx = TrialContext(scenario=scenario, plan=plan, mode=self.mode, index=index, slot=slot,
                           message_id=mid, subject=f"Quarterly figures (trial {index})", clock=clock)
        error = ""
        on_activity = functools.partial(self._hold_relay_in_outage, ctx) if scenario.faults else None
        if on_activity is not None:
            self.lab.activity.subscribe(on_activity)
        try:
            if scenario.faults and scenario.faults_at == "send":
                self._add_faults(ctx)
            if slot.desktop is not None and not slot.desktop.online:
                await slot.desktop.go_online()  # a previous trial may have ended offline
            if scenario.client == "web":
                from recall_lab.harness.clients.web import WebClient

                ctx.web = WebClient(slot.recipient, self.lab.password(slot.recipient), self.lab.web.url,
                                    slot.web_dir / f"trial-{nonce}", name="web page")
            await conditions.start_trial(self, ctx)  # extra clients online; a live web page opened
            ctx.user = self._user(ctx)
            budget = None if clock.realtime else TRIAL_TIMEOUT
            async with asyncio.timeout(budget):
                for event in plan.events:
                    ctx.notes = []
                    if ctx.report_due is not None and ctx.report_due <= event.at:
                        await self._end_outages(ctx, ctx.report_due)
                        await self._file_report(ctx)
                    await self._end_outages(ctx, event.at)
                    await clock.advance_to(event.at)
                    await self._step(ctx, event)
                    ctx.log.append(f"{event.at:.0f} {event.kind.value}")
                    if self.observer is not None:
                        self.observer(ctx, event, list(ctx.notes))
        except Exception as exc:  # noqa: BLE001 - a failed step fails the trial, never the run
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        finally:
            if on_activity is not None:
                self.lab.activity.unsubscribe(on_activity)
            try:
                await self._cleanup(ctx)
            except Exception as exc:  # noqa: BLE001
                error = error or f"cleanup: {exc}"
        outcome = ctx.outcome
        verdict = outcome.get("verdict", "failed") if not error else "failed"
        return TrialResult(
            scenario=scenario.name, mode=self.mode, index=index, seed=plan.seed, client=scenario.client,
            recipient_kind=scenario.recipient, recall_at=plan.recall_at, verdict=verdict,
            report_status=ctx.report_status, read_before_recall=ctx.read_before_recall,
            preview_seen=ctx.preview_seen, server_copy=bool(outcome.get("server_copy")),
            client_copy=bool(outcome.get("client_copy")), events=tuple(ctx.log), message_id=mid,
            residue=outcome.get("residue", {}),
            elapsed=time.perf_counter() - started, error=error)

    def _user(self, ctx: TrialContext) -> Any:
        """The recipient as a person. Their timing is the plan's (sampled from the scenario), so the user's own
        delay model is not used; it carries out the actions and remembers what it saw and read."""
        from recall_lab.harness.clients.user import MoveRule, SimulatedUser

        client = ctx.web if ctx.web is not None else ctx.slot.desktop
        rule = MoveRule(ctx.scenario.move_to) if ctx.scenario.move_to else None
        return SimulatedUser(ctx.slot.recipient, client, seed=ctx.index,
                             shows_preview=ctx.scenario.preview and ctx.web is None, rule=rule)

    # --- the events ----------------------------------------------------------------------------------------

    async def _step(self, ctx: TrialContext, event: Event) -> None:
        handler = getattr(self, "_on_" + event.kind.value.replace("-", "_"))
        await handler(ctx, event)

    async def _on_send(self, ctx: TrialContext, event: Event) -> None:
        slot = ctx.slot
        msg = EmailMessage()
        msg["From"] = formataddr((slot.sender.partition("@")[0].rstrip("0123456789").title(), slot.sender))
        msg["To"] = conditions.send_to(slot)
        msg["Subject"] = ctx.subject
        msg["Message-ID"] = ctx.message_id
        msg.set_content("The figures I sent this morning are wrong; please do not forward them.\n\n"
                        "(recall-lab trial message)\n")
        reply = await self._submit(slot, msg)
        m = _QUEUE_ID.search(reply)
        ctx.queue_id = m.group(1).rstrip(">") if m else None
        ctx.note(f"{slot.sender} submits {ctx.message_id} to {slot.recipient} (SMTP {reply.strip()})")
        if ctx.scenario.delayed_send is not None:
            ctx.note(f"held in the outbox for {ctx.scenario.delayed_send:g} s (queue id {ctx.queue_id})")
            return
        await self._delivered(ctx)

    async def _submit(self, slot: Slot, msg: EmailMessage) -> str:
        """Submit over the slot's persistent submission connection (reconnecting when the server closed it)."""
        for attempt in (1, 2):
            if slot.smtp is None or not slot.smtp.is_connected:
                ep = self.lab.submission(ORG)
                slot.smtp = aiosmtplib.SMTP(hostname=ep.host, port=ep.port, start_tls=False, use_tls=False,
                                            timeout=SETTLE_TIMEOUT, local_hostname=client_name(slot.sender))
                await slot.smtp.connect()
                await slot.smtp.login(slot.sender, self.lab.password(slot.sender))
            try:
                _errors, reply = await slot.smtp.send_message(msg, sender=slot.sender,
                                                              recipients=[conditions.send_to(slot)])
                return reply
            except aiosmtplib.SMTPServerDisconnected:
                slot.smtp = None
                if attempt == 2:
                    raise
        raise TrialError("submission failed")

    def trial_users(self, ctx: TrialContext) -> set[str]:
        """Everyone whose mailboxes a trial touches: what `Lab.wait_idle` asks a domain on Dovecot about."""
        slot = ctx.slot
        users = {slot.sender, slot.recipient}
        users.update(u for u, _c in slot.extra.get("clients", ()))
        users.update(slot.extra[k] for k in ("outside", "address") if slot.extra.get(k))
        users.update(slot.extra.get("members", ()))
        return users

    async def idle(self, ctx: TrialContext) -> None:
        """`Lab.wait_idle` for the trial's people (a domain on Dovecot is asked about them only)."""
        await self.lab.wait_idle(users=self.trial_users(ctx))

    async def _delivered(self, ctx: TrialContext) -> None:
        await self.idle(ctx)  # relay to another domain runs in the background
        ctx.delivered = True
        desktop = ctx.slot.desktop
        if desktop is not None and desktop.online:
            await desktop.wait_for_message(ctx.message_id, timeout=SETTLE_TIMEOUT)
            ctx.note(f"{ctx.slot.recipient}'s desktop client (IDLE) hears EXISTS and caches it")
        await conditions.after_delivery(self, ctx)

    async def _on_release(self, ctx: TrialContext, event: Event) -> None:
        from recall_lab.harness.scenarios import delayed

        await delayed.release(self.lab, ORG, ctx.queue_id)
        ctx.note(f"the outbox window ends: the server sends {ctx.message_id} on")
        await self._delivered(ctx)

    async def _on_cancel(self, ctx: TrialContext, event: Event) -> None:
        from recall_lab.harness.scenarios import delayed

        slot = ctx.slot
        ok = await delayed.cancel(self.lab, slot.sender, self.lab.password(slot.sender), ctx.message_id)
        ctx.cancelled = ok
        ctx.report_status = "cancelled" if ok else "cancel-failed"
        ctx.note(f"{slot.sender} deletes it from her Outbox after {event.at:.0f} s (IMAP UID EXPUNGE): "
                 + ("the send is cancelled, nothing left the server" if ok else "too late, it had left"))
        if not ok:
            ctx.delivered = True

    async def _on_offline(self, ctx: TrialContext, event: Event) -> None:
        assert ctx.slot.desktop is not None
        await ctx.slot.desktop.go_offline()
        ctx.note(f"{ctx.slot.recipient}'s laptop goes offline; its cache keeps what it had")

    async def _on_online(self, ctx: TrialContext, event: Event) -> None:
        desktop = ctx.slot.desktop
        assert desktop is not None
        mark = len(desktop.events)
        await desktop.go_online()
        await self._settle(ctx)
        for e in desktop.events[mark:]:
            if e.kind == "resync":
                ctx.note(f"back online: resync by {e.data.get('method')}, dropped UIDs {e.data.get('dropped')}")
        if not ctx.delivered:
            return
        if ctx.recalled and self.mode == "legacy" and not desktop.has_message_id(ctx.message_id):
            ctx.note("the client processed the recall it found after reconnecting")

    async def _on_rule_move(self, ctx: TrialContext, event: Event) -> None:
        if ctx.user is None or not await ctx.user.apply_rule(ctx.message_id):
            return
        await self._settle(ctx)
        ctx.note(f"a rule moves it to {event.note} (UID MOVE)")

    async def _on_preview(self, ctx: TrialContext, event: Event) -> None:
        preview = ctx.user.on_arrival(ctx.message_id) if ctx.user is not None else None
        if preview is not None:
            ctx.preview_seen = True
            ctx.note(f"notification: {preview.subject!r} - {preview.first_line!r}")

    async def _on_page_load(self, ctx: TrialContext, event: Event) -> None:
        if ctx.web is None:
            return
        await ctx.web.page_load()
        shown = ctx.web.in_listing(ctx.message_id)
        ctx.note(f"web page loaded: the message is {'listed' if shown else 'not listed'}")

    async def _on_open(self, ctx: TrialContext, event: Event) -> None:
        """The user opens what the client shows: FETCH BODY[] (the web page: also a snapshot); a desktop client
        that is offline shows its cached copy, which is read all the same (the server learns of it later)."""
        client = ctx.web if ctx.web is not None else ctx.slot.desktop
        opened = False
        if ctx.user is not None and client is not None and client.has_message_id(ctx.message_id):
            if ctx.web is None and not ctx.slot.desktop.online:
                opened = True
                ctx.note("the recipient reads the cached copy offline")
            else:
                try:
                    await ctx.user.open(ctx.message_id)
                    opened = True
                    ctx.note("the recipient opens it (FETCH BODY[] sets \\Seen)"
                             + (": the web page renders a snapshot" if ctx.web is not None else ""))
                except Exception:  # noqa: BLE001 - gone on the server meanwhile: nothing to open
                    opened = False
        if opened and not ctx.recalled:
            ctx.read_before_recall = True
        elif not opened:
            ctx.note("the recipient goes to open it: it is no longer there")
        if opened and not ctx.scenario.auto_process_recalls:
            ctx.conditions.setdefault("opened_first", "original")

    async def _on_open_recall(self, ctx: TrialContext, event: Event) -> None:
        """The user opens the recall message. A client without automatic processing acts on the recall only now,
        with the classic rule: the original is deleted if it is still unread (and in the same folder)."""
        desktop = ctx.slot.desktop
        if desktop is None or not ctx.recalled:
            return
        if not desktop.online:
            ctx.note("the recipient's client is offline: the recall message is not opened")
            return
        mark = len(desktop.events)
        raw = await desktop.open_recall(ctx.message_id)
        if raw is None:
            ctx.note("there is no recall message to open: " + (
                "the cloud recall is processed by the server, whatever the client's settings"
                if self.mode == "cloud" else "the client has none"))
            return
        first = ctx.conditions.setdefault("opened_first", "recall message")
        await self._settle(ctx)
        statuses = [e.data.get("status") for e in desktop.events[mark:] if e.kind == "recall"]
        status = statuses[0] if statuses else "not processed"
        ctx.note("the recipient opens the recall message "
                 + ("before the original" if first == "recall message" else "after opening the original")
                 + f": the client processes the recall now ({status})")

    async def _on_phone(self, ctx: TrialContext, event: Event) -> None:
        await conditions.on_phone(self, ctx, event)

    async def _on_forward(self, ctx: TrialContext, event: Event) -> None:
        await conditions.on_forward(self, ctx, event)

    async def _on_reply(self, ctx: TrialContext, event: Event) -> None:
        await conditions.on_reply(self, ctx, event)

    async def _on_member_open(self, ctx: TrialContext, event: Event) -> None:
        await conditions.on_member_open(self, ctx, event)

    async def _on_delete(self, ctx: TrialContext, event: Event) -> None:
        desktop = ctx.slot.desktop
        if desktop is None or not desktop.online or not desktop.has_message_id(ctx.message_id):
            return
        await desktop.move(ctx.message_id, "Trash")
        await self._settle(ctx)
        ctx.note("the recipient deletes it (moved to Trash)")

    async def _on_purge(self, ctx: TrialContext, event: Event) -> None:
        from recall_lab.fake_servers.policies.retention import retention_for

        policy = retention_for(self.lab.services(ORG))
        if policy is None:
            raise TrialError("the organisation runs no retention policy")
        purged = await policy.purge_now()
        await self._settle(ctx)
        ctx.note(f"retention tick: {purged} Trash item(s) older than {ctx.scenario.purge_deleted_after:g} s purged")

    async def _on_recall(self, ctx: TrialContext, event: Event) -> None:
        from recall_lab.harness.recall_agent import RecallAgent

        slot = ctx.slot
        await conditions.before_recall(self, ctx, event)  # the sender's copy as old as the plan says
        if ctx.scenario.faults and ctx.scenario.faults_at == "recall":
            self._add_faults(ctx)
        agent = RecallAgent(self.lab, slot.sender, self.lab.password(slot.sender), timeout=SETTLE_TIMEOUT)
        handle = await agent.recall(ctx.message_id)
        ctx.recalled = True
        ctx.recall_handle = handle
        ctx.recall_message_id = handle.recall_message_id
        ctx.note(f"{slot.sender} recalls it: recall {handle.recall_message_id}")
        await self._settle(ctx)
        policy = self._recall_policy()
        if policy is not None and self.mode == "cloud" and policy.settings.report_delay > 0:
            # The server files its report later, on the trial's clock (the engine files it at that instant).
            ctx.report_due = event.at + policy.settings.report_delay

    def _recall_policy(self) -> Any:
        from recall_lab.fake_servers.recall.policy import recall_policy_for

        return recall_policy_for(self.lab.services(ORG))

    async def _file_report(self, ctx: TrialContext) -> None:
        """The report of the trial's cloud recall, filed at its time (`ctx.report_due`), as the server's own timer
        would on the wall clock: in simulated time that timer never gets its turn."""
        due, ctx.report_due = ctx.report_due, None
        policy = self._recall_policy()
        if due is None or policy is None:
            return
        assert ctx.clock is not None
        await ctx.clock.advance_to(due)
        if await policy.file_report_now(ctx.recall_message_id):
            earlier, ctx.notes = ctx.notes, []
            await self._settle(ctx)
            ctx.log.append(f"{due:.0f} report")
            ctx.note(f"{policy.settings.report_delay:g} s after the recall, the server files its report in "
                     f"{ctx.slot.sender}'s INBOX (a delivery of its own, after the recall's SMTP reply)")
            if self.observer is not None:
                self.observer(ctx, Event(due, len(EventKind), -1, EventKind.REPORT), list(ctx.notes))
            ctx.notes = earlier

    async def _on_observe(self, ctx: TrialContext, event: Event) -> None:
        await self._settle(ctx)
        if ctx.report_due is not None:
            ctx.note("the recall report has not arrived yet")
        elif ctx.recall_handle is not None:
            # Read once, at the end: by then a legacy client's notice (even one sent after reconnecting) is in.
            report = await ctx.recall_handle.report(timeout=SETTLE_TIMEOUT)
            status = report.statuses.get(ctx.slot.recipient)
            ctx.report_status = status.value if status is not None else ""
            ctx.note(f"Alice's recall report: {ctx.slot.recipient}: {ctx.report_status}")
        ctx.outcome = self._outcome(ctx)
        if ctx.web is not None and ctx.web.has_message_id(ctx.message_id):
            where = "as an opened snapshot" if ctx.web.snapshot_visible(ctx.message_id) else "in the list"
            shown = ctx.web.preview(ctx.message_id)
            line = f": {shown.subject!r} - {shown.first_line!r}" if shown is not None else ""
            ctx.note(f"the web page, loaded before the recall, still shows it {where}{line}")
        ctx.note(ctx.outcome["explain"])

    # --- faults ---------------------------------------------------------------------------------------------

    def _add_faults(self, ctx: TrialContext) -> None:
        """Add the scenario's rules to their domains, the generators seeded by the trial's seed (a rule with
        p < 1 fires in the same trials whatever ran before)."""
        assert ctx.clock is not None
        rules = ctx.scenario.fault_rules
        if any(rule.kind == "outage" for _d, rule in rules) and \
                getattr(self.lab, "clock", None) != ctx.clock.now:
            raise TrialError("an outage counts on the servers' clock: run the lab on the trial's simulated "
                             "clock (Lab(clock=clock.now), as the matrix does for rows with faults)")
        for domain in dict.fromkeys(d for d, _r in rules):
            self.lab.faults(domain).seed(ctx.plan.seed)
        for domain, rule in rules:
            self.lab.faults(domain).add(rule)
            ctx.faults.append(AddedFault(domain, rule, ctx.clock.t))
            what = f"{domain} is down (421) from {rule.window[0]:g} s to {rule.window[1]:g} s" \
                if rule.kind == "outage" else f"{domain}: {rule.spec()}"
            ctx.note(f"injected fault: {what}")

    def _hold_relay_in_outage(self, ctx: TrialContext, entry: dict[str, Any]) -> None:
        """Activity listener: a relay attempt deferred by a domain in an outage pauses the sending domain's relay
        (after this attempt, which met the real 421), until the outage's end (see the module docstring)."""
        if entry.get("event") != "relayed" or not entry.get("deferred") or ctx.clock is None:
            return
        sender, dest = entry.get("domain"), entry.get("dest")
        if sender in ctx.paused_relays or not any(f.domain == dest and f.outage_at(ctx.clock.t) for f in ctx.faults):
            return
        ctx.paused_relays.add(sender)
        self.lab.pause_relay(sender)
        ctx.note(f"{dest} answers 421: what {sender} relays there waits in its queue")

    async def _end_outages(self, ctx: TrialContext, until: float) -> None:
        """Before the event at `until`: every outage that ends by then ends at its own time, and what waited for
        it is handed over (the relay retried at once, since its backoff runs on the wall clock)."""
        assert ctx.clock is not None
        for fault in sorted((f for f in ctx.faults if f.ends_at is not None and not f.over),
                            key=lambda f: f.ends_at or 0.0):
            end = fault.ends_at or 0.0
            if end > until:
                break
            fault.over = True
            await ctx.clock.advance_to(end)
            self._release_relays(ctx)
            await self._settle(ctx)
            ctx.log.append(f"{end:.0f} outage-end")
            ctx.note(f"{fault.domain}'s outage ends at {end:.0f} s: the relay hands over what waited")

    def _release_relays(self, ctx: TrialContext) -> None:
        for domain in sorted(ctx.paused_relays):
            self.lab.resume_relay(domain)
        if ctx.paused_relays:
            self.lab.retry_relay_now()
        ctx.paused_relays.clear()

    async def _clear_faults(self, ctx: TrialContext) -> None:
        """The trial's rules leave their domains; mail an outage held goes out now, before the mailboxes are
        emptied (so nothing of this trial arrives during the next one)."""
        for domain in dict.fromkeys(f.domain for f in ctx.faults):
            self.lab.faults(domain).clear()
        if ctx.paused_relays:
            self._release_relays(ctx)

    # --- settling, outcome, cleanup ------------------------------------------------------------------------

    async def _settle(self, ctx: TrialContext) -> None:
        await self.idle(ctx)
        desktop = ctx.slot.desktop
        if desktop is not None and desktop.online:
            await asyncio.wait_for(desktop.settle(), SETTLE_TIMEOUT)
            await self.idle(ctx)  # a legacy client's notice goes out over submission
        await conditions.settle(self, ctx)

    def _outcome(self, ctx: TrialContext) -> dict[str, Any]:
        from recall_lab.harness.clients.outcome import ClientCopy, RecipientOutcome, judge

        slot = ctx.slot
        store = self.lab.store(slot.recipient_domain)
        server_copy = bool(store.find_by_message_id(slot.recipient, ctx.message_id))
        copies = []
        if slot.desktop is not None:
            copies.append(ClientCopy(slot.desktop.name, "desktop", slot.desktop.has_message_id(ctx.message_id)))
        if ctx.web is not None:
            kind = "live-web" if ctx.scenario.client == "live-web" else "web"
            copies.append(ClientCopy(ctx.web.name, kind, ctx.web.has_message_id(ctx.message_id)))
        copies.extend(conditions.extra_copies(ctx))  # a shared mailbox's other readers, the phone
        client_copy = any(c.present for c in copies)
        if ctx.cancelled and not server_copy and not client_copy:
            # Delayed send cancelled in the outbox: nothing reached the recipient, wherever they are.
            return {"verdict": "recalled", "server_copy": False, "client_copy": False,
                    "explain": f"{slot.recipient}: recalled (cancelled in the outbox, never delivered)"}
        outcome = RecipientOutcome(recipient=slot.recipient, server_copy=server_copy, clients=tuple(copies),
                                   read_before_recall=ctx.read_before_recall, preview_seen=ctx.preview_seen,
                                   external=ctx.scenario.recipient == "external")
        out: dict[str, Any] = {"verdict": judge(outcome).value, "server_copy": server_copy,
                               "client_copy": client_copy, "explain": outcome.explain()}
        if ctx.scenario.recipient == "list":
            out.update(conditions.judge_members(self, ctx, outcome))
        out["residue"] = conditions.residue_json(self, ctx, out)
        return out

    async def _cleanup(self, ctx: TrialContext) -> None:
        """Empty the slot's mailboxes (store API) so the next trial starts from nothing."""
        slot = ctx.slot
        await self._clear_faults(ctx)
        if ctx.report_due is not None:  # due after the trial's end: filed now, so it lands in this trial only
            policy = self._recall_policy()
            if policy is not None:
                await policy.file_report_now(ctx.recall_message_id)
            ctx.report_due = None
        if ctx.scenario.delayed_send is not None and not ctx.delivered and not ctx.cancelled:
            from recall_lab.harness.scenarios import delayed

            if delayed.still_held(self.lab, ORG, ctx.queue_id):
                delayed.discard(self.lab, ORG, ctx.queue_id or "")
        await self.idle(ctx)
        for domain, user in ((ORG, slot.sender), (slot.recipient_domain, slot.recipient)):
            store = self.lab.store(domain)
            for info in store.list_mailboxes(user):
                if info.exists:
                    store.expunge(user, info.name, [r.uid for r in store.messages(user, info.name)],
                                  origin="recall-lab-cleanup")
        # No settle here: the desktop client drops what was expunged in the background, and the next trial
        # waits for its own new message, which the IDLE push reports after these VANISHED lines.
        await conditions.cleanup(self, ctx)
        if ctx.web is not None and getattr(ctx.web, "root", None) is not None:
            shutil.rmtree(ctx.web.root.parent, ignore_errors=True)
