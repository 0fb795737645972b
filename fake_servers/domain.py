"""One mail domain's server: the assembly of its listeners (MX, submission, IMAP), its services (store, accounts,
the intake and its pipeline, final delivery, held mail, the relay queue, background tasks) and their lifecycle.

Why one object per domain: corp.example (the organisation) and mail.example (the external provider) are two
different servers in the lab, as they are in life: each has its own users and mailboxes, and mail between them
goes over SMTP through the relay queue and the other's MX listener. The harness's Lab builds one of these per
configured domain, starts them in two phases (`open`: listeners up; `run`: relay and policies go, once every
domain's MX is reachable) and stops them.

With a TLS context the domain also listens for IMAPS and submission over implicit TLS (RFC 8314), next to the
STARTTLS ports. Its `faults` (fake_servers/faults.py: a FaultSet with a generator of the domain's own) are what
its listeners, SMTP hooks and IMAP connections ask before they act; tests add and clear rules there.

Where the work is done (see docs/pipeline.md): intake.py takes every message in (`accept` for SMTP, `submit` for
the server's own mail) and acts on what the pipeline (pipeline.py) returns; stamping.py writes the trace fields;
delivery.py puts mail into mailboxes, the Sent folder, the relay queue or the held spool; background.py keeps
a delivery whole when its SMTP client goes away. This module only builds them and wires them together.
"""

from __future__ import annotations

import contextlib
import re
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.activity import Activity
from recall_lab.fake_servers.background import BackgroundTasks
from recall_lab.fake_servers.delivery import FinalDelivery, HeldMail
from recall_lab.fake_servers.faults import FaultRule, FaultSet, Fired
from recall_lab.fake_servers.guard import ConnectionGuard
from recall_lab.fake_servers.intake import Intake
from recall_lab.fake_servers.pipeline import (
    Channel,
    DomainServices,
    Pipeline,
    UnknownPolicy,
    Verdict,
    resolve_pipeline,
    unknown_settings,
)
from recall_lab.fake_servers.smtp import headers
from recall_lab.fake_servers.smtp.handlers import MxHandler, SubmissionHandler
from recall_lab.fake_servers.smtp.listener import SmtpListener
from recall_lab.fake_servers.smtp.relay import RelayQueue, Route
from recall_lab.fake_servers.smtp.spool import Spool
from recall_lab.fake_servers.stamping import Stamper, new_queue_id
from recall_lab.fake_servers.store.base import MailStore, MessageRecord
from recall_lab.fake_servers.transcript import TranscriptRecorder


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
    #: Injected faults: rules (FaultRule, spec strings or tables) and the seed of the domain's generator.
    faults: Sequence[FaultRule | str | Mapping[str, Any]] = ()
    fault_seed: int | str = 0


@dataclass
class Ports:
    imap: int = 0
    submission: int = 0
    mx: int = 0
    imaps: int = 0  # implicit TLS (only with a TLS context)
    submissions: int = 0


class PolicySettingsError(Exception):
    """A policy of the domain rejected its settings (or is unknown): one line naming domain, policy, setting."""


class ListenError(Exception):
    """A listener could not bind; the message names the address and what it was for (one line)."""

    def __init__(self, errno: int | None, message: str) -> None:
        super().__init__(message)
        self.errno = errno


#: Local parts a user added at run time may have: RFC 5321's dot-atom, without quoting (a lab account is typed).
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


