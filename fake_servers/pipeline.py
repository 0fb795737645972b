"""The delivery pipeline: the ordered policy hooks every accepted message runs through before delivery.

Why a pipeline and not code in the SMTP handler: recall interception, retention, legal hold and delayed send are
decisions about a *message*, not about the SMTP dialogue, and later issues add them without touching the
listeners. The contract (Delivery, Verdict, Policy, DomainServices, the registry) is documented in
docs/pipeline.md; keep the two in step.

The pipeline itself knows nothing of sockets and never calls back into the domain: `Pipeline.run` returns a
`PipelineResult` (deliver / hold / consumed / rejected) and the domain's intake (fake_servers/intake.py) acts on
it. `DomainServices` reaches the service objects the domain owns (final delivery, held mail, the intake, its
background tasks), each through a small protocol declared here.
"""

from __future__ import annotations

import asyncio
import enum
import importlib
import importlib.util
import logging
import pkgutil
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy as email_policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, Literal, Protocol, runtime_checkable

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.activity import Activity
from recall_lab.fake_servers.recall.recoverable import RecoverableItems
from recall_lab.fake_servers.smtp.headers import HeaderBlock, as_bytes_checked
from recall_lab.fake_servers.store.base import MailStore, MessageRecord

log = logging.getLogger(__name__)

Channel = Literal["submission", "mx", "internal"]


class Verdict(enum.Enum):
    """What a policy decided about a delivery."""

    CONTINUE = "continue"  # next policy, then final delivery
    CONSUMED = "consumed"  # the policy took the message over: nothing more happens to it
    HOLD = "hold"  # keep it until services.release(queue_id) / services.discard(queue_id)


class PolicyReject(Exception):
    """Raised by a policy to refuse a message: the SMTP client gets this reply and nothing is delivered.

    Only meaningful before the message was answered (submission and MX channels); on the internal channel
    `services.submit` re-raises it to the caller.
    """

    def __init__(self, text: str = "message refused by policy", code: int = 550, status: str = "5.7.1") -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.status = status

    @property
    def reply(self) -> str:
        return f"{self.code} {self.status} {self.text}"


_PARSER = BytesParser(policy=email_policy.default)


@dataclass(eq=False)
class Delivery:
    """One accepted message on its way through a domain's server (see docs/pipeline.md)."""

    domain: str
    channel: Channel
    auth_user: str | None
    mail_from: str
    recipients: list[str]
    raw: bytes
    queue_id: str
    bcc: list[str] = field(default_factory=list)
    trusted_marks: set[str] = field(default_factory=set)
    save_sent_copy: bool = False
    smtputf8: bool = False
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    held_by: str | None = None
    # The raw bytes the cached parse was made from: a policy that assigns `raw` gets a fresh parse.
    _parsed_from: bytes | None = field(default=None, repr=False)
    _parsed: EmailMessage | None = field(default=None, repr=False)

    @property
    def message(self) -> EmailMessage:
        """`raw` parsed with email.policy.default; parsed on first use only, so policy-free paths stay fast."""
        if self._parsed is None or self._parsed_from is not self.raw:
            self._parsed = _PARSER.parsebytes(self.raw)  # type: ignore[assignment]
            self._parsed_from = self.raw
        assert self._parsed is not None
        return self._parsed

    def set_message(self, msg: EmailMessage) -> None:
        """Replace the message: serialise `msg` (CRLF line ends, as SMTP carries it) into `raw`. ValueError when
        the bytes would not read back as `msg`'s fields (see headers.as_bytes_checked: re-serialising a parsed
        message can forge header fields on this Python)."""
        self.raw = as_bytes_checked(msg, email_policy.SMTPUTF8 if self.smtputf8 else email_policy.SMTP)
        self._parsed, self._parsed_from = msg, self.raw

    @property
    def message_id(self) -> str | None:
        """The Message-ID field as the one header reader reads it: no parse of the whole message (policies ask
        this of every held delivery on every recall)."""
        values = HeaderBlock(self.raw).values("Message-ID")
        return values[0].strip() if values else None

    def to_record(self) -> dict[str, Any]:
        """The JSON-able envelope (everything but `raw`), as the spool writes it."""
        return {
            "domain": self.domain,
            "channel": self.channel,
            "auth_user": self.auth_user,
            "mail_from": self.mail_from,
            "recipients": list(self.recipients),
            "queue_id": self.queue_id,
            "bcc": list(self.bcc),
            "trusted_marks": sorted(self.trusted_marks),
            "save_sent_copy": self.save_sent_copy,
            "smtputf8": self.smtputf8,
            "received_at": self.received_at.isoformat(),
            "held_by": self.held_by,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any], raw: bytes) -> Delivery:
        return cls(
            domain=record["domain"],
            channel=record["channel"],
            auth_user=record.get("auth_user"),
            mail_from=record["mail_from"],
            recipients=list(record["recipients"]),
            raw=raw,
            queue_id=record["queue_id"],
            bcc=list(record.get("bcc", ())),
            trusted_marks=set(record.get("trusted_marks", ())),
            save_sent_copy=bool(record.get("save_sent_copy", False)),
            smtputf8=bool(record.get("smtputf8", False)),
            received_at=datetime.fromisoformat(record["received_at"]),
            held_by=record.get("held_by"),
        )


