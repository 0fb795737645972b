"""Planning a trial: sample every event's time from the scenario's distributions, then sort them.

Why planning is separate from running (sans-I/O, like the protocol cores): the plan is a pure function of
(scenario, trial seed), so "same seed, same events in the same order" is a property of this module that tests
can check without a server; the engine (`recall_lab.harness.scenarios.engine`) then carries each planned event out over the
real servers, in order, either as fast as they answer (simulated time) or on the wall clock (`--realtime`).

The seed of a trial does not include the recall mode: trial i of a scenario has the same timeline in cloud and
in legacy mode, so the two columns of the table compare the same recipients doing the same things.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from recall_lab.harness.scenarios.model import Scenario


class EventKind(enum.StrEnum):
    SEND = "send"  # the sender submits the message (SMTP submission)
    RELEASE = "release"  # delayed send: the outbox window ends and the server delivers it
    CANCEL = "cancel"  # delayed send: the sender cancels while it still waits in the outbox
    OFFLINE = "offline"  # the desktop client loses its connection
    ONLINE = "online"  # ... and comes back (resync: QRESYNC / CONDSTORE / UIDs)
    RULE_MOVE = "rule-move"  # a rule moves the message to another folder on arrival
    PREVIEW = "preview"  # a notification shows subject and first line (does not set \Seen)
    PHONE = "phone"  # the recipient's phone: lock-screen notification and/or sync, then it goes offline
    PAGE_LOAD = "page-load"  # the web client loads its page: the list and snapshots are re-rendered
    OPEN = "open"  # the user opens the message (FETCH BODY[], which sets \Seen)
    MEMBER_OPEN = "member-open"  # another member of a list, or another reader of a shared mailbox, opens it
    FORWARD = "forward"  # the recipient forwards it to someone at another provider (SMTP submission)
    REPLY = "reply"  # the recipient replies, quoting it (SMTP submission)
    DELETE = "delete"  # the user deletes the message (to Trash)
    PURGE = "purge"  # the retention tick: Trash items older than purge_deleted_after are purged
    RECALL = "recall"  # the sender recalls the message (a recall instruction over submission)
    OPEN_RECALL = "open-recall"  # the user opens the recall message (a client without automatic processing)
    OBSERVE = "observe"  # the end of the trial: the outcome is read
    # Never planned: the server's own step, which the engine carries out and narrates at its time (the cloud
    # recall's report, filed on the trial's clock).
    REPORT = "report"


#: Order among events sampled at the same instant: what a person would expect (a message arrives before it
#: can be previewed; a rule acts before the user sees the message; the recall goes last among ties).
_PRIORITY = {kind: i for i, kind in enumerate(EventKind)}


@dataclass(frozen=True, slots=True, order=True)
class Event:
    at: float  # seconds of simulated time since the send
    priority: int
    seq: int  # planning order, for a total and stable order
    kind: EventKind = field(compare=False)
    note: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class Plan:
    """A trial's sampled timeline; `events` are in the order they run."""

    scenario: str
    seed: str
    events: tuple[Event, ...]
    recall_at: float  # the recall delay, which the report plots success against
    delivered_at: float | None  # None: cancelled in the outbox, never delivered
    cancelled: bool

    def kinds(self) -> list[str]:
        return [e.kind.value for e in self.events]


def trial_seed(seed: int | str, scenario: str, index: int) -> str:
    """The seed of trial `index` of `scenario` in a run seeded `seed` (mode-independent, see module doc)."""
    return f"{seed}:{scenario}:{index}"


