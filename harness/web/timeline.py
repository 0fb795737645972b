"""The lab's timeline: deliveries, relay hops, recalls, expunges and reports, in the order they happened.

Why in the harness and built from two feeds: the servers report what they did and why (`lab.activity`: a
message accepted, a relay hop, a recall honoured or refused, a notice), and each domain's store reports what
changed in a mailbox (a message stored, read, expunged). Neither alone tells the story the demo narrates; merged
in arrival order (both are published synchronously on the lab's loop) they do. The console shows it live, the
API serves it (`/api/v1/events`), and long polls wait on it.

Each entry is a flat JSON-able dict: `seq` (ascending, the SSE id), `at` (ISO time), `kind`, `domain`, and the
kind's own fields; `text` is one line for people. Mailbox entries name the message by Message-ID and subject,
remembered from when it was stored (an expunge event only has UIDs). History and that memory are bounded.

Recalls are also gathered per original Message-ID (`recalls`): who asked, in which mode, each recipient's
outcome as the server or the recipients' clients reported it, and where the report to the sender was stored.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import decode_header, make_header
from typing import Any

from recall_lab.fake_servers.recall.format import (
    HEADER_MESSAGE_ID,
    HEADER_REPORT,
    RecallFormatError,
    message_kind,
    normalise_message_id,
)
from recall_lab.fake_servers.smtp.headers import HeaderBlock
from recall_lab.fake_servers.store.base import FlagsChanged, MessageAppended, MessagesExpunged, StoreEvent

Entry = dict[str, Any]
TimelineListener = Callable[[Entry], None]

#: Entries kept for replay (SSE Last-Event-ID, `/api/v1/events?since=`).
KEEP_ENTRIES = 10_000
#: Messages whose Message-ID and subject are remembered (to name them when they are expunged).
KEEP_MESSAGES = 50_000
#: Recalls remembered for the console and the API.
KEEP_RECALLS = 1_000
#: Header bytes read to name a stored message.
HEADER_BYTES = 64 * 1024



class _Head:
    """The few header fields the timeline shows, read with the servers' one header reader (HeaderBlock).

    Why not the `email` parser: the timeline reads every stored message, and policy.default's header parse
    costs about 100 us a message against 6 us here; on the delivery path that was a third of SMTP throughput.
    Encoded words (RFC 2047) are decoded only where a value has one."""

    __slots__ = ("block",)

    def __init__(self, head: bytes) -> None:
        self.block = HeaderBlock(head)

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self.block.values(name)
        if not values:
            return default
        value = values[0]
        if "=?" in value:
            try:
                value = str(make_header(decode_header(value)))
            except (ValueError, LookupError, UnicodeError):
                pass  # shown as sent
        return value


@dataclass
class RecallRecord:
    """One recall as the lab saw it; `key` is the original's normalised Message-ID."""

    key: str
    original: str
    first_seq: int
    requested_at: str
    sender: str = ""
    subject: str = ""
    mode: str = ""
    action: str = ""
    statuses: dict[str, str] = field(default_factory=dict)  # recipient -> status (server's or the client's)
    refused: list[str] = field(default_factory=list)  # reasons a server gave for not honouring it
    instructions: list[dict[str, Any]] = field(default_factory=list)  # where the recall message was stored
    reports: list[dict[str, Any]] = field(default_factory=list)  # where a report/notice to the sender was stored
    seqs: list[int] = field(default_factory=list)  # the timeline entries about it

    def as_dict(self) -> dict[str, Any]:
        return {"original": self.original, "sender": self.sender, "subject": self.subject, "mode": self.mode,
                "action": self.action, "requested_at": self.requested_at, "statuses": dict(self.statuses),
                "refused": list(self.refused), "instructions": list(self.instructions),
                "reports": list(self.reports), "events": list(self.seqs)}