@runtime_checkable
class Policy(Protocol):
    """A delivery hook. Optional methods: `async start(services)` and `async stop()`."""

    name: str

    async def on_delivery(self, delivery: Delivery, services: DomainServices) -> Verdict: ...


PolicyFactory = Callable[[Mapping[str, Any], "DomainServices"], Policy]


@dataclass(frozen=True)
class Registration:
    name: str
    factory: PolicyFactory
    default_roles: tuple[str, ...] = ()
    order: int = 100
    #: The keys of the domain's `policies` table this policy reads; None: not declared (then no key of a domain
    #: running it can be called unknown).
    settings: frozenset[str] | None = None


_REGISTRY: dict[str, Registration] = {}

#: The package whose modules are imported (for their register_policy calls) before a lab starts.
POLICY_PACKAGE = "recall_lab.fake_servers.policies"


def register_policy(name: str, factory: PolicyFactory, *, default_roles: Iterable[str] = (),
                    order: int = 100, settings: Iterable[str] | None = None) -> None:
    """Make a policy available under `name`. Registering a name again replaces it (module reloads in tests).
    `settings`: the keys of the domain's `policies` table it reads, so that a misspelt key is an error."""
    _REGISTRY[name] = Registration(name, factory, tuple(default_roles), order,
                                   frozenset(settings) if settings is not None else None)


def unknown_settings(keys: Iterable[str], registrations: Sequence[Registration]) -> tuple[list[str], list[str]]:
    """(the keys no policy of `registrations` reads, the keys they read), both sorted; no key is unknown when
    one of them does not declare its settings."""
    if any(r.settings is None for r in registrations):
        return [], []
    allowed = sorted(set().union(*(r.settings or frozenset() for r in registrations)))
    return sorted(k for k in keys if k not in allowed), allowed


def unregister_policy(name: str) -> None:
    _REGISTRY.pop(name, None)


def registered_policies() -> dict[str, Registration]:
    return dict(_REGISTRY)


def load_policy_modules(extra: Iterable[str] = ()) -> None:
    """Import every module of `recall_lab.fake_servers.policies` (when that package exists), then each of `extra`.

    Why not entry points: the policies live in this repository; an import list keeps discovery explicit and
    works from a source checkout.
    """
    if importlib.util.find_spec(POLICY_PACKAGE) is not None:
        package = importlib.import_module(POLICY_PACKAGE)
        for info in pkgutil.iter_modules(getattr(package, "__path__", [])):
            if not info.name.startswith("_"):
                importlib.import_module(f"{POLICY_PACKAGE}.{info.name}")
    for module in extra:
        importlib.import_module(module)


class UnknownPolicy(LookupError):
    pass


def resolve_pipeline(names: Sequence[str] | None, role: str) -> list[Registration]:
    """The registrations a domain runs: `names` in order, or (None) the role's defaults by `order`."""
    if names is None:
        chosen = [r for r in _REGISTRY.values() if role in r.default_roles]
        return sorted(chosen, key=lambda r: (r.order, r.name))
    missing = [n for n in names if n not in _REGISTRY]
    if missing:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise UnknownPolicy(f"unknown policy {missing[0]!r} (registered: {known})")
    return [_REGISTRY[n] for n in names]


