"""The recall agent: what the sender's mail program does when she clicks "Recall This Message".

It talks to the servers only as a client would: it finds the original in her Sent folder over IMAP (the Sent
copy is the one place that still knows the Bcc recipients), or in her Outbox while delayed send still holds it,
submits the recall over authenticated SMTP submission, and then reads the recall report (and, for legacy
processing, the recipients' notices) from her INBOX, merging them into one per-recipient view.

Why imapclient (in a worker thread) and aiosmtplib: imapclient parses IMAP well and gives a plain synchronous
API, which the `SyncRecallAgent` shares; the async agent runs those calls in `asyncio.to_thread`, so the lab's
servers keep running on the event loop meanwhile. The agent believes a report or notice only when it carries
the sender's own server's mark (`X-Recall-Verified: <her domain>`): anyone can mail her something that looks
like a report.

    agent = RecallAgent(lab, "alice@corp.example", "alice-password")
    handle = await agent.recall("<id@corp.example>")
    report = await handle.report(timeout=5)          # RecallReport; report.statuses -> {address: status}
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from email import policy as email_policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses
from pathlib import Path
from typing import Any

import aiosmtplib
from imapclient import IMAPClient
from imapclient.imapclient import SENT

from recall_lab.fake_servers.domain import Endpoint
from recall_lab.fake_servers.recall.format import (
    HEADER_MESSAGE_ID,
    RecallAction,
    RecallFormatError,
    RecallInstruction,
    RecallNotice,
    RecallReport,
    build_recall_message,
    is_notice,
    is_report,
    merge_report,
    normalise_message_id,
    normalise_subject,
    notice_sender,
    parse_notice,
    parse_report,
    verified_by,
)
from recall_lab.harness.own_name import client_name

_PARSER = BytesParser(policy=email_policy.default)
#: How soon a report wait running in a worker thread notices `ReportReader.stop()` (e.g. after Ctrl-C).
STOP_LATENCY = 0.2


class RecallAgentError(Exception):
    """An expected failure (original not found, server refused, bad endpoint); the text is one line."""


def _endpoint(value: Any) -> Endpoint:
    if isinstance(value, Endpoint):
        return value
    if hasattr(value, "host") and hasattr(value, "port"):
        return Endpoint(str(value.host), int(value.port))
    if isinstance(value, str):
        host, sep, port = value.rpartition(":")
        if sep and port.isdigit():
            return Endpoint(host or "127.0.0.1", int(port))
    if isinstance(value, Mapping) and "port" in value:
        return Endpoint(str(value.get("host", "127.0.0.1")), int(value["port"]))
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        return Endpoint(str(value[0]), int(value[1]))
    raise RecallAgentError(f"cannot read an endpoint from {value!r}")


def resolve_endpoints(source: Any, domain: str) -> tuple[Endpoint, Endpoint]:
    """(IMAP, submission) of `domain` from a Lab (`.imap(d)`, `.submission(d)`), a mapping, or a JSON file.

    Mappings accepted: {"imap": ..., "submission": ...} for one domain, or {"<domain>": {...}} / {"domains":
    {"<domain>": {...}}} as `recall-lab serve` writes them; an endpoint is "host:port", [host, port] or
    {"host": ..., "port": ...}.
    """
    if hasattr(source, "imap") and hasattr(source, "submission") and callable(source.imap):
        return _endpoint(source.imap(domain)), _endpoint(source.submission(domain))
    if isinstance(source, str | Path):
        try:
            source = json.loads(Path(source).read_text(encoding="utf-8"))
        except OSError as exc:
            raise RecallAgentError(f"cannot read endpoints file {source}: {exc.strerror or exc}") from None
        except json.JSONDecodeError as exc:
            raise RecallAgentError(f"endpoints file {source} is not JSON: {exc.msg}") from None
    if not isinstance(source, Mapping):
        raise RecallAgentError(f"cannot find endpoints in {type(source).__name__}")
    table: Any = source
    if "domains" in table and isinstance(table["domains"], Mapping):
        table = table["domains"]
    if domain in table and isinstance(table[domain], Mapping):
        table = table[domain]
    if "imap" not in table or "submission" not in table:
        raise RecallAgentError(f"no imap/submission endpoints for {domain}")
    return _endpoint(table["imap"]), _endpoint(table["submission"])


# --- the synchronous IMAP side (shared by both agents) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class SentOriginal:
    message_id: str
    subject: str
    sender_name: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]


def _server_text(exc: BaseException) -> str:
    """The server's words from an imaplib/imapclient error, which carries them as a bytes repr."""
    text = str(exc.args[0]) if len(exc.args) == 1 else str(exc)
    if isinstance(exc.args[0] if exc.args else None, bytes):
        text = exc.args[0].decode("utf-8", "replace")
    elif text.startswith(("b'", 'b"')) and text.endswith(("'", '"')):
        text = text[2:-1]
    return text