class Timeline:
    """Follows a running lab's activity feed and stores; see the module docstring."""

    def __init__(self, lab: Any, *, keep: int = KEEP_ENTRIES) -> None:
        self.lab = lab
        self.entries: deque[Entry] = deque(maxlen=keep)
        self.recalls: OrderedDict[str, RecallRecord] = OrderedDict()
        self._names: OrderedDict[tuple[str, str, int], tuple[str | None, str, str | None]] = OrderedDict()
        self._subjects: OrderedDict[str, str] = OrderedDict()  # Message-ID -> subject, to name a recall's original
        self._seq = itertools.count(1)
        self._listeners: list[TimelineListener] = []
        self._store_listeners: list[tuple[Any, Callable[[StoreEvent], None]]] = []
        self._changed = asyncio.Event()
        self._running = False

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self.lab.activity.subscribe(self._on_activity)
        for domain in self.lab.domains:
            store = self.lab.store(domain)

            def listener(event: StoreEvent, domain: str = domain) -> None:
                self._on_store(domain, event)

            store.subscribe(listener)
            self._store_listeners.append((store, listener))

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        self.lab.activity.unsubscribe(self._on_activity)
        for store, listener in self._store_listeners:
            store.unsubscribe(listener)
        self._store_listeners.clear()
        self._wake()

    @property
    def running(self) -> bool:
        return self._running

    # -- following ------------------------------------------------------------------------------------
    def subscribe(self, listener: TimelineListener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: TimelineListener) -> None:
        try:
            self._listeners.remove(listener)
        except ValueError:
            pass

    def since(self, seq: int = 0, limit: int | None = None) -> list[Entry]:
        out = [e for e in self.entries if e["seq"] > seq]
        return out[:limit] if limit is not None else out

    @property
    def last_seq(self) -> int:
        return self.entries[-1]["seq"] if self.entries else 0

    async def changed(self, timeout: float) -> bool:
        """Wait until the next entry (or any store change) or `timeout` seconds; True when something happened."""
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return self._running

    def _wake(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    # -- the feeds ------------------------------------------------------------------------------------
    def _add(self, kind: str, domain: str, text: str, **fields: Any) -> Entry:
        entry: Entry = {"seq": next(self._seq), "at": fields.pop("at", None) or datetime.now(UTC).isoformat(),
                        "kind": kind, "domain": domain, "text": text, **fields}
        self.entries.append(entry)
        for listener in tuple(self._listeners):
            listener(entry)
        return entry

    def _on_activity(self, item: dict[str, Any]) -> None:
        fields = {k: v for k, v in item.items() if k not in ("seq", "domain", "event")}
        domain, event = item["domain"], item["event"]
        if event.startswith("recall-") and fields.get("original") and "subject" not in fields:
            fields["subject"] = self._subjects.get(str(fields["original"]).strip(), "")  # the original's, to name it
        text = describe_activity(event, fields)
        entry = self._add(event, domain, text, **fields)
        if event in ("recall-honoured", "recall-refused", "recall-notice", "recall-discarded-held"):
            self._recall_activity(entry)
        self._wake()

    def _on_store(self, domain: str, event: StoreEvent) -> None:
        if isinstance(event, MessageAppended):
            self._stored(domain, event)
        elif isinstance(event, MessagesExpunged):
            names = [self._names.pop((event.user, event.mailbox, uid), (None, "", None)) for uid in event.uids]
            for uid, (mid, subject, _kind) in zip(event.uids, names, strict=True):
                self._add("expunged", domain, f"{event.mailbox} of {event.user}: {_label(subject, mid)} expunged",
                          user=event.user, mailbox=event.mailbox, uid=uid, message_id=mid, subject=subject)
        elif isinstance(event, FlagsChanged) and "\\Seen" in event.record.flags:
            name = self._names.get((event.user, event.mailbox, event.record.uid))
            if name is not None and not name[2]:
                # read for the first time: remembered as read so a later flag change is not "read" again
                mid, subject, _ = name
                self._names[(event.user, event.mailbox, event.record.uid)] = (mid, subject, "read")
                self._add("read", domain, f"{event.user} read {_label(subject, mid)} in {event.mailbox}",
                          user=event.user, mailbox=event.mailbox, uid=event.record.uid, message_id=mid,
                          subject=subject)
        self._wake()

    def _stored(self, domain: str, event: MessageAppended) -> None:
        record = event.record
        try:
            raw = self.lab.store(domain).fetch_raw(event.user, event.mailbox, record.uid)
        except Exception:  # noqa: BLE001 - expunged before we looked: name it by UID only
            raw = b""
        head = raw[:HEADER_BYTES]
        msg = _Head(head) if head else None
        subject = " ".join(str(msg.get("Subject", "")).split()) if msg is not None else ""
        kind = message_kind(msg.block) if msg is not None else None
        mid = record.message_id
        self._names[(event.user, event.mailbox, record.uid)] = (mid, subject,
                                                               "read" if "\\Seen" in record.flags else None)
        while len(self._names) > KEEP_MESSAGES:
            self._names.popitem(last=False)
        if mid and subject and not kind:
            self._subjects[mid.strip()] = subject
            while len(self._subjects) > KEEP_MESSAGES:
                self._subjects.popitem(last=False)
        label = {"recall": "recall instruction", "report": "recall report", "notice": "recall notice"}.get(kind or "")
        what = f"{label} {_label(subject, mid)}" if label else _label(subject, mid)
        original = msg.get(HEADER_MESSAGE_ID) if kind and msg is not None else None
        extra = {"original": str(original).strip()} if original else {}  # a recall message names its original
        entry = self._add("stored", domain, f"{what} stored in {event.user}'s {event.mailbox}",
                          user=event.user, mailbox=event.mailbox, uid=record.uid, message_id=mid,
                          subject=subject, message_kind=kind, sender=str(msg.get("From", "")) if msg else "",
                          **extra)
        if kind and msg is not None:
            rec = self._recall(str(original), entry) if original else None
            if rec is not None:
                where = {"user": event.user, "mailbox": event.mailbox, "uid": record.uid, "message_id": mid,
                         "subject": subject, "kind": kind, "seq": entry["seq"]}
                if kind == "recall":
                    rec.instructions.append(where)
                    rec.sender = rec.sender or str(msg.get("From", ""))
                else:
                    rec.reports.append(where)
                    if msg.get(HEADER_REPORT):
                        where["recall_message_id"] = str(msg.get(HEADER_REPORT))

    # -- recalls --------------------------------------------------------------------------------------
    def _recall(self, original: str, entry: Entry) -> RecallRecord | None:
        """The record of `original` (created on first mention); None when it is not a Message-ID at all (anyone
        can mail a message whose recall header holds anything)."""
        try:
            key = normalise_message_id(original)
        except RecallFormatError:
            return None
        rec = self.recalls.get(key)
        if rec is None:
            rec = RecallRecord(key=key, original=original.strip(), first_seq=entry["seq"],
                               requested_at=entry["at"], subject=self._subjects.get(original.strip(), ""))
            self.recalls[key] = rec
            while len(self.recalls) > KEEP_RECALLS:
                self.recalls.popitem(last=False)
        rec.seqs.append(entry["seq"])
        return rec

    def _recall_activity(self, entry: Entry) -> None:
        original = entry.get("original")
        if not original:
            return
        rec = self._recall(str(original), entry)
        if rec is None:
            return
        kind = entry["kind"]
        if kind == "recall-honoured":
            rec.sender = rec.sender or str(entry.get("sender", ""))
            rec.mode = str(entry.get("mode", ""))
            rec.action = str(entry.get("action", ""))
            rec.statuses.update({str(k): str(v) for k, v in (entry.get("statuses") or {}).items()})
        elif kind == "recall-notice":
            rec.statuses[str(entry.get("recipient", ""))] = str(entry.get("status", ""))
        elif kind == "recall-refused":
            rec.refused.append(str(entry.get("reason", "")))

    def recall(self, message_id: str) -> RecallRecord | None:
        """The recall of this original (with or without angle brackets); None if unknown or not a Message-ID."""
        try:
            return self.recalls.get(normalise_message_id(message_id))
        except RecallFormatError:
            return None


def _label(subject: str, message_id: str | None) -> str:
    if subject and message_id:
        return f'"{subject}" {message_id}'
    return f'"{subject}"' if subject else (message_id or "a message")


def describe_activity(event: str, f: dict[str, Any]) -> str:
    """One line for people about a server's activity entry."""
    if event == "accepted":
        rcpts = ", ".join(f.get("recipients") or [])
        return f"{f.get('channel', '')} accepted {f.get('message_id') or 'a message'} from " \
               f"{f.get('mail_from') or '<>'} for {rcpts}"
    if event == "relayed":
        parts = []
        if f.get("delivered"):
            parts.append("handed over for " + ", ".join(f["delivered"]))
        if f.get("refused"):
            parts.append("refused for " + ", ".join(f["refused"]))
        if f.get("deferred"):
            parts.append("deferred for " + ", ".join(f["deferred"]))
        return f"relay hop to {f.get('dest')} ({f.get('mta')}), attempt {f.get('attempt')}: " + "; ".join(parts)
    if event == "recall-honoured":
        statuses = ", ".join(f"{k}: {v}" for k, v in (f.get("statuses") or {}).items())
        return f"{f.get('mode')} recall of {f.get('original')} by {f.get('sender')}: {statuses}"
    if event == "recall-notice":
        return f"{f.get('recipient')}'s client reports {f.get('status')} for {f.get('original')}"
    if event == "recall-refused":
        return f"recall refused ({f.get('reason')})"
    rest = ", ".join(f"{k}={v}" for k, v in f.items() if k != "at")
    return f"{event}: {rest}" if rest else event
