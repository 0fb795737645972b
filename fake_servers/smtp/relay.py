"""The outbound relay queue: SMTP (aiosmtplib) to other domains' MX listeners, with retries and bounces.

Why a queue and not a send inside the DATA handler: the sender's 250 must not wait on another server, a 4xx
from that server must be retried later, and a 5xx (or giving up) must come back to the sender as a DSN.
Routing uses a table (domain -> host:port) in place of DNS MX lookups, since every server of the lab listens on
127.0.0.1.

Each destination domain has a lane: entries ready now, entries waiting for their retry time, and a few worker
tasks that each keep one SMTP connection open while there is work, and `linger` seconds after (connection reuse
keeps the cross-domain rate up and its latency under a millisecond), then QUIT. Entries are in the spool from `enqueue` until
their last recipient is delivered or bounced.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiosmtplib

from recall_lab.fake_servers.activity import Activity
from recall_lab.fake_servers.smtp.spool import Spool

log = logging.getLogger(__name__)

Route = tuple[str, int]


@dataclass
class Failure:
    """One recipient the relay could not deliver to (what a DSN reports)."""

    recipient: str
    status: str  # enhanced status code "5.1.1"
    diagnostic: str  # "smtp; 550 5.1.1 no such user"
    remote_mta: str | None = None


@dataclass
class RelayEntry:
    id: str
    queue_id: str
    dest: str
    mail_from: str
    recipients: list[str]
    raw: bytes
    smtputf8: bool = False
    attempts: int = 0
    next_attempt: float = 0.0  # wall clock (time.time()), so it means the same after a restart
    created: float = field(default_factory=time.time)
    last_error: str = ""

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "queue_id": self.queue_id, "dest": self.dest, "mail_from": self.mail_from,
                "recipients": self.recipients, "smtputf8": self.smtputf8, "attempts": self.attempts,
                "next_attempt": self.next_attempt, "created": self.created, "last_error": self.last_error}

    @classmethod
    def from_record(cls, record: dict[str, Any], raw: bytes) -> RelayEntry:
        return cls(id=record["id"], queue_id=record["queue_id"], dest=record["dest"],
                   mail_from=record["mail_from"], recipients=list(record["recipients"]), raw=raw,
                   smtputf8=bool(record.get("smtputf8")), attempts=int(record.get("attempts", 0)),
                   next_attempt=float(record.get("next_attempt", 0.0)),
                   created=float(record.get("created", time.time())), last_error=record.get("last_error", ""))


BounceCallback = Callable[[RelayEntry, list[Failure], bool], Awaitable[None]]


def _status_of(code: int, message: str) -> str:
    """The enhanced status code of a reply, or a generic one from its class."""
    first = message.split(None, 1)[0] if message else ""
    parts = first.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts) and first[0] in "245":
        return first
    return f"{str(code)[0]}.0.0"


class _Lane:
    """Entries for one destination domain."""

    def __init__(self) -> None:
        self.ready: deque[RelayEntry] = deque()
        self.delayed: list[tuple[float, int, RelayEntry]] = []
        self.wakeup = asyncio.Event()
        self.workers: list[asyncio.Task[None]] = []


class RelayQueue:
    def __init__(self, domain: str, spool: Spool, route: Callable[[str], Route | None],
                 on_bounce: BounceCallback, *, retry_delays: Sequence[float] = (1.0, 5.0, 30.0),
                 hostname: str | None = None, connections_per_domain: int = 2, timeout: float = 30.0,
                 linger: float = 1.0, activity: Activity | None = None) -> None:
        """`activity`: where each hop is reported (one "relayed" entry per attempt: who was handed over, who was
        refused for good, who waits for a retry)."""
        self.domain = domain
        self.activity = activity if activity is not None else Activity()
        self.spool = spool
        self.route = route
        self.on_bounce = on_bounce
        self.retry_delays = tuple(retry_delays)
        self.hostname = hostname or domain
        self.connections_per_domain = max(1, connections_per_domain)
        self.timeout = timeout
        self.linger = linger  # keep an idle connection this long for the next message (bursts, latency)
        self._lanes: dict[str, _Lane] = {}
        self._seq = itertools.count()
        self._entries: dict[str, RelayEntry] = {}
        self._inflight = 0
        self._paused = False
        self._running = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.delivered = 0  # recipients handed over with 250 (for tests and the benchmark)
        self._attempted = asyncio.Condition()

    # -- public ---------------------------------------------------------------------------------------
    def enqueue(self, queue_id: str, mail_from: str, recipients: Sequence[str], raw: bytes,
                smtputf8: bool = False) -> list[RelayEntry]:
        """Queue a message for its remote recipients, one entry per destination domain; spooled on return."""
        by_dest: dict[str, list[str]] = {}
        for rcpt in recipients:
            by_dest.setdefault(rcpt.rpartition("@")[2].lower(), []).append(rcpt)
        entries = []
        for n, (dest, rcpts) in enumerate(sorted(by_dest.items())):
            entry = RelayEntry(id=f"{queue_id}-{n}", queue_id=queue_id, dest=dest, mail_from=mail_from,
                               recipients=rcpts, raw=raw, smtputf8=smtputf8)
            self.spool.put(entry.id, entry.record(), raw)
            entries.append(entry)
        for entry in entries:
            self._add(entry)
        return entries

    async def start(self) -> None:
        """Pick up what an earlier run left in the spool, then deliver as entries come."""
        self._running = True
        for entry_id, record, raw in self.spool.load():
            if entry_id not in self._entries:
                self._add(RelayEntry.from_record(record, raw))

    async def stop(self) -> None:
        """Stop the workers; undelivered entries stay in the spool (on disk, for the next start)."""
        self._running = False
        tasks = [t for lane in self._lanes.values() for t in lane.workers]
        for lane in self._lanes.values():
            lane.wakeup.set()
        # Python 3.11's asyncio.wait_for (which aiosmtplib uses) can swallow a cancellation that races with a
        # reply; such a worker goes on, so cancel again until it is done (it also checks _running itself).
        pending = set(tasks)
        while pending:
            for task in pending:
                task.cancel()
            _done, pending = await asyncio.wait(pending, timeout=0.1)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                task.result()
        for lane in self._lanes.values():
            lane.workers.clear()
        if tasks:
            # A closed transport releases its socket in a callback of the next loop turn: let it run, so
            # that a stopped lab holds no file descriptor.
            await asyncio.sleep(0)
        self._idle.set()

    def pause(self) -> None:
        """Stop starting deliveries (entries wait, still spooled); for tests of restarts and outages."""
        self._paused = True
        self._update_idle()

    def resume(self) -> None:
        self._paused = False
        for dest, lane in self._lanes.items():
            self._ensure_workers(dest, lane)
            lane.wakeup.set()
        self._update_idle()

    @property
    def paused(self) -> bool:
        return self._paused

    def pending(self) -> list[RelayEntry]:
        return list(self._entries.values())

    def retry_now(self) -> None:
        """Make every waiting entry due now (tests, and `recall-lab` operators impatient with backoff)."""
        for lane in self._lanes.values():
            while lane.delayed:
                _, _, entry = heapq.heappop(lane.delayed)
                entry.next_attempt = 0.0
                lane.ready.append(entry)
            lane.wakeup.set()

    async def wait_idle(self) -> None:
        """Until no entry is left (or the queue is paused and nothing is in flight)."""
        await self._idle.wait()

    @property
    def idle(self) -> bool:
        return self._idle.is_set()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Until `predicate()` holds, checked after every delivery attempt (tests: "the first try failed")."""
        async with self._attempted:
            await self._attempted.wait_for(predicate)

    # -- internals ------------------------------------------------------------------------------------
    def _add(self, entry: RelayEntry) -> None:
        self._entries[entry.id] = entry
        lane = self._lanes.get(entry.dest)
        if lane is None:
            lane = self._lanes[entry.dest] = _Lane()
        if entry.next_attempt > time.time():
            heapq.heappush(lane.delayed, (entry.next_attempt, next(self._seq), entry))
        else:
            lane.ready.append(entry)
        self._update_idle()
        self._ensure_workers(entry.dest, lane)
        lane.wakeup.set()

    def _ensure_workers(self, dest: str, lane: _Lane) -> None:
        if not self._running or self._paused:
            return
        lane.workers = [t for t in lane.workers if not t.done()]
        want = min(self.connections_per_domain, max(1, len(lane.ready)))
        while len(lane.workers) < want:
            lane.workers.append(asyncio.get_running_loop().create_task(
                self._worker(dest, lane), name=f"relay {self.domain}->{dest}"))

    def _update_idle(self) -> None:
        if not self._entries or (self._paused and self._inflight == 0):
            self._idle.set()
        else:
            self._idle.clear()

    async def _next(self, lane: _Lane, smtp: aiosmtplib.SMTP | None) -> RelayEntry | None:
        """The next due entry; None when the lane has nothing due and the connection should be released."""
        while True:
            if self._paused or not self._running:
                return None
            now = time.time()
            while lane.delayed and lane.delayed[0][0] <= now:
                lane.ready.append(heapq.heappop(lane.delayed)[2])
            if lane.ready:
                return lane.ready.popleft()
            if smtp is not None:
                # Nothing due: keep the connection a moment for the next message, then release it.
                lane.wakeup.clear()
                timeout = self.linger
                if lane.delayed:
                    timeout = min(timeout, max(0.0, lane.delayed[0][0] - time.time()))
                try:
                    await asyncio.wait_for(lane.wakeup.wait(), timeout)
                except TimeoutError:
                    pass
                if lane.ready or (lane.delayed and lane.delayed[0][0] <= time.time()):
                    continue
                return None
            if not lane.delayed:
                return None
            lane.wakeup.clear()
            timeout = max(0.0, lane.delayed[0][0] - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lane.wakeup.wait(), timeout)

    async def _worker(self, dest: str, lane: _Lane) -> None:
        smtp: aiosmtplib.SMTP | None = None
        try:
            while True:
                entry = await self._next(lane, smtp)
                if entry is None:
                    if smtp is not None and self._running:
                        await self._quit(smtp)
                        smtp = None
                        continue  # maybe there is delayed work to wait for
                    return
                self._inflight += 1
                try:
                    smtp = await self._attempt(entry, smtp)
                finally:
                    self._inflight -= 1
                    self._update_idle()
                async with self._attempted:
                    self._attempted.notify_all()
        finally:
            if smtp is not None:
                smtp.close()
            current = asyncio.current_task()
            if current in lane.workers:
                lane.workers.remove(current)  # type: ignore[arg-type]

    async def _quit(self, smtp: aiosmtplib.SMTP) -> None:
        try:
            await asyncio.wait_for(smtp.quit(), 2.0)
        except Exception:
            smtp.close()

    async def _attempt(self, entry: RelayEntry, smtp: aiosmtplib.SMTP | None) -> aiosmtplib.SMTP | None:
        """One delivery attempt; returns the connection to reuse (None when it broke)."""
        route = self.route(entry.dest)
        if route is None:
            await self._finish(entry, [], [Failure(r, "5.4.4", f"smtp; 550 5.4.4 no route to {entry.dest}")
                                       for r in entry.recipients], [])
            return smtp
        host, port = route
        mta = f"{host}:{port}"
        temp: list[Failure] = []
        perm: list[Failure] = []
        delivered: list[str] = []
        try:
            if smtp is None or not smtp.is_connected:
                smtp = await self._connect(host, port)
            options = ["SMTPUTF8"] if entry.smtputf8 else []
            if any(b > 127 for b in entry.raw):
                options.append("BODY=8BITMIME")
            errors, _ = await smtp.sendmail(entry.mail_from, entry.recipients, entry.raw, mail_options=options)
            for rcpt in entry.recipients:
                err = errors.get(rcpt)
                if err is None:
                    delivered.append(rcpt)
                else:
                    f = Failure(rcpt, _status_of(err.code, err.message), f"smtp; {err.code} {err.message}", mta)
                    (temp if 400 <= err.code < 500 else perm).append(f)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            for err in exc.recipients:
                f = Failure(err.recipient, _status_of(err.code, err.message), f"smtp; {err.code} {err.message}",
                            mta)
                (temp if 400 <= err.code < 500 else perm).append(f)
        except aiosmtplib.SMTPResponseException as exc:
            failures = [Failure(r, _status_of(exc.code, exc.message), f"smtp; {exc.code} {exc.message}", mta)
                        for r in entry.recipients]
            (temp if 400 <= exc.code < 500 else perm).extend(failures)
            if exc.code == 421 and smtp is not None:
                smtp.close()
                smtp = None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # Connection refused, reset, timeout: the other side may come back; retry later.
            if smtp is not None:
                smtp.close()
            smtp = None
            reason = str(exc) or type(exc).__name__
            temp.extend(Failure(r, "4.4.1", f"smtp; 421 4.4.1 {reason}", mta) for r in entry.recipients)
        self.delivered += len(delivered)
        self.activity.publish(self.domain, "relayed", queue_id=entry.queue_id, dest=entry.dest, mta=mta,
                              attempt=entry.attempts + 1, delivered=list(delivered),
                              refused=[f.recipient for f in perm], deferred=[f.recipient for f in temp],
                              diagnostic=(perm or temp)[0].diagnostic if perm or temp else "")
        await self._finish(entry, delivered, perm, temp)
        return smtp

    async def _connect(self, host: str, port: int) -> aiosmtplib.SMTP:
        """A connection to the next hop, encrypted when it offers STARTTLS (RFC 3207), as MTAs do.

        Opportunistic, the way MTA-to-MTA TLS works on the Internet (RFC 7435): the certificate is not checked,
        since a routing table entry names no identity to check it against, and a hop whose STARTTLS fails
        (a 454 reply, a broken handshake) still gets the mail over a fresh plain-text connection, at once,
        instead of a retry that would fail the same way. The receiving MX records the difference in its
        Received header (ESMTPS or ESMTP)."""
        smtp = await self._plain_connection(host, port)
        try:
            await smtp.ehlo()
        except aiosmtplib.SMTPHeloError:  # an old server without ESMTP: HELO, and no STARTTLS to try
            await smtp.helo()
            return smtp
        if not smtp.supports_extension("starttls"):
            return smtp
        try:
            await smtp.starttls()
            return smtp
        except (aiosmtplib.SMTPException, ssl.SSLError, OSError) as exc:
            log.info("relay to %s:%d: STARTTLS failed (%s); sending without TLS", host, port,
                     str(exc) or type(exc).__name__)
            if smtp.is_connected and isinstance(exc, aiosmtplib.SMTPResponseException):
                return smtp  # refused with a reply (RFC 3207: the session goes on in plain text)
            smtp.close()
        return await self._plain_connection(host, port)

    async def _plain_connection(self, host: str, port: int) -> aiosmtplib.SMTP:
        """Connected, nothing negotiated yet; a later starttls() does not check the certificate (see _connect)."""
        smtp = aiosmtplib.SMTP(hostname=host, port=port, local_hostname=self.hostname, timeout=self.timeout,
                               start_tls=False, use_tls=False, validate_certs=False)
        await smtp.connect()
        return smtp

    async def _finish(self, entry: RelayEntry, delivered: list[str], perm: list[Failure],
                      temp: list[Failure]) -> None:
        if temp and entry.attempts < len(self.retry_delays):
            delay = self.retry_delays[entry.attempts]
            entry.attempts += 1
            entry.recipients = [f.recipient for f in temp]
            entry.last_error = temp[0].diagnostic
            entry.next_attempt = time.time() + delay
            if perm:
                await self._bounce(entry, perm, False)
            if self._running:
                self.spool.update(entry.id, entry.record())
                lane = self._lanes[entry.dest]
                heapq.heappush(lane.delayed, (entry.next_attempt, next(self._seq), entry))
                lane.wakeup.set()
            log.info("relay %s -> %s: %s; retry %d in %.2fs", entry.id, entry.dest, entry.last_error,
                     entry.attempts, delay)
            return
        failures = perm + temp  # temp here means: retries exhausted
        if failures:
            await self._bounce(entry, failures, bool(temp))
        self._entries.pop(entry.id, None)
        self.spool.remove(entry.id)
        self._update_idle()

    async def _bounce(self, entry: RelayEntry, failures: list[Failure], gave_up: bool) -> None:
        try:
            await self.on_bounce(entry, failures, gave_up)
        except Exception:
            log.exception("could not return a DSN for %s", entry.id)