class DomainServer:
    """The assembly of one domain's server: builds its services and listeners and runs their lifecycle; the
    mail itself goes through `intake` (what `accept`, the MailAcceptor the SMTP handlers call, hands over to)."""

    def __init__(self, spec: DomainSpec, store: MailStore, *, host: str = "127.0.0.1", ports: Ports | None = None,
                 tls_context: ssl.SSLContext | None = None, transcripts: TranscriptRecorder | None = None,
                 router: Callable[[str], Route | None] = lambda _d: None, spool_dir: Path | None = None,
                 retry_delays: Sequence[float] = (1.0, 5.0, 30.0, 120.0), relay_connections: int = 2,
                 imap: bool = True, guard: ConnectionGuard | None = None,
                 clock: Callable[[], float] = time.monotonic, activity: Activity | None = None,
                 tls_handshake_timeout: float = 10.0, imap_elsewhere: Endpoint | None = None) -> None:
        """`tls_handshake_timeout`: seconds a client of an implicit-TLS port has to finish its handshake.
        `activity`: the feed this domain reports what it does to (accepted, relayed, each policy's events;
        shared by a lab's domains, else one of its own). `guard`: connection caps and login throttling for the three listeners (shared with other domains when
        given; else the domain gets one of its own with the default limits). `clock`: the seconds the policies
        keep time by (services.clock; a lab on simulated time passes its own). `imap_elsewhere`: the domain's
        IMAP is served by another server over the same mail (a Dovecot behind a DovecotStore): this domain
        starts no IMAP listener of its own and names that endpoint as its IMAP."""
        self.spec = spec
        self.imap_elsewhere = imap_elsewhere
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
        self.activity = activity if activity is not None else Activity()
        self.faults = FaultSet(self.domain, seed=spec.fault_seed, rules=spec.faults, clock=clock,
                               on_fire=self._fault_fired)
        self.tls_handshake_timeout = tls_handshake_timeout
        self.relay_spool = Spool(spool_dir / "relay" if spool_dir else None)
        self.held_spool = Spool(spool_dir / "held" if spool_dir else None)
        # the relay's bounces go back in through the intake (a DSN is the server's own mail)
        self.relay = RelayQueue(self.domain, self.relay_spool, router, lambda *a: self.intake.bounce(*a),
                                retry_delays=retry_delays, hostname=self.hostname,
                                connections_per_domain=relay_connections, activity=self.activity)
        self.tasks = BackgroundTasks(self.domain)
        self.held_mail = HeldMail(self.held_spool)
        self.final = FinalDelivery(store, self.accounts, self.local_domains, self.relay)
        self.intake = Intake(self.domain, Stamper(self.domain, self.hostname), self.final, self.held_mail,
                             self.tasks, activity=self.activity)
        self.services = DomainServices(
            domain=self.domain, role=self.role, store=store, accounts=self.accounts,
            local_domains=self.local_domains, config=dict(spec.policies),
            mail=self.final, held_mail=self.held_mail, submitter=self.intake, tasks=self.tasks,
            clock=clock, activity=self.activity)
        self.pipeline = Pipeline([], self.services)
        self.intake.connect(self.pipeline)  # the policies reach the intake back only through services.submit
        self._want_imap = imap and imap_elsewhere is None
        self.imap_server: Any = None
        self.guard = guard if guard is not None else ConnectionGuard()
        self.mx_listener = SmtpListener(MxHandler(self), host=host, port=self.ports.mx, hostname=self.hostname,
                                        data_size_limit=spec.max_message_size, tls_context=tls_context,
                                        transcripts=transcripts, guard=self.guard)
        self.submission_listener = SmtpListener(
            SubmissionHandler(self), host=host, port=self.ports.submission, hostname=self.hostname,
            data_size_limit=spec.max_message_size, tls_context=tls_context, transcripts=transcripts,
            guard=self.guard)
        self.submissions_listener: SmtpListener | None = None
        if tls_context is not None:
            self.submissions_listener = SmtpListener(
                SubmissionHandler(self), host=host, port=self.ports.submissions, hostname=self.hostname,
                data_size_limit=spec.max_message_size, tls_context=tls_context, transcripts=transcripts,
                guard=self.guard, implicit_tls=True, tls_handshake_timeout=tls_handshake_timeout)
        self.imaps_server: Any = None

    # -- lifecycle ------------------------------------------------------------------------------------
    async def open(self) -> None:
        """Accounts into the store, policies built, every listener bound (raises ListenError)."""
        for user in self.accounts:
            self.store.ensure_user(user)
        self.pipeline.policies = self._build_policies()
        self.held_mail.load()
        await self._listen(self.mx_listener, "MX")
        await self._listen(self.submission_listener, "submission")
        if self.submissions_listener is not None:
            await self._listen(self.submissions_listener, "submission over TLS")
        if self._want_imap:
            from recall_lab.fake_servers.imap.server import (
                ImapServer,  # imported late: the IMAP layer is optional here
            )

            self.imap_server = ImapServer(self.store, self.accounts, host=self.host, port=self.ports.imap,
                                          ssl_context=self.tls_context, transcripts=self.transcripts,
                                          name=self.domain, guard=self.guard, faults=self.faults)
            try:
                await self.imap_server.start()
            except OSError as exc:
                self.imap_server = None
                raise ListenError(exc.errno, _bind_message(self.host, self.ports.imap, self.domain, "IMAP", exc)
                                  ) from None
            if self.tls_context is not None:
                self.imaps_server = ImapServer(self.store, self.accounts, host=self.host, port=self.ports.imaps,
                                               ssl_context=self.tls_context, transcripts=self.transcripts,
                                               name=self.domain, guard=self.guard, faults=self.faults,
                                               implicit_tls=True,
                                               tls_handshake_timeout=self.tls_handshake_timeout)
                try:
                    await self.imaps_server.start()
                except OSError as exc:
                    self.imaps_server = None
                    raise ListenError(exc.errno, _bind_message(self.host, self.ports.imaps, self.domain,
                                                               "IMAPS", exc)) from None

    def _build_policies(self) -> list[Any]:
        """The domain's policies; a policy refusing its settings (ValueError/TypeError from its factory) or an
        unknown policy name becomes PolicySettingsError naming the domain, the policy and the reason."""
        try:
            registrations = resolve_pipeline(self.spec.pipeline, self.role)
        except UnknownPolicy as exc:
            raise PolicySettingsError(f"{self.domain}: {exc.args[0] if exc.args else exc}") from None
        unknown, allowed = unknown_settings(self.services.config, registrations)
        if unknown:
            names = ", ".join(r.name for r in registrations) or "none"
            raise PolicySettingsError(
                f"bad lab configuration: domain {self.domain}: no policy reads {', '.join(unknown)} (its policies: "
                f"{names}; they read: {', '.join(allowed) or 'nothing'})")
        policies = []
        for reg in registrations:
            try:
                policies.append(reg.factory(self.services.config, self.services))
            except (ValueError, TypeError) as exc:
                reason = " ".join(str(exc).split()) or type(exc).__name__
                raise PolicySettingsError(f"bad lab configuration: {reason} (domain {self.domain}, policy {reg.name!r})"
                                          ) from None
        self.services.add_policies(policies)  # siblings find each other through the services, not globals
        return policies

    async def _listen(self, listener: SmtpListener, what: str) -> None:
        try:
            await listener.start()
        except OSError as exc:
            raise ListenError(exc.errno, _bind_message(self.host, listener.requested_port, self.domain, what, exc)
                              ) from None

    async def run(self) -> None:
        """Start the policies and the relay (after every domain of the lab listens)."""
        await self.pipeline.start()
        await self.relay.start()

    async def stop(self) -> None:
        """Listeners first (no new mail), then in-flight deliveries finish, then relay and policies stop."""
        await self.mx_listener.stop()
        await self.submission_listener.stop()
        if self.submissions_listener is not None:
            await self.submissions_listener.stop()
        for attr in ("imap_server", "imaps_server"):
            server = getattr(self, attr)
            if server is not None:
                with contextlib.suppress(Exception):
                    await server.stop()
                setattr(self, attr, None)
        await self.tasks.stop()
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
        if self.imap_elsewhere is not None:
            return self.imap_elsewhere
        if self.imap_server is None:
            return None
        return Endpoint(self.imap_server.host, self.imap_server.port)

    @property
    def imaps(self) -> Endpoint | None:
        """IMAP over implicit TLS (None without a TLS context)."""
        if self.imaps_server is None:
            return None
        return Endpoint(self.imaps_server.host, self.imaps_server.port)

    @property
    def submissions(self) -> Endpoint | None:
        """Submission over implicit TLS (None without a TLS context)."""
        if self.submissions_listener is None:
            return None
        return Endpoint(self.host, self.submissions_listener.port)

    def _fault_fired(self, fired: Fired) -> None:
        self.activity.publish(self.domain, "fault", rule=fired.rule, where=fired.where, action=fired.action)

    def add_user(self, address: str, password: str) -> str:
        """An account added while the server runs: its mailboxes made, IMAP and SMTP AUTH accept it at once."""
        user = address.strip().lower()
        local, at, domain = user.rpartition("@")
        if not at or not 0 < len(local) <= 64 or domain != self.domain or not _LOCAL_PART.fullmatch(local):
            raise ValueError(f"not an address of {self.domain}: {address!r}")
        if not password or any(ord(c) < 32 or ord(c) == 127 for c in password) or len(password) > 256:
            raise ValueError("a password must be 1 to 256 printable characters")
        self.accounts.add(user, password)
        self.store.ensure_user(user)
        return user

    # -- MailAcceptor (what the SMTP handlers call) ---------------------------------------------------
    def is_local(self, address: str) -> bool:
        return self.services.is_local(address)

    async def accept(self, *, channel: Channel, auth_user: str | None, mail_from: str, recipients: list[str],
                     raw: bytes, smtputf8: bool, helo: str | None, peer: Any, tls: bool,
                     header_block: headers.HeaderBlock | None = None) -> str:
        """The reply to DATA, once the intake has delivered, queued, held or refused the message."""
        return await self.intake.accept(channel=channel, auth_user=auth_user, mail_from=mail_from,
                                        recipients=recipients, raw=raw, smtputf8=smtputf8, helo=helo, peer=peer,
                                        tls=tls, header_block=header_block)

    # -- the services, for tests and tools (policies use `services`) ---------------------------------
    async def submit(self, mail_from: str, recipients: list[str], raw: bytes, *, channel: Channel = "internal",
                     marks: set[str] | None = None, save_sent_copy: bool = False,
                     auth_user: str | None = None) -> str:
        return await self.intake.submit(mail_from, recipients, raw, channel=channel, marks=marks or (),
                                        save_sent_copy=save_sent_copy, auth_user=auth_user)

    def deliver_local(self, user: str, raw: bytes, *, mail_from: str = "", mailbox: str = "INBOX"
                      ) -> MessageRecord:
        return self.final.deliver_local(user, raw, mail_from=mail_from, mailbox=mailbox)

    async def wait_idle(self) -> bool:
        """Wait for in-flight deliveries, spawned tasks and the relay queue; True if there was anything."""
        waited = False
        while True:
            if await self.tasks.wait():
                waited = True
                continue
            if not self.relay.idle:
                waited = True
                await self.relay.wait_idle()
                continue
            return waited

    @property
    def busy(self) -> bool:
        return self.tasks.busy or not self.relay.idle


def _bind_message(host: str, port: int, domain: str, what: str, exc: OSError) -> str:
    reason = "is already in use" if exc.errno == 98 else f"cannot be used ({exc.strerror or exc})"
    return f"port {host}:{port} ({domain} {what}) {reason}"


#: Re-exported for callers that only need the verdicts.
__all__ = ["DomainServer", "DomainSpec", "Endpoint", "ListenError", "PolicySettingsError", "Ports", "Verdict", "new_queue_id"]
