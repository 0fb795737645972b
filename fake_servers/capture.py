"""Capture mode: one SMTP listener that takes mail from anyone for anyone, and one IMAP listener to read it.

Why it exists: an application under test sends as `noreply@myapp.example` to whatever address a test chose
(`someone@example.com`); the realistic domains refuse both (the sender is no user of theirs, the recipient is not
local and relaying is denied), as real servers would. Capture mode is the catch-all that smtpdfix, GreenMail and
Mailpit offer, next to the realistic domains and without changing them:

- SMTP (a submission-style listener, port 0 by default): any envelope sender, any recipient (RCPT is refused
  only for a malformed address, or once `max_addresses` addresses are known). AUTH is optional and accepts any
  user name and password (as Mailpit's `--smtp-auth-accept-any`); the From header is not checked.
- Each recipient's mailbox is made on first delivery, in the capture's own store (never a domain's store).
- IMAP: an address logs in with any password, or with `password` when the settings name one; logging in
  makes its mailbox too.
- Nothing leaves: there is no relay queue and no pipeline; an accepted message is put into each recipient's
  INBOX with the trace fields a server adds (Received, Return-Path, Delivered-To) and that is all.

What stays as strict as everywhere else: the SMTP and IMAP code is the domains' own (the handler below is the
submission handler with three rules relaxed; the IMAP server is the same class with a permissive accounts
object), so canonical-form checks, MIME limits, the size limit, connection caps and login throttling all apply.

Bounds, because a capture keeps whatever anyone sends it: at most `max_messages` messages and `max_bytes` octets
in the whole capture store (counting every folder, IMAP APPEND and COPY included); past either, the oldest
messages are dropped (expunged, so a client idling on the mailbox is told). At most `max_addresses` addresses:
past it a new recipient gets `452 4.5.3` and a new IMAP login fails, until the lab restarts (an address
counts from its first accepted RCPT or login).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ssl
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.domain import Endpoint, ListenError
from recall_lab.fake_servers.faults import FaultSet
from recall_lab.fake_servers.guard import ConnectionGuard
from recall_lab.fake_servers.smtp import headers
from recall_lab.fake_servers.smtp.handlers import SubmissionHandler, normalise_address
from recall_lab.fake_servers.smtp.listener import SmtpListener
from recall_lab.fake_servers.stamping import Stamper, delivery_trace
from recall_lab.fake_servers.store.base import (
    MailboxDeleted,
    MailboxRenamed,
    MailStore,
    MessageAppended,
    MessagesExpunged,
    StoreError,
    StoreEvent,
)
from recall_lab.fake_servers.transcript import TranscriptRecorder

__all__ = ["CaptureAccounts", "CaptureHandler", "CaptureServer", "CaptureSettings", "Endpoint"]

#: The name the capture gives itself in its greeting and in the Received fields it writes.
HOSTNAME = "capture.localhost"


@dataclass(frozen=True)
class CaptureSettings:
    """What a capture keeps and who may read it (immutable; the lab config's `[capture]` table).

    `password`: the one IMAP password every address logs in with (None: any password). SMTP AUTH accepts any
    credentials whatever this says. `max_message_size`: the SMTP SIZE limit and the largest IMAP APPEND."""

    password: str | None = None
    max_messages: int = 1000
    max_bytes: int = 100 * 1024 * 1024
    max_addresses: int = 1000
    max_message_size: int = 10 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_messages", "max_bytes", "max_addresses", "max_message_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive whole number, not {value!r}")
        if self.max_message_size > self.max_bytes:
            raise ValueError(f"max_message_size ({self.max_message_size}) must not exceed max_bytes "
                             f"({self.max_bytes}): one message could not be kept")
        if self.password is not None and (not isinstance(self.password, str) or not self.password):
            raise ValueError("password must be a non-empty string (leave it out to accept any password)")


class CaptureAccounts(Accounts):
    """Every well-formed address is a user, up to `limit` of them; the IMAP password is `password` or anything.

    The SMTP and IMAP code asks an `Accounts` who is who; this one answers "yes" for any address (lower-cased),
    so that code needs no capture branch of its own."""

    def __init__(self, password: str | None, limit: int) -> None:
        super().__init__()
        self.password = password
        self.limit = limit

    def admit(self, address: str) -> str | None:
        """The address as stored, known from now on; None when malformed or when `limit` addresses are known."""
        key = normalise_address(address)
        if not key:
            return None
        if key not in self._users:
            if len(self._users) >= self.limit:
                return None
            self._users[key] = ""
        return key

    def has_room_for(self, address: str) -> bool:
        key = (normalise_address(address) or "")
        return key in self._users or len(self._users) < self.limit

    def authenticate(self, user: str, password: str) -> str | None:
        if self.password is not None and not hmac.compare_digest(
                self.password.encode("utf-8", "surrogatepass"), password.encode("utf-8", "surrogatepass")):
            return None
        return self.admit(user)

    def canonical(self, user: str) -> str | None:
        key = normalise_address(user)
        return key if key and self.has_room_for(key) else None


class CaptureHandler(SubmissionHandler):
    """The submission handler with its three rules relaxed: AUTH optional (any credentials accepted), any
    envelope sender, any From. Everything else (EHLO, canonical form, MIME limits, RCPT limits) is inherited."""

    def authenticator(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", errors="replace")
        return AuthResult(success=True, auth_data=login)

    def check_sender(self, session: Session, sender: str) -> str | None:
        return None

    def may_relay(self, session: Session) -> bool:
        return True

    def check_content(self, auth_user: str | None, block: headers.HeaderBlock) -> str | None:
        return None

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        accounts = self.acceptor.accounts
        rcpt = normalise_address(address)
        if rcpt and isinstance(accounts, CaptureAccounts) and not accounts.has_room_for(rcpt):
            return f"452 4.5.3 <{rcpt}>: the capture keeps mail for {accounts.limit} addresses at most"
        reply = await super().handle_RCPT(server, session, envelope, address, rcpt_options)
        if rcpt and reply.startswith("250") and isinstance(accounts, CaptureAccounts):
            accounts.admit(rcpt)  # counted from its first accepted RCPT, so one transaction cannot pass the cap
        return reply


class CaptureServer:
    """The capture's two listeners over a store of its own (see the module docstring); a MailAcceptor."""

    def __init__(self, settings: CaptureSettings, store: MailStore, *, host: str = "127.0.0.1",
                 smtp_port: int = 0, imap_port: int = 0, tls_context: ssl.SSLContext | None = None,
                 transcripts: TranscriptRecorder | None = None, guard: ConnectionGuard | None = None) -> None:
        self.settings = settings
        self.store = store
        self.host = host
        self.domain = "capture"
        self.hostname = HOSTNAME
        self.accounts = CaptureAccounts(settings.password, settings.max_addresses)
        self.guard = guard if guard is not None else ConnectionGuard()
        #: Faults a test injects into the capture (fake_servers/faults.py), as into a domain; none by default.
        self.faults = FaultSet(self.domain)
        self._stamper = Stamper(self.domain, self.hostname)
        self._imap_port = imap_port
        self._tls_context = tls_context
        self._transcripts = transcripts
        self.imap_server: Any = None
        self.smtp_listener = SmtpListener(CaptureHandler(self), host=host, port=smtp_port, hostname=self.hostname,
                                          data_size_limit=settings.max_message_size, tls_context=tls_context,
                                          transcripts=transcripts, guard=self.guard)
        #: every message of the store in arrival order: serial -> (user, mailbox, uid, size); and where -> serial
        self._order: OrderedDict[int, tuple[str, str, int, int]] = OrderedDict()
        self._where: dict[tuple[str, str, int], int] = {}
        self._serial = 0
        self._bytes = 0
        self._evict_soon: asyncio.Handle | None = None

    # -- lifecycle ------------------------------------------------------------------------------------
    async def open(self) -> None:
        """Bind both listeners (OSError when a port is taken); a store kept from before is counted first."""
        self._load()
        self.store.subscribe(self._on_event)
        self._evict()
        try:
            await self.smtp_listener.start()
        except OSError as exc:
            raise ListenError(exc.errno, _bind_message(self.host, self.smtp_listener.requested_port, "SMTP", exc)
                              ) from None
        from recall_lab.fake_servers.imap.server import ImapServer  # late, as the domain server does

        self.imap_server = ImapServer(self.store, self.accounts, host=self.host, port=self._imap_port,
                                      ssl_context=self._tls_context, transcripts=self._transcripts,
                                      name=self.domain, guard=self.guard,
                                      max_literal=self.settings.max_message_size, faults=self.faults)
        try:
            await self.imap_server.start()
        except OSError as exc:
            self.imap_server = None
            await self.smtp_listener.stop()
            raise ListenError(exc.errno, _bind_message(self.host, self._imap_port, "IMAP", exc)) from None

    async def stop(self) -> None:
        await self.smtp_listener.stop()
        if self.imap_server is not None:
            with contextlib.suppress(Exception):
                await self.imap_server.stop()
            self.imap_server = None
        if self._evict_soon is not None:
            self._evict_soon.cancel()
            self._evict_soon = None
        with contextlib.suppress(Exception):
            self.store.unsubscribe(self._on_event)

    @property
    def smtp(self) -> Endpoint:
        return Endpoint(self.host, self.smtp_listener.port)

    @property
    def imap(self) -> Endpoint:
        if self.imap_server is None:
            raise RuntimeError("the capture's IMAP server is not running")
        return Endpoint(self.imap_server.host, self.imap_server.port)

    def as_dict(self) -> dict[str, Any]:
        """The endpoints JSON's "capture" entry."""
        return {"smtp": self.smtp.as_dict(), "imap": self.imap.as_dict()}

    def users(self) -> list[str]:
        """Every address that has a mailbox in the capture."""
        return self.store.users()

    # -- MailAcceptor (what the SMTP handler calls) --------------------------------------------------
    def is_local(self, address: str) -> bool:
        return True  # every recipient is the capture's own

    async def accept(self, *, channel: Any, auth_user: str | None, mail_from: str, recipients: list[str],
                     raw: bytes, smtputf8: bool, helo: str | None, peer: Any, tls: bool,
                     header_block: headers.HeaderBlock | None = None) -> str:
        """Into each recipient's INBOX, as the client sent it plus the trace fields; the oldest mail dropped
        past the bounds. Stamped as MX mail is (a Received field; nothing added to or taken from the
        message's own fields), so a test sees what its application wrote."""
        stamped = self._stamper.stamp(channel="mx", auth_user=auth_user, mail_from=mail_from,
                                      recipients=recipients, raw=raw, smtputf8=smtputf8, helo=helo, peer=peer,
                                      tls=tls, block=header_block)
        queue_id = stamped.delivery.queue_id
        delivered = 0
        for rcpt in recipients:
            user = self.accounts.admit(rcpt)
            if user is None:  # the address cap was reached between RCPT and DATA by another client
                continue
            try:
                self.store.ensure_user(user)
                self.store.deliver(user, delivery_trace(stamped.delivery.raw, mail_from, user))
            except StoreError:
                continue
            delivered += 1
        self._evict()
        if not delivered:
            return "452 4.3.1 The capture could not keep this message; try again later"
        return f"250 2.0.0 Ok: captured as {queue_id}"

    # -- bounds ---------------------------------------------------------------------------------------
    @property
    def message_count(self) -> int:
        return len(self._order)

    @property
    def byte_count(self) -> int:
        return self._bytes

    def _load(self) -> None:
        """Count what a store kept from an earlier run (Maildir), oldest first by internal date."""
        found: list[tuple[Any, str, str, int, int]] = []
        for user in self.store.users():
            with contextlib.suppress(StoreError):
                self.accounts.admit(user)
                for info in self.store.list_mailboxes(user):
                    for record in self.store.messages(user, info.name):
                        found.append((record.internaldate, user, info.name, record.uid, record.size))
        for _when, user, mailbox, uid, size in sorted(found, key=lambda f: (f[0], f[1], f[2], f[3])):
            self._add(user, mailbox, uid, size)

    def _add(self, user: str, mailbox: str, uid: int, size: int) -> None:
        self._serial += 1
        self._order[self._serial] = (user, mailbox, uid, size)
        self._where[(user, mailbox, uid)] = self._serial
        self._bytes += size

    def _remove(self, user: str, mailbox: str, uid: int) -> None:
        serial = self._where.pop((user, mailbox, uid), None)
        if serial is not None:
            self._bytes -= self._order.pop(serial)[3]

    def _in(self, user: str, mailbox: str) -> Iterator[tuple[str, str, int]]:
        return (key for key in list(self._where) if key[0] == user and key[1] == mailbox)

    def _on_event(self, event: StoreEvent) -> None:
        """Keep the count of every change to the store (runs inside the store's method: never changes it)."""
        if isinstance(event, MessageAppended):
            self._add(event.user, event.mailbox, event.record.uid, event.record.size)
            if self._over() and self._evict_soon is None:
                # an APPEND or COPY from an IMAP client: dropped after the store's method has returned
                self._evict_soon = asyncio.get_running_loop().call_soon(self._evict)
        elif isinstance(event, MessagesExpunged):
            for uid in event.uids:
                self._remove(event.user, event.mailbox, uid)
        elif isinstance(event, MailboxDeleted):
            for key in self._in(event.user, event.mailbox):
                self._remove(*key)
        elif isinstance(event, MailboxRenamed):
            for key in self._in(event.user, event.mailbox):
                serial = self._where.pop(key)
                size = self._order[serial][3]
                self._order[serial] = (key[0], event.new_name, key[2], size)
                self._where[(key[0], event.new_name, key[2])] = serial

    def _over(self) -> bool:
        return len(self._order) > self.settings.max_messages or self._bytes > self.settings.max_bytes

    def _evict(self) -> None:
        """Drop the oldest messages until the store is within both bounds."""
        self._evict_soon = None
        while self._over():
            serial, (user, mailbox, uid, _size) = next(iter(self._order.items()))
            try:
                self.store.expunge(user, mailbox, [uid])
            except StoreError:
                pass
            if serial in self._order:  # the store no longer had it: forget it all the same
                self._remove(user, mailbox, uid)


def _bind_message(host: str, port: int, what: str, exc: OSError) -> str:
    reason = "is already in use" if exc.errno == 98 else f"cannot be used ({exc.strerror or exc})"
    return f"port {host}:{port} (capture {what}) {reason}"
