"""One mail domain's server: its store and accounts, IMAP, the MX and submission listeners, the delivery pipeline,
the relay queue and the spool of held messages.

Why one object per domain: corp.example (the organisation) and mail.example (the external provider) are two
different servers in the lab, as they are in life: each has its own users and mailboxes, and mail between them
goes over SMTP through the relay queue and the other's MX listener. The harness's Lab builds one of these per
configured domain, starts them in two phases (`open`: listeners up; `run`: relay and policies go, once every
domain's MX is reachable) and stops them.

What happens to an accepted message (see docs/pipeline.md):
`accept` stamps it (Received; for submission Message-ID, Date, Bcc bookkeeping), runs the pipeline (policies,
then Sent copy, local delivery, relay queue), and only then answers 250. The run is shielded from the SMTP
session, so a client that disconnects mid-delivery cannot leave a message half delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
import time
from collections.abc import Callable, Coroutine, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from fake_servers.accounts import Accounts
from fake_servers.guard import ConnectionGuard
from fake_servers.pipeline import (
    Channel,
    Delivery,
    DomainServices,
    Pipeline,
    PolicyReject,
    ServiceHooks,
    UnknownPolicy,
    Verdict,
    resolve_pipeline,
)
from fake_servers.recall.format import HEADER_VERIFIED, strip_verified
from fake_servers.smtp import headers
from fake_servers.smtp.canonical import to_crlf, trace_text
from fake_servers.smtp.dsn import build_dsn
from fake_servers.smtp.handlers import MxHandler, SubmissionHandler
from fake_servers.smtp.listener import SmtpListener
from fake_servers.smtp.relay import Failure, RelayEntry, RelayQueue, Route
from fake_servers.smtp.spool import Spool
from fake_servers.store.base import MailStore, MessageRecord, StoreError
from fake_servers.transcript import TranscriptRecorder

log = logging.getLogger(__name__)

T = TypeVar("T")


class Endpoint(NamedTuple):
    host: str
    port: int

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port}


@dataclass
class DomainSpec:
    """What a domain server is made of (the harness's DomainConfig maps onto this)."""

    name: str
    role: str = "external"
    users: Mapping[str, str] = field(default_factory=dict)
    policies: Mapping[str, Any] = field(default_factory=dict)
    pipeline: Sequence[str] | None = None
    max_message_size: int = 10 * 1024 * 1024


@dataclass
class Ports:
    imap: int = 0
    submission: int = 0
    mx: int = 0


class PolicySettingsError(Exception):
    """A policy of the domain rejected its settings (or is unknown): one line naming domain, policy, setting."""


class ListenError(Exception):
    """A listener could not bind; the message names the address and what it was for (one line)."""

    def __init__(self, errno: int | None, message: str) -> None:
        super().__init__(message)
        self.errno = errno


_QUEUE_IDS = itertools.count()


def new_queue_id() -> str:
    """Unique across the process and across restarts (a spool file is named by it): time, then a counter."""
    return f"{time.time_ns() // 1000:X}{next(_QUEUE_IDS) & 0xFFFF:04X}"


class DomainServer:
    def __init__(self, spec: DomainSpec, store: MailStore, *, host: str = "127.0.0.1", ports: Ports | None = None,
                 tls_context: ssl.SSLContext | None = None, transcripts: TranscriptRecorder | None = None,
                 router: Callable[[str], Route | None] = lambda _d: None, spool_dir: Path | None = None,
                 retry_delays: Sequence[float] = (1.0, 5.0, 30.0, 120.0), relay_connections: int = 2,
                 imap: bool = True, guard: ConnectionGuard | None = None) -> None:
        """`guard`: connection caps and login throttling for the three listeners (shared with other domains when
        given; else the domain gets one of its own with the default limits)."""
        self.spec = spec
        self.domain = spec.name.lower()
        self.hostname = self.domain
        self.role = spec.role
        self.store = store
        self.host = host
        self.ports = ports or Ports()
        self.tls_context = tls_context
        self.transcripts = transcripts
        self.accounts = Accounts(spec.users)
        self.local_domains = frozenset({self.domain})
        self.relay_spool = Spool(spool_dir / "relay" if spool_dir else None)
        self.held_spool = Spool(spool_dir / "held" if spool_dir else None)
        self.relay = RelayQueue(self.domain, self.relay_spool, router, self._bounce, retry_delays=retry_delays,
                                hostname=self.hostname, connections_per_domain=relay_connections)
        self.services = DomainServices(
            domain=self.domain, role=self.role, store=store, accounts=self.accounts,
            local_domains=self.local_domains, config=dict(spec.policies),
            hooks=ServiceHooks(deliver_local=self.deliver_local, save_sent_copy=self.save_sent_copy,
                               submit=self.submit, release=self.release, discard=self.discard,
                               held=self.held, spawn=self.spawn))
        self.pipeline = Pipeline([], self.services, self._final_delivery, self._hold)
        self._want_imap = imap
        self.imap_server: Any = None
        self.guard = guard if guard is not None else ConnectionGuard()
        self.mx_listener = SmtpListener(MxHandler(self), host=host, port=self.ports.mx, hostname=self.hostname,
                                        data_size_limit=spec.max_message_size, tls_context=tls_context,
                                        transcripts=transcripts, guard=self.guard)
        self.submission_listener = SmtpListener(
            SubmissionHandler(self), host=host, port=self.ports.submission, hostname=self.hostname,
            data_size_limit=spec.max_message_size, tls_context=tls_context, transcripts=transcripts,
            guard=self.guard)
        self._held: dict[str, Delivery] = {}
        self._sent_names: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running = False

    # -- lifecycle ------------------------------------------------------------------------------------
    async def open(self) -> None:
        """Accounts into the store, policies built, every listener bound (raises ListenError)."""
        for user in self.accounts:
            self.store.ensure_user(user)
        self.pipeline.policies = self._build_policies()
        for entry_id, record, raw in self.held_spool.load():
            self._held[entry_id] = Delivery.from_record(record, raw)
        await self._listen(self.mx_listener, "MX")
        await self._listen(self.submission_listener, "submission")
        if self._want_imap:
            from fake_servers.imap.server import ImapServer  # imported late: the IMAP layer is optional here

            self.imap_server = ImapServer(self.store, self.accounts, host=self.host, port=self.ports.imap,
                                          ssl_context=self.tls_context, transcripts=self.transcripts,
                                          name=self.domain, guard=self.guard)
            try:
                await self.imap_server.start()
            except OSError as exc:
                self.imap_server = None
                raise ListenError(exc.errno, _bind_message(self.host, self.ports.imap, self.domain, "IMAP", exc)
                                  ) from None

    def _build_policies(self) -> list[Any]:
        """The domain's policies; a policy refusing its settings (ValueError/TypeError from its factory) or an
        unknown policy name becomes PolicySettingsError naming the domain, the policy and the reason."""
        try:
            registrations = resolve_pipeline(self.spec.pipeline, self.role)
        except UnknownPolicy as exc:
            raise PolicySettingsError(f"{self.domain}: {exc.args[0] if exc.args else exc}") from None
        policies = []
        for reg in registrations:
            try:
                policies.append(reg.factory(self.services.config, self.services))
            except (ValueError, TypeError) as exc:
                reason = " ".join(str(exc).split()) or type(exc).__name__
                raise PolicySettingsError(f"bad lab configuration: {reason} (domain {self.domain}, policy {reg.name!r})"
                                          ) from None
        return policies

    async def _listen(self, listener: SmtpListener, what: str) -> None:
        try:
            await listener.start()
        except OSError as exc:
            raise ListenError(exc.errno, _bind_message(self.host, listener.requested_port, self.domain, what, exc)
                              ) from None

    async def run(self) -> None:
        """Start the policies and the relay (after every domain of the lab listens)."""
        self._running = True
        await self.pipeline.start()
        await self.relay.start()

    async def stop(self) -> None:
        """Listeners first (no new mail), then in-flight deliveries finish, then relay and policies stop."""
        self._running = False
        await self.mx_listener.stop()
        await self.submission_listener.stop()
        if self.imap_server is not None:
            with contextlib.suppress(Exception):
                await self.imap_server.stop()
            self.imap_server = None
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=5.0)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self.relay.stop()
        await self.pipeline.stop()

    # -- endpoints ------------------------------------------------------------------------------------
    @property
    def mx(self) -> Endpoint:
        return Endpoint(self.host, self.mx_listener.port)

    @property
    def submission(self) -> Endpoint:
        return Endpoint(self.host, self.submission_listener.port)

    @property
    def imap(self) -> Endpoint | None:
        if self.imap_server is None:
            return None
        return Endpoint(self.imap_server.host, self.imap_server.port)

    # -- MailAcceptor (what the SMTP handlers call) ---------------------------------------------------
    def is_local(self, address: str) -> bool:
        return address.rpartition("@")[2].lower() in self.local_domains

    async def accept(self, *, channel: Channel, auth_user: str | None, mail_from: str, recipients: list[str],
                     raw: bytes, smtputf8: bool, helo: str | None, peer: Any, tls: bool,
                     header_block: headers.HeaderBlock | None = None) -> str:
        delivery = self._stamp(channel=channel, auth_user=auth_user, mail_from=mail_from, recipients=recipients,
                               raw=raw, smtputf8=smtputf8, helo=helo, peer=peer, tls=tls, block=header_block)
        try:
            await self._run_protected(self.pipeline.run(delivery), f"deliver {delivery.queue_id}")
        except PolicyReject as exc:
            return exc.reply
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: delivery of %s failed", self.domain, delivery.queue_id)
            return "451 4.3.0 Local error in processing; try again later"
        return f"250 2.0.0 Ok: queued as {delivery.queue_id}"

    def _stamp(self, *, channel: Channel, auth_user: str | None, mail_from: str, recipients: list[str],
               raw: bytes, smtputf8: bool, helo: str | None = None, peer: Any = None, tls: bool = False,
               marks: set[str] | None = None, save_sent_copy: bool | None = None,
               block: headers.HeaderBlock | None = None) -> Delivery:
        """A Delivery for an accepted message, with the server's trace and submission fix-ups applied.

        Every message enters here, whatever its channel, so here the server-only recall mark is stripped (as
        Authentication-Results is, RFC 8601), whichever policies the domain runs: only the recall policy puts it
        back, on what it vouches for. The server's own mail (`internal`) is made canonical (CRLF) like
        everything the SMTP edge accepts."""
        queue_id = new_queue_id()
        now = datetime.now(UTC)
        if channel == "internal":
            raw = to_crlf(raw)
        stripped = raw if block is not None and not block.has(HEADER_VERIFIED) else strip_verified(raw)
        if stripped is not raw:
            raw, block = stripped, None
            self.services.log("recall-mark-stripped", queue_id=queue_id, channel=channel, mail_from=mail_from)
        bcc: list[str] = []
        if channel in ("submission", "internal"):
            block = block or headers.HeaderBlock(raw)
            has_bcc = block.has("Bcc")
            if channel == "submission" or has_bcc:
                named = set(block.addresses("To", "Cc"))
                bcc = [r for r in recipients if r.lower() not in named]
                if has_bcc:
                    raw = headers.remove_headers(raw, ["Bcc"])
            missing = []
            if not block.has("Message-ID"):
                missing.append(("Message-ID", make_msgid(domain=self.domain)))
            if not block.has("Date"):
                missing.append(("Date", _rfc5322_date(now)))
            if missing:
                raw = headers.append_headers(raw, missing)
        raw = headers.prepend_headers(raw, [("Received", self._received(channel, helo, peer, tls, auth_user,
                                                                         smtputf8, queue_id, recipients, now))])
        return Delivery(domain=self.domain, channel=channel, auth_user=auth_user, mail_from=mail_from,
                        recipients=list(recipients), raw=raw, queue_id=queue_id, bcc=bcc,
                        trusted_marks=set(marks or ()),
                        save_sent_copy=(channel == "submission") if save_sent_copy is None else save_sent_copy,
                        smtputf8=smtputf8, received_at=now)

    def _received(self, channel: Channel, helo: str | None, peer: Any, tls: bool, auth_user: str | None,
                  smtputf8: bool, queue_id: str, recipients: Sequence[str], now: datetime) -> str:
        if channel == "internal":
            source = "from localhost (internal)"
            proto = "local"
        else:
            ip = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
            # nothing the client chose lands raw in a trace field (the SMTP edge refuses controls already)
            source = f"from {trace_text(helo, word=True) if helo else 'unknown'} ([{ip}])"  # ip: the socket's
            proto = ("UTF8SMTP" if smtputf8 else "ESMTP") + ("S" if tls else "") + ("A" if auth_user else "")
        who = f" for <{trace_text(recipients[0])}>" if len(recipients) == 1 else ""
        return f"{source} by {self.hostname} (recall-lab) with {proto} id {queue_id}{who}; {_rfc5322_date(now)}"

    # -- final delivery (after the policies) ----------------------------------------------------------
    async def _final_delivery(self, delivery: Delivery) -> None:
        if delivery.save_sent_copy:
            self.save_sent_copy(delivery)
        local: list[str] = []
        remote: list[str] = []
        seen: set[str] = set()
        for rcpt in delivery.recipients:
            key = rcpt.lower()
            if key in seen:
                continue
            seen.add(key)
            (local if self.is_local(rcpt) else remote).append(rcpt)
        failures = []
        for rcpt in local:
            user = self.accounts.canonical(rcpt)
            if user is None:
                failures.append(Failure(rcpt, "5.1.1", f"smtp; 550 5.1.1 <{rcpt}>: user unknown"))
                continue
            self._deliver(user, delivery.raw, delivery.mail_from, "INBOX")
        if remote:
            self.relay.enqueue(delivery.queue_id, delivery.mail_from, remote, delivery.raw, delivery.smtputf8)
        if failures and delivery.mail_from:
            await self._send_dsn(delivery.mail_from, delivery.raw, failures, delivery.queue_id,
                                 delivery.received_at, gave_up=False)

    def deliver_local(self, user: str, raw: bytes, *, mail_from: str = "", mailbox: str = "INBOX"
                      ) -> MessageRecord:
        """Into the store with Return-Path and Delivered-To (what policies call): CRLF line ends whatever a
        policy handed over, as the store keeps only the canonical form."""
        return self._deliver(user, to_crlf(raw), mail_from, mailbox)

    def _deliver(self, user: str, raw: bytes, mail_from: str, mailbox: str) -> MessageRecord:
        """`raw` (canonical already: through the edge or `deliver_local`) with its trace fields, into the store;
        nothing raw from the envelope in those fields."""
        stamped = headers.prepend_headers(raw, [("Return-Path", f"<{trace_text(mail_from)}>"),
                                                ("Delivered-To", trace_text(user))])
        return self.store.deliver(user, stamped, mailbox)

    def save_sent_copy(self, delivery: Delivery) -> MessageRecord | None:
        """The sender's own copy, \\Seen, in their Sent folder, with a Bcc header naming the Bcc recipients:
        the sender must be able to find (and later recall from) everyone it wrote to."""
        owner = delivery.auth_user or (delivery.mail_from if self.is_local(delivery.mail_from) else None)
        user = self.accounts.canonical(owner) if owner else None
        if user is None:
            return None
        raw = delivery.raw
        if delivery.bcc:
            raw = headers.append_headers(headers.remove_headers(raw, ["Bcc"]), [("Bcc", ", ".join(delivery.bcc))])
        try:
            return self.store.append(user, self._sent_mailbox(user), raw, ["\\Seen"])
        except StoreError:  # the Sent folder was renamed or deleted since it was cached: look again
            self._sent_names.pop(user, None)
            return self.store.append(user, self._sent_mailbox(user), raw, ["\\Seen"])

    def _sent_mailbox(self, user: str) -> str:
        """The user's \\Sent mailbox (cached: listing every mailbox per message would dominate delivery;
        save_sent_copy forgets the cache when an append to it fails)."""
        name = self._sent_names.get(user)
        if name is not None:
            return name
        name = "Sent"
        for info in self.store.list_mailboxes(user):
            if info.special_use == "\\Sent":
                name = info.name
                break
        self._sent_names[user] = name
        return name

    # -- held deliveries ------------------------------------------------------------------------------
    def _hold(self, delivery: Delivery) -> None:
        self._held[delivery.queue_id] = delivery
        self.held_spool.put(delivery.queue_id, delivery.to_record(), delivery.raw)

    async def release(self, queue_id: str) -> None:
        delivery = self._held.pop(queue_id)
        held_by, delivery.held_by = delivery.held_by, None
        try:
            # shielded: a policy's timer task cancelled at shutdown must not cut a delivery in half
            await asyncio.shield(self._track(self.pipeline.run(delivery, start_after=held_by), f"release {queue_id}"))
        except BaseException:
            if queue_id not in self._held:  # failed before anyone held it again: keep it held
                delivery.held_by = held_by
                self._held[queue_id] = delivery
            raise
        if queue_id not in self._held:
            self.held_spool.remove(queue_id)

    def discard(self, queue_id: str) -> Delivery:
        delivery = self._held.pop(queue_id)
        self.held_spool.remove(queue_id)
        return delivery

    def held(self) -> list[Delivery]:
        return list(self._held.values())

    # -- internal submissions, bounces, background work -----------------------------------------------
    async def submit(self, mail_from: str, recipients: list[str], raw: bytes, *, channel: Channel = "internal",
                     marks: set[str] | None = None, save_sent_copy: bool = False,
                     auth_user: str | None = None) -> str:
        delivery = self._stamp(channel=channel, auth_user=auth_user, mail_from=mail_from,
                               recipients=list(recipients), raw=raw, smtputf8=_needs_smtputf8(mail_from, recipients),
                               marks=marks, save_sent_copy=save_sent_copy)
        await self._run_protected(self.pipeline.run(delivery), f"submit {delivery.queue_id}")
        return delivery.queue_id

    async def _bounce(self, entry: RelayEntry, failures: list[Failure], gave_up: bool) -> None:
        if not entry.mail_from:
            log.warning("%s: bounce of a bounce dropped (%s)", self.domain, entry.id)
            return
        await self._send_dsn(entry.mail_from, entry.raw, failures, entry.queue_id,
                             datetime.fromtimestamp(entry.created, UTC), gave_up=gave_up)

    async def _send_dsn(self, to: str, original: bytes, failures: list[Failure], queue_id: str,
                        arrival: datetime, gave_up: bool) -> None:
        dsn = build_dsn(reporting_domain=self.domain, original_from=to, original_raw=original, failures=failures,
                        queue_id=queue_id, arrival=arrival, gave_up=gave_up)
        self.services.log("dsn", queue_id=queue_id, to=to, recipients=[f.recipient for f in failures],
                          status=[f.status for f in failures])
        await self.submit("", [to], dsn, channel="internal")

    async def _run_protected(self, coro: Coroutine[Any, Any, T], name: str) -> T:
        """Run a delivery to its end whatever happens to the caller (a client dropping the connection cancels
        the SMTP session's task): a message must never be left half delivered.

        Eagerly: the coroutine runs in the caller's task until it first suspends. Most deliveries never do
        (policies decide, the store appends, the relay queue takes the message, all synchronously), and as nothing
        else can run meanwhile, no cancellation can reach them; they cost no task, no shield and no extra turns
        of the event loop (about a tenth of the delivery path's CPU time). A delivery that does suspend
        (an internal submit, a policy waiting for something) continues in a tracked task (Lab.wait_idle awaits
        it, stop() cancels it last), which the caller awaits through asyncio.shield as before. Caveat for policy
        authors: code before a policy's first suspension runs in the SMTP session's task, so bind timeouts
        with asyncio.wait_for, not asyncio.timeout (which binds to the current task).
        """
        try:
            first = coro.send(None)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        return await asyncio.shield(self._track(_resume(coro, first), name))

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        return self._track(coro, name or "policy task")

    def _track(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.domain}: {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def wait_idle(self) -> bool:
        """Wait for in-flight deliveries, spawned tasks and the relay queue; True if there was anything."""
        waited = False
        while True:
            if self._tasks:
                waited = True
                await asyncio.wait(set(self._tasks))
                continue
            if not self.relay.idle:
                waited = True
                await self.relay.wait_idle()
                continue
            return waited

    @property
    def busy(self) -> bool:
        return bool(self._tasks) or not self.relay.idle


class _Resumed:
    """Awaitable that goes on driving a coroutine which already yielded `first` outside any task (see
    DomainServer._run_protected): it passes what the coroutine yields to the task, and what the task sends or
    throws (a wake-up, a cancellation) back into it, as `await` itself would."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self._coro, self._first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    value = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as done:
                    return done.value


async def _resume(coro: Coroutine[Any, Any, T], first: Any) -> T:
    return await _Resumed(coro, first)  # type: ignore[no-any-return]


_date_cache: tuple[int, str] = (-1, "")


def _rfc5322_date(now: datetime) -> str:
    """format_datetime, computed once per second (every accepted message stamps one or two)."""
    global _date_cache
    second = int(now.timestamp())
    if _date_cache[0] != second:
        _date_cache = (second, format_datetime(now.replace(microsecond=0)))
    return _date_cache[1]


def _needs_smtputf8(mail_from: str, recipients: Sequence[str]) -> bool:
    return not all(a.isascii() for a in (mail_from, *recipients))


def _bind_message(host: str, port: int, domain: str, what: str, exc: OSError) -> str:
    reason = "is already in use" if exc.errno == 98 else f"cannot be used ({exc.strerror or exc})"
    return f"port {host}:{port} ({domain} {what}) {reason}"


#: Re-exported for callers that only need the verdicts.
__all__ = ["DomainServer", "DomainSpec", "Endpoint", "ListenError", "PolicySettingsError", "Ports", "Verdict", "new_queue_id"]