@contextmanager
def _session(imap: Endpoint, user: str, password: str, timeout: float, tls: ssl.SSLContext | None = None
             ) -> Iterator[IMAPClient]:
    """A logged-in imapclient session (upgraded with STARTTLS first when `tls` is given), logged out (or
    dropped) afterwards; failures as RecallAgentError."""
    try:
        client = IMAPClient(imap.host, imap.port, ssl=False, timeout=timeout)
        # imapclient writes a command in pieces; without TCP_NODELAY, Nagle + delayed ACK stall each one ~40 ms.
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        raise RecallAgentError(f"cannot reach IMAP at {imap.host}:{imap.port}: {exc.strerror or exc}") from None
    try:
        if tls is not None:
            try:
                client.starttls(tls)
            except (IMAPClient.Error, OSError) as exc:
                raise RecallAgentError(f"IMAP STARTTLS at {imap.host}:{imap.port} failed: {_server_text(exc)}"
                                       ) from None
        try:
            client.login(user, password)
        except Exception as exc:
            raise RecallAgentError(f"IMAP login as {user} failed: {_server_text(exc)}") from None
        try:
            yield client
        except (IMAPClient.Error, OSError) as exc:
            raise RecallAgentError(f"IMAP session of {user} failed: {_server_text(exc)}") from None
    finally:
        try:
            client.logout()
        except Exception:
            with suppress(OSError):  # the socket may be dead already (a failed TLS handshake closes it)
                client.shutdown()


def _addrs(head: EmailMessage, name: str) -> tuple[str, ...]:
    return tuple(a.lower() for _n, a in getaddresses([str(v) for v in head.get_all(name, [])]) if a)


#: Where the delayed-send policy keeps a submitted message until its window ends (fake_servers/policies/
#: delayed_send.py): a message still held there has not left, so recalling it discards it for everyone.
OUTBOX = "Outbox"


def _original_in(client: IMAPClient, folder: str, mid: str) -> SentOriginal | None:
    """The message `mid` in `folder`, read from its header (None when the folder lacks it or does not exist)."""
    try:
        client.select_folder(folder, readonly=True)
    except IMAPClient.Error:
        return None  # e.g. no Outbox: nothing was ever held
    uids = client.search(["HEADER", "Message-ID", mid])
    for _uid, data in client.fetch(uids, ["BODY.PEEK[HEADER]"]).items():
        head = _PARSER.parsebytes(data[b"BODY[HEADER]"])
        if str(head.get("Message-ID", "")).strip() != mid:
            continue  # SEARCH HEADER is a substring match
        names = getaddresses([str(v) for v in head.get_all("From", [])])
        return SentOriginal(message_id=mid, subject=normalise_subject(str(head.get("Subject", ""))),
                            sender_name=names[0][0] if names else "", to=_addrs(head, "To"),
                            cc=_addrs(head, "Cc"), bcc=_addrs(head, "Bcc"))
    return None


def find_sent_original(imap: Endpoint, user: str, password: str, message_id: str, timeout: float = 10.0,
                       tls: ssl.SSLContext | None = None) -> SentOriginal:
    """The original in the user's Sent folder (special-use \\Sent, else "Sent"), with its Bcc recipients; else
    in her Outbox, where delayed send holds a message that has not left yet (its copy names the Bcc too)."""
    try:
        mid = normalise_message_id(message_id)
    except RecallFormatError as exc:
        raise RecallAgentError(str(exc)) from None
    with _session(imap, user, password, timeout, tls) as client:
        sent = client.find_special_folder(SENT) or "Sent"
        for folder in dict.fromkeys((sent, OUTBOX)):
            original = _original_in(client, folder, mid)
            if original is not None:
                return original
    raise RecallAgentError(f"no message {mid} in {user}'s Sent folder or Outbox")


