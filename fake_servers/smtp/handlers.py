"""The policy of the two SMTP listeners of a domain, as aiosmtpd handler hooks and an authenticator.

- MX (port 25's role): mail from other domains; no AUTH; RCPT only for the domain's own users (`550 5.1.1`
  unknown user, `550 5.7.1` relaying denied for any other domain). Never an open relay.
- Submission (port 587's role): AUTH PLAIN/LOGIN before MAIL (`530 5.7.0`); the envelope sender and the From
  header must be the authenticated user (`553 5.7.1`); any recipient once authenticated. From (and Sender, when
  present) must name exactly one mailbox, read as recipients' parsers read it (`recall_lab.fake_servers.smtp.addresses`);
  a value that reads two ways is refused (`553 5.7.1`, with the reason).
- Both: one canonical form of mail (`recall_lab.fake_servers.smtp.canonical`): a bare CR or LF, a NUL, or a header block
  that parsers could read differently is refused (`550 5.6.0`, with the line); control characters in the EHLO/HELO
  argument (`501 5.5.4`) or in a MAIL FROM / RCPT TO address (`553 5.1.7` / `553 5.1.3`) are refused, since they
  would end up in the Received and Return-Path fields.

- Both: the domain's injected faults (`recall_lab.fake_servers.faults`) come first at EHLO, MAIL, RCPT and DATA:
  a delay before the reply, an injected 4xx/5xx reply (a 421 also closes the connection), or the connection
  dropped without a reply.

Why hooks: aiosmtpd already parses the dialogue; what the lab decides (who may send, to whom) is kept here, in
handle_EHLO / handle_MAIL / handle_RCPT / handle_DATA, so reading this file tells the whole policy. What happens to
an accepted message is the domain's `accept` (the delivery pipeline), not the handler's business.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Literal, Protocol

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from recall_lab.fake_servers import mime_limits
from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.faults import FaultSet
from recall_lab.fake_servers.mime_limits import DEFAULT_LIMITS, MimeLimits
from recall_lab.fake_servers.smtp import canonical, headers

log = logging.getLogger(__name__)

Kind = Literal["mx", "submission"]

#: At most this many RCPT per transaction (RFC 5321 asks servers to take at least 100).
MAX_RECIPIENTS = 100


class MailAcceptor(Protocol):
    """What the handlers need from the domain server."""

    domain: str
    hostname: str
    accounts: Accounts
    faults: FaultSet

    def is_local(self, address: str) -> bool: ...

    async def accept(self, *, channel: Kind, auth_user: str | None, mail_from: str, recipients: list[str],
                     raw: bytes, smtputf8: bool, helo: str | None, peer: Any, tls: bool,
                     header_block: headers.HeaderBlock | None = None) -> str: ...


_DOMAIN = re.compile(r"[^\s@.]+(\.[^\s@.]+)+")


def normalise_address(address: str) -> str | None:
    """The address as the lab compares it (lower-cased), "" for the null path <>, None when malformed."""
    address = address.strip()
    if address in ("", "<>"):
        return ""
    local, at, domain = address.rpartition("@")
    if not at or not local or not _DOMAIN.fullmatch(domain):
        return None
    return address.lower()


class _BaseHandler:
    kind: Kind

    def __init__(self, acceptor: MailAcceptor, mime_limits: MimeLimits = DEFAULT_LIMITS) -> None:
        self.acceptor = acceptor
        self.mime_limits = mime_limits

    async def fault(self, server: SMTP, stage: str) -> str | None:
        """The domain's injected fault at `stage`: waits its delay, then the reply to give instead of the
        hook's own (None: no fault). A dropped connection is aborted here (its reply is never sent); after an
        injected 421 the connection is closed once the reply is out, as a server shutting down does."""
        decision = self.acceptor.faults.smtp(self.kind, stage)
        if not decision.acts:
            return None
        if decision.delay:
            await asyncio.sleep(decision.delay)  # the injected delay itself, not a wait for an event
        transport = server.transport
        if decision.drop:
            if transport is not None:
                transport.abort()
            return "421 4.4.2 Connection dropped"
        if decision.reply and decision.reply.startswith("421") and transport is not None:
            server.loop.call_soon(transport.close)  # after the reply, which push writes before yielding
        return decision.reply

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        injected = await self.fault(server, "ehlo")
        if injected:
            session.host_name = None
            return [injected]
        refusal = _helo_refusal("EHLO", hostname)
        if refusal:
            session.host_name = None  # a refused greeting is no greeting: MAIL gets 503 until a good one
            return [refusal]
        session.host_name = hostname
        lines = [r for r in responses if self.kind == "submission" or not r.startswith("250-AUTH")]
        last = lines.pop()  # "250 HELP"
        lines += ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", last]
        return lines

    async def handle_HELO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str) -> str:
        injected = await self.fault(server, "ehlo")
        if injected:
            session.host_name = None
            return injected
        refusal = _helo_refusal("HELO", hostname)
        if refusal:
            session.host_name = None
            return refusal
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        injected = await self.fault(server, "mail")
        if injected:
            return injected
        problem = canonical.address_problem(address)
        if problem:
            return f"553 5.1.7 Malformed sender address: {problem}"
        sender = normalise_address(address)
        if sender is None:
            return "553 5.1.7 Malformed sender address"
        refusal = self.check_sender(session, sender)
        if refusal:
            return refusal
        envelope.mail_from = sender or "<>"
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        injected = await self.fault(server, "rcpt")
        if injected:
            return injected
        problem = canonical.address_problem(address)
        if problem:
            return f"553 5.1.3 Malformed recipient address: {problem}"
        rcpt = normalise_address(address)
        if not rcpt:
            return "553 5.1.3 Malformed recipient address"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        if self.acceptor.is_local(rcpt):
            if self.acceptor.accounts.canonical(rcpt) is None:
                return f"550 5.1.1 <{rcpt}>: Recipient address rejected: user unknown"
        elif not self.may_relay(session):
            return f"550 5.7.1 <{rcpt}>: Relay access denied"
        envelope.rcpt_tos.append(rcpt)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        injected = await self.fault(server, "data")
        if injected:
            return injected
        raw = envelope.original_content or b""
        auth_user = session.auth_data if self.kind == "submission" and session.authenticated else None
        # The MIME structure first, in bounded steps with the loop handed back between them: a message of a
        # million parts or fields is refused before anything (header reader, recall code, clients) reads it.
        check = mime_limits.check_steps(raw, self.mime_limits)
        try:
            while True:
                next(check)
                await asyncio.sleep(0)
        except StopIteration as done:
            violation = done.value
        if violation is not None:
            return violation.smtp_reply
        refusal, block = self.refuse_content(auth_user, raw)
        if refusal:
            return refusal
        mail_from = "" if envelope.mail_from in (None, "<>") else envelope.mail_from
        return await self.acceptor.accept(
            channel=self.kind, auth_user=auth_user, mail_from=mail_from, recipients=list(envelope.rcpt_tos),
            raw=raw, smtputf8=bool(envelope.smtp_utf8), helo=session.host_name, peer=session.peer,
            tls=session.ssl is not None or _implicit_tls(server), header_block=block)

    async def handle_exception(self, error: Exception) -> str:
        log.exception("SMTP %s session error", self.kind, exc_info=error)
        return "451 4.3.0 Local error in processing; try again later"

    def refuse_content(self, auth_user: str | None, raw: bytes) -> tuple[str | None, headers.HeaderBlock]:
        """The reply refusing this message, or None, and its header block (sans-I/O: the DATA hook and the
        tests call it). The canonical form first (CRLF only, no NUL, a header block that reads one way),
        then what the listener asks of the content."""
        block = headers.HeaderBlock(raw)
        problem = canonical.line_problem(raw) or block.problem()
        if problem:
            return f"550 5.6.0 Message refused: {problem}", block
        return self.check_content(auth_user, block), block

    # -- what differs between the two listeners -------------------------------------------------------
    def check_sender(self, session: Session, sender: str) -> str | None:
        return None

    def may_relay(self, session: Session) -> bool:
        return False

    def check_content(self, auth_user: str | None, block: headers.HeaderBlock) -> str | None:
        return None


class MxHandler(_BaseHandler):
    """Inbound mail for the domain's users; refuses everything else."""

    kind: Kind = "mx"

    async def handle_AUTH(self, server: SMTP, session: Session, envelope: Envelope, args: list[str]) -> str:
        return "502 5.5.1 AUTH is not available on this port; use the submission port"