def plan_trial(scenario: Scenario, seed: str) -> Plan:
    """Sample one trial. Every distribution is sampled exactly once, in a fixed order, whether or not its event
    ends up in the plan, so one field's change never reshuffles the others' samples."""
    rng = random.Random(seed)  # str seeds hash with SHA-512: stable across runs and machines
    recall_at = _must(scenario.recall_delay.sample(rng))
    open_delay = scenario.open_delay.sample(rng)
    delete_delay = scenario.delete_delay.sample(rng)
    offline_at = scenario.offline_at.sample(rng)
    offline_for = scenario.offline_for.sample(rng) or 0.0
    purge_lag = scenario.purge_lag.sample(rng) or 0.0
    loads: list[float] = []
    if scenario.page_load_interval is not None:
        # A page is loaded when the message arrives (the user has the web mail open), then again and again.
        t = 0.0
        horizon = recall_at + scenario.observe_for + (scenario.delayed_send or 0.0)
        for _ in range(10_000):
            step = scenario.page_load_interval.sample(rng)
            if step is None or step <= 0:
                break
            t += step
            if t > horizon:
                break
            loads.append(t)
    # Sampled after every older field, so that adding them left the older scenarios' plans as they were.
    escape_delay = scenario.escape_delay.sample(rng)
    member_opens = [scenario.open_delay.sample(rng) for _ in range(scenario.members - 1)] \
        if scenario.recipient in ("list", "shared") else []
    recall_open_delay = scenario.recall_open_delay.sample(rng)

    events: list[Event] = []

    def add(at: float, kind: EventKind, note: str = "") -> None:
        events.append(Event(at, _PRIORITY[kind], len(events), kind, note))

    add(0.0, EventKind.SEND)
    cancelled = False
    delivered_at: float | None = 0.0
    if scenario.delayed_send is not None:
        if recall_at < scenario.delayed_send:
            cancelled = True
            delivered_at = None
            add(recall_at, EventKind.CANCEL, f"within the {scenario.delayed_send:g} s window")
        else:
            delivered_at = scenario.delayed_send
            add(delivered_at, EventKind.RELEASE, f"after {scenario.delayed_send:g} s in the outbox")
    end = recall_at + scenario.observe_for
    if not cancelled:
        add(recall_at, EventKind.RECALL)
    add(end, EventKind.OBSERVE)

    offline: tuple[float, float] | None = None
    if scenario.client == "desktop" and offline_at is not None:
        offline = (offline_at, offline_at + offline_for)
        add(offline[0], EventKind.OFFLINE)
        if offline[1] < end:
            add(offline[1], EventKind.ONLINE)

    if delivered_at is not None:
        # The client learns of the message at delivery, or when it is back online.
        seen_at = delivered_at
        if offline is not None and offline[0] <= delivered_at < offline[1]:
            seen_at = offline[1]
        if scenario.move_to is not None:
            add(delivered_at, EventKind.RULE_MOVE, scenario.move_to)
        if scenario.preview and scenario.client == "desktop" and seen_at < end:
            add(seen_at, EventKind.PREVIEW)
        if scenario.client == "web":
            add(delivered_at, EventKind.PAGE_LOAD, "the web mail page is open when the message arrives")
            for at in loads:
                add(delivered_at + at, EventKind.PAGE_LOAD)
        if open_delay is not None:
            # One cannot open what the client has not shown yet.
            add(max(delivered_at + open_delay, seen_at), EventKind.OPEN)
        if delete_delay is not None:
            deleted = max(delivered_at + delete_delay, seen_at)
            if open_delay is not None:
                deleted = max(deleted, delivered_at + open_delay)
            add(deleted, EventKind.DELETE)
            if scenario.purge_deleted_after is not None:
                add(deleted + scenario.purge_deleted_after + purge_lag, EventKind.PURGE)

        escapes = set(scenario.escapes)
        if escape_delay is not None:
            # One forwards or replies to what one has read: the engine opens it first.
            for kind in (EventKind.FORWARD, EventKind.REPLY):
                if kind.value in escapes:
                    add(max(delivered_at + escape_delay, seen_at), kind)
        if escapes & {"lock-screen", "phone-sync"}:
            add(delivered_at, EventKind.PHONE, ", ".join(sorted(escapes & {"lock-screen", "phone-sync"})))
        for k, delay in enumerate(member_opens, start=1):
            if delay is not None:
                add(delivered_at + delay, EventKind.MEMBER_OPEN, str(k))

    if recall_open_delay is not None and not cancelled and scenario.client == "desktop":
        # The recall message arrives with the recall; one cannot open what the client has not shown yet.
        shown = recall_at
        if offline is not None and offline[0] <= recall_at < offline[1]:
            shown = offline[1]
        add(max(recall_at + recall_open_delay, shown), EventKind.OPEN_RECALL)

    kept = tuple(sorted(e for e in events if e.at <= end))
    return Plan(scenario=scenario.name, seed=seed, events=kept, recall_at=recall_at,
                delivered_at=delivered_at, cancelled=cancelled)


def _must(value: float | None) -> float:
    if value is None:  # validate() forbids it; keep the type checker and a hand-built Dist honest
        raise ValueError("recall_delay sampled 'never'")
    return value