# --- what a policy may use ---------------------------------------------------------------------------------


class LocalMail(Protocol):
    """Final delivery as a policy may use it (the domain's recall_lab.fake_servers.delivery.FinalDelivery)."""

    def deliver_local(self, user: str, raw: bytes, *, mail_from: str = "", mailbox: str = "INBOX"
                      ) -> MessageRecord: ...

    def save_sent_copy(self, delivery: Delivery) -> MessageRecord | None: ...


class HeldDeliveries(Protocol):
    """The held deliveries (the domain's recall_lab.fake_servers.delivery.HeldMail)."""

    def held(self) -> list[Delivery]: ...

    def discard(self, queue_id: str) -> Delivery: ...


class Submitter(Protocol):
    """The one path into the pipeline (the domain's recall_lab.fake_servers.intake.Intake): what `submit` and `release`
    reach, the same path SMTP acceptance takes."""

    async def submit(self, mail_from: str, recipients: Sequence[str], raw: bytes, *, channel: Channel = "internal",
                     marks: Iterable[str] = (), save_sent_copy: bool = False, auth_user: str | None = None) -> str: ...

    async def release(self, queue_id: str) -> None: ...


class Spawner(Protocol):
    """The domain's tracked background tasks (recall_lab.fake_servers.background.BackgroundTasks)."""

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]: ...


class DomainServices:
    """What a policy may use (see docs/pipeline.md#the-contract-names-other-modules-depend-on): the store, accounts,
    re-submission, an audit log, the domain's clock, its sibling policies and its recoverable-items area.

    Everything a policy needs from outside is passed in here, as the `email` package passes its policy objects in:
    the clock (a lab on simulated time gives its own; policies read `services.clock` rather than having one
    patched into them), the policy instances of the domain (`policy(name)`, registered when the domain builds its
    pipeline; recall asks delayed send to cancel a held original through it, the Lab drives a policy's
    `purge_now`/`release_now` through it) and the recoverable-items area legal hold fills.
    """

    def __init__(self, *, domain: str, role: str, store: MailStore, accounts: Accounts,
                 local_domains: Iterable[str], config: Mapping[str, Any], mail: LocalMail,
                 held_mail: HeldDeliveries, submitter: Submitter, tasks: Spawner,
                 clock: Callable[[], float] = time.monotonic, activity: Activity | None = None) -> None:
        self.domain = domain
        self.activity = activity if activity is not None else Activity()
        self.role = role
        self.store = store
        self.accounts = accounts
        self.local_domains = frozenset(d.lower() for d in local_domains)
        self.config = config
        self.clock = clock
        self.recoverable = RecoverableItems()
        self.audit_log: list[dict[str, Any]] = []
        # the service objects the domain owns; none of them is the domain server itself
        self._mail = mail
        self._held_mail = held_mail
        self._submitter = submitter
        self._tasks = tasks
        self._policies: dict[str, Policy] = {}

    def is_local(self, address: str) -> bool:
        """Whether the address is in one of this server's domains (the one rule; DomainServer asks it too)."""
        return address.rpartition("@")[2].lower() in self.local_domains

    def add_policies(self, policies: Iterable[Policy]) -> None:
        """Register the domain's policy instances by name (the domain calls it once, when it builds them)."""
        for policy in policies:
            self._policies[policy.name] = policy

    def policy(self, name: str) -> Policy | None:
        """The domain's policy called `name`, or None when the domain does not run it."""
        return self._policies.get(name)

    def user_exists(self, address: str) -> bool:
        return self.accounts.canonical(address) is not None

    def deliver_local(self, user: str, raw: bytes, *, mail_from: str = "", mailbox: str = "INBOX"
                      ) -> MessageRecord:
        """Put a message in a local user's mailbox with Return-Path and Delivered-To (CRLF line ends made where
        `raw` had others); runs no policy, so no filter either: a policy delivering what someone else wrote
        strips the server-only recall mark itself (format.strip_verified)."""
        return self._mail.deliver_local(user, raw, mail_from=mail_from, mailbox=mailbox)

    def save_sent_copy(self, delivery: Delivery) -> MessageRecord | None:
        return self._mail.save_sent_copy(delivery)

    async def submit(self, mail_from: str, recipients: Sequence[str], raw: bytes, *,
                     channel: Channel = "internal", marks: Iterable[str] = (), save_sent_copy: bool = False,
                     auth_user: str | None = None) -> str:
        """Send a new message through this domain's whole pipeline; returns its queue id."""
        return await self._submitter.submit(mail_from, list(recipients), raw, channel=channel, marks=set(marks),
                                            save_sent_copy=save_sent_copy, auth_user=auth_user)

    async def release(self, queue_id: str) -> None:
        await self._submitter.release(queue_id)

    def discard(self, queue_id: str) -> Delivery:
        return self._held_mail.discard(queue_id)

    def held(self) -> list[Delivery]:
        return self._held_mail.held()

    def log(self, event: str, **fields: Any) -> None:
        entry = {"at": datetime.now(UTC).isoformat(), "domain": self.domain, "event": event, **fields}
        self.audit_log.append(entry)
        self.activity.publish(self.domain, event, **fields)
        log.info("%s: %s %s", self.domain, event, fields)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro, name=name)