class SubmissionHandler(_BaseHandler):
    """Authenticated users sending mail as themselves, to anyone."""

    kind: Kind = "submission"

    def authenticator(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        try:
            login = auth_data.login.decode("utf-8")
            password = auth_data.password.decode("utf-8")
        except UnicodeDecodeError:
            return AuthResult(success=False, handled=False)
        user = self.acceptor.accounts.authenticate(login, password)
        if user is None:
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=user)

    def check_sender(self, session: Session, sender: str) -> str | None:
        if not session.authenticated:
            return "530 5.7.0 Authentication required"
        if sender != session.auth_data:
            return f"553 5.7.1 <{sender}>: Sender address rejected: not owned by user {session.auth_data}"
        return None

    def may_relay(self, session: Session) -> bool:
        return bool(session.authenticated)

    def check_content(self, auth_user: str | None, block: headers.HeaderBlock) -> str | None:
        """From, and Sender when present, must each be one field naming one mailbox, the user's, as the recipients'
        parser reads it (addresses.sole_mailbox, the reader the trust code and the clients use too): a value
        that two parsers read differently is refused, never guessed at."""
        if auth_user is None:  # cannot happen past MAIL, but never deliver unauthenticated submissions
            return "530 5.7.0 Authentication required"
        problem = headers.author_problem(block, auth_user)
        return None if problem is None else f"553 5.7.1 {problem}"


def _implicit_tls(server: SMTP) -> bool:
    """Whether the session came in over implicit TLS (RFC 8314: the listener's transport is TLS from the start;
    aiosmtpd sets `session.ssl` only after STARTTLS)."""
    transport = server.transport
    return transport is not None and transport.get_extra_info("ssl_object") is not None


def _helo_refusal(command: str, name: str) -> str | None:
    """The EHLO/HELO name lands in the Received field: one word, no control characters (canonical.helo_problem)."""
    problem = canonical.helo_problem(name)
    return f"501 5.5.4 Invalid {command} argument: {problem}" if problem else None