@dataclass
class ReportReader:
    """Reads one recall's report and notices from the sender's INBOX; remembers what it already read."""

    imap: Endpoint
    user: str
    password: str
    original_message_id: str
    recall_message_id: str | None
    timeout: float = 10.0
    tls: ssl.SSLContext | None = None
    seen_uids: set[int] = field(default_factory=set)
    report: RecallReport | None = None
    notices: list[RecallNotice] = field(default_factory=list)
    later_reports: list[RecallReport] = field(default_factory=list)
    _stopped: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def domain(self) -> str:
        return self.user.rpartition("@")[2].lower()

    def merged(self) -> RecallReport | None:
        if self.report is None:
            return None
        return merge_report(self.report, [*self.later_reports, *self.notices])

    def _absorb(self, raw: bytes) -> None:
        msg = _PARSER.parsebytes(raw)
        # The trust questions read the raw bytes, through the one header reader the server's filter uses.
        if verified_by(raw) != self.domain:
            return  # not vouched for by her own server: could be anyone's
        try:
            if is_report(msg):
                report = parse_report(msg)
                if report is None or report.original_message_id != self.original_message_id:
                    return
                if self.recall_message_id is not None and report.recall_message_id != self.recall_message_id:
                    return
                if self.report is None:
                    self.report = report
                else:
                    self.later_reports.append(report)
            elif is_notice(msg):
                notice = parse_notice(msg)
                if notice is None or notice.original_message_id != self.original_message_id:
                    return
                if notice_sender(raw) != notice.recipient:
                    return
                self.notices.append(notice)
        except RecallFormatError:
            return

    def scan(self, client: IMAPClient) -> None:
        uids = client.search(["HEADER", HEADER_MESSAGE_ID, self.original_message_id])
        new = sorted(set(uids) - self.seen_uids)
        if not new:
            return
        for uid, data in sorted(client.fetch(new, ["BODY.PEEK[]"]).items()):
            self.seen_uids.add(uid)
            self._absorb(data[b"BODY[]"])

    def done(self, until_complete: bool) -> bool:
        merged = self.merged()
        return merged is not None and (not until_complete or merged.complete)

    def wait(self, timeout: float, until_complete: bool) -> RecallReport | None:
        """Scan, then IDLE until something new arrives, until the report is there (and complete) or timeout.

        `stop()` (from another thread) ends the wait within STOP_LATENCY: the async agent runs this in a worker
        thread, which Ctrl-C cannot interrupt, and the process cannot exit before the thread does.
        """
        deadline = time.monotonic() + timeout
        with _session(self.imap, self.user, self.password, self.timeout, self.tls) as client:
            client.select_folder("INBOX", readonly=True)
            self.scan(client)
            while not self.done(until_complete) and not self._stopped.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                client.idle()
                try:
                    self._idle(client, time.monotonic() + min(remaining, 1.0))
                finally:
                    client.idle_done()
                self.scan(client)
            return self.merged()

    def _idle(self, client: IMAPClient, until: float) -> None:
        """Wait in IDLE until the server says something, `until`, or `stop()`."""
        while not self._stopped.is_set():
            left = until - time.monotonic()
            if left <= 0 or client.idle_check(timeout=min(left, STOP_LATENCY)):
                return

    def stop(self) -> None:
        """End a `wait` running in another thread soon (its result is then what was read so far)."""
        self._stopped.set()


# --- the agents --------------------------------------------------------------------------------------------


def _replacement(value: EmailMessage | bytes | None) -> EmailMessage | None:
    if value is None or isinstance(value, EmailMessage):
        return value
    return _PARSER.parsebytes(bytes(value))  # type: ignore[return-value]


def _instruction(user: str, original: SentOriginal, action: str, replacement: EmailMessage | bytes | None
                 ) -> RecallInstruction:
    try:
        act = RecallAction(action)
    except ValueError:
        raise RecallAgentError(f"action must be delete or replace, not {action!r}") from None
    recipients = tuple(dict.fromkeys((*original.to, *original.cc, *original.bcc)))
    if not recipients:
        raise RecallAgentError(f"the original {original.message_id} has no recipients to recall it from")
    return RecallInstruction(original_message_id=original.message_id, original_subject=original.subject,
                             sender=user, sender_name=original.sender_name, to=original.to, cc=original.cc,
                             bcc=tuple(b for b in original.bcc if b not in original.to and b not in original.cc),
                             action=act, replacement=_replacement(replacement))


def _build(instruction: RecallInstruction) -> EmailMessage:
    try:
        return build_recall_message(instruction)
    except RecallFormatError as exc:
        raise RecallAgentError(str(exc)) from None


@dataclass
class RecallHandle:
    """A submitted recall; `await report()` reads what the server (and the recipients' clients) said."""

    instruction: RecallInstruction
    recall_message_id: str
    reader: ReportReader

    @property
    def original_message_id(self) -> str:
        return self.instruction.original_message_id

    @property
    def recipients(self) -> tuple[str, ...]:
        return self.instruction.recipients

    async def report(self, timeout: float = 10.0, *, until_complete: bool = False) -> RecallReport:
        """The merged report once the server's report is in (with `until_complete`, once nobody is pending).

        Raises TimeoutError when no report arrived in time; with `until_complete`, returns the report with
        its pending recipients when they did not resolve in time.
        """
        try:
            merged = await asyncio.to_thread(self.reader.wait, timeout, until_complete)
        except asyncio.CancelledError:  # Ctrl-C (asyncio.run cancels us): the thread must not wait on
            self.reader.stop()
            raise
        if merged is None:
            raise TimeoutError(f"no recall report for {self.original_message_id} within {timeout:g} s")
        return merged