# --- running the policies ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deliver:
    """Every policy said CONTINUE: deliver to `local` (this server's domains) and relay to `remote`, each
    recipient once (compared case-insensitively, first spelling kept), with the Sent copy when asked for."""

    delivery: Delivery
    local: tuple[str, ...]
    remote: tuple[str, ...]


@dataclass(frozen=True)
class Hold:
    """`policy` holds the delivery (delivery.held_by says so): keep it until released or discarded."""

    delivery: Delivery
    policy: str


@dataclass(frozen=True)
class Consumed:
    """`policy` took the message over: no further policy, no delivery, no Sent copy."""

    delivery: Delivery
    policy: str


@dataclass(frozen=True)
class Rejected:
    """`policy` refused the message (PolicyReject): nothing is delivered; the sender gets `error.reply`."""

    delivery: Delivery
    policy: str
    error: PolicyReject

    @property
    def reply(self) -> str:
        return self.error.reply


#: What `Pipeline.run` returns; the domain (fake_servers/intake.py) carries it out.
PipelineResult = Deliver | Hold | Consumed | Rejected


class Pipeline:
    """The ordered policies of one domain. It decides and returns its decision; it never delivers, holds or
    calls back into the domain (the intake acts on the result)."""

    def __init__(self, policies: Sequence[Policy], services: DomainServices) -> None:
        self.policies = list(policies)
        self.services = services

    async def start(self) -> None:
        for policy in self.policies:
            start = getattr(policy, "start", None)
            if start is not None:
                await start(self.services)

    async def stop(self) -> None:
        for policy in reversed(self.policies):
            stop = getattr(policy, "stop", None)
            if stop is not None:
                try:
                    await stop()
                except Exception:  # a policy's broken stop must not keep the lab from stopping
                    log.exception("policy %s failed to stop", policy.name)

    async def run(self, delivery: Delivery, start_after: str | None = None) -> PipelineResult:
        """Run the policies (all, or those after `start_after` when resuming a held delivery) and say what is to
        happen to the delivery. A policy's PolicyReject becomes `Rejected`; any other exception propagates."""
        index = 0
        if start_after is not None:
            names = [p.name for p in self.policies]
            index = names.index(start_after) + 1 if start_after in names else 0
        for policy in self.policies[index:]:
            try:
                verdict = await policy.on_delivery(delivery, self.services)
            except PolicyReject as exc:
                return Rejected(delivery, policy.name, exc)
            if verdict is Verdict.CONSUMED:
                return Consumed(delivery, policy.name)
            if verdict is Verdict.HOLD:
                delivery.held_by = policy.name
                return Hold(delivery, policy.name)
            if verdict is not Verdict.CONTINUE:
                raise TypeError(f"policy {policy.name!r} returned {verdict!r}, not a Verdict")
        local: list[str] = []
        remote: list[str] = []
        seen: set[str] = set()
        for rcpt in delivery.recipients:
            key = rcpt.lower()
            if key not in seen:
                seen.add(key)
                (local if self.services.is_local(rcpt) else remote).append(rcpt)
        return Deliver(delivery, tuple(local), tuple(remote))