class _Agent:
    """What both agents share: the user, her endpoints, and the steps around the SMTP submission."""

    def __init__(self, lab_or_endpoints: Any, user: str, password: str, *, timeout: float = 10.0,
                 tls: ssl.SSLContext | None = None) -> None:
        """`tls`: a client context (trusting the lab's CA) to use STARTTLS on IMAP and submission, as a lab
        started with TLS requires before AUTH."""
        self.user = user.strip().lower()
        self.password = password
        self.timeout = timeout
        self.tls = tls
        self.imap, self.submission = resolve_endpoints(lab_or_endpoints, self.user.rpartition("@")[2])

    def _prepare(self, original: SentOriginal, action: str, replacement: EmailMessage | bytes | None
                 ) -> tuple[RecallInstruction, EmailMessage]:
        instruction = _instruction(self.user, original, action, replacement)
        return instruction, _build(instruction)

    @contextmanager
    def _submitting(self, refused: type[Exception]) -> Iterator[None]:
        """Either SMTP client's failures as one-line RecallAgentErrors (`refused` first: smtplib's errors are
        OSErrors too)."""
        try:
            yield
        except refused as exc:
            hint = ""
            if self.tls is None and ("AUTH" in str(exc) or "538" in str(exc)):
                hint = ("; if the lab was started with TLS it takes AUTH only after STARTTLS: give the agent"
                        " tls=<client context> (CLI: --starttls --cafile CA)")
            raise RecallAgentError(f"submission refused the recall: {exc}{hint}") from None
        except OSError as exc:
            raise RecallAgentError(f"cannot reach submission at {self.submission.host}:{self.submission.port}: "
                                   f"{exc.strerror or exc}") from None

    def _submitted(self, instruction: RecallInstruction, msg: EmailMessage
                   ) -> tuple[RecallInstruction, str, ReportReader]:
        rid = str(msg["Message-ID"])
        reader = ReportReader(self.imap, self.user, self.password, instruction.original_message_id, rid,
                              self.timeout, self.tls)
        return replace(instruction, message_id=rid), rid, reader


class RecallAgent(_Agent):
    """Recalls the user's messages over IMAP + SMTP submission (see the module docstring)."""

    async def find_original(self, message_id: str) -> SentOriginal:
        return await asyncio.to_thread(find_sent_original, self.imap, self.user, self.password, message_id,
                                       self.timeout, self.tls)

    async def recall(self, message_id: str, action: str = "delete",
                     replacement: EmailMessage | bytes | None = None) -> RecallHandle:
        instruction, msg = self._prepare(await self.find_original(message_id), action, replacement)
        with self._submitting(aiosmtplib.SMTPException):
            await aiosmtplib.send(msg, sender=self.user, recipients=list(instruction.recipients),
                                  hostname=self.submission.host, port=self.submission.port, username=self.user,
                                  password=self.password, start_tls=self.tls is not None, tls_context=self.tls,
                                  timeout=self.timeout, local_hostname=client_name(self.user))
        instruction, rid, reader = self._submitted(instruction, msg)
        return RecallHandle(instruction=instruction, recall_message_id=rid, reader=reader)


class SyncRecallAgent(_Agent):
    """The same agent for synchronous code (imapclient users, scripts): smtplib instead of aiosmtplib.

    Do not call it from the event loop thread that runs the lab's servers: it blocks.
    """

    def recall(self, message_id: str, action: str = "delete", replacement: EmailMessage | bytes | None = None
               ) -> SyncRecallHandle:
        original = find_sent_original(self.imap, self.user, self.password, message_id, self.timeout, self.tls)
        instruction, msg = self._prepare(original, action, replacement)
        with self._submitting(smtplib.SMTPException), \
                smtplib.SMTP(self.submission.host, self.submission.port, timeout=self.timeout,
                             local_hostname=client_name(self.user)) as smtp:
            if self.tls is not None:
                smtp.starttls(context=self.tls)
            smtp.login(self.user, self.password)
            smtp.send_message(msg, from_addr=self.user, to_addrs=list(instruction.recipients))
        return SyncRecallHandle(*self._submitted(instruction, msg))


@dataclass
class SyncRecallHandle:
    instruction: RecallInstruction
    recall_message_id: str
    reader: ReportReader

    def report(self, timeout: float = 10.0, *, until_complete: bool = False) -> RecallReport:
        merged = self.reader.wait(timeout, until_complete)
        if merged is None:
            raise TimeoutError(f"no recall report for {self.instruction.original_message_id} within {timeout:g} s")
        return merged
