"""The wire format of recalls: the recall instruction, the recall report and the legacy per-recipient notice.

Why here, in the server layer: the organisation's server is the first party that must understand a recall (the
cloud mode intercepts it at delivery), so the format belongs to it. The recall agent (harness) builds recalls
and reads reports with this same code, and the desktop client emulator parses recalls and writes notices with
it, so the three can never disagree about a header name.

Three messages, all built and parsed with the `email` package and `policy.default`:

Recall instruction (sender -> the original's recipients)::

    From: Alice <alice@corp.example>
    To: <the original's To>          Cc: <the original's Cc>     (Bcc recipients: envelope only)
    Subject: Recall: <original subject>
    Message-ID: <its own>
    X-Recall-Message-ID: <the original's Message-ID>
    X-Recall-Action: delete | replace
    text/plain: Alice would like to recall the message, "<original subject>".
    (replace: multipart/mixed with the text part and the replacement as a message/rfc822 part)

Recall report (the sender's server or agent -> the sender)::

    Subject: Message Recall Report: <original subject>
    X-Recall-Report: <the recall instruction's Message-ID>
    X-Recall-Message-ID: <the original's Message-ID>
    multipart/mixed: text/plain, one line per recipient "<address>: <status>[ (<detail>)]",
                     and application/json (recall-report.json) with the same data

Legacy notice (a recipient's desktop client -> the sender, one per recipient)::

    Subject: Recall Success: <original subject>  |  Recall Failure: <original subject>
    X-Recall-Notice: success | failure
    X-Recall-Message-ID: <the original's Message-ID>
    X-Recall-Recipient: <the recipient's address>
    X-Recall-Status: <a RecallStatus value>
    text/plain: a sentence for people

Subjects are normalised (runs of whitespace, line breaks included, become one space; ends stripped): a subject
is folded and unfolded by mail software on the way, and the normalised form is the one that survives.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import format_datetime, formataddr, getaddresses, make_msgid, parseaddr

from recall_lab.fake_servers.smtp import headers as header_block
from recall_lab.fake_servers.smtp.canonical import to_crlf

HEADER_MESSAGE_ID = "X-Recall-Message-ID"
HEADER_ACTION = "X-Recall-Action"
HEADER_REPORT = "X-Recall-Report"
HEADER_REPORT_MODE = "X-Recall-Mode"
HEADER_NOTICE = "X-Recall-Notice"
HEADER_RECIPIENT = "X-Recall-Recipient"
HEADER_STATUS = "X-Recall-Status"
HEADER_DETAIL = "X-Recall-Detail"
#: Added by the organisation's server, and only by it, to recalls, notices and reports it vouches for (the
#: sender authenticated as the From address); stripped from everything else that enters, like
#: Authentication-Results (RFC 8601). A client processes a recall only with its own domain's mark.
HEADER_VERIFIED = "X-Recall-Verified"

#: Every header of this format: a server may strip them from mail it does not trust.
RECALL_HEADERS = (HEADER_MESSAGE_ID, HEADER_ACTION, HEADER_REPORT, HEADER_REPORT_MODE, HEADER_NOTICE,
                  HEADER_RECIPIENT, HEADER_STATUS, HEADER_DETAIL, HEADER_VERIFIED)

RECALL_SUBJECT_PREFIX = "Recall: "
REPORT_SUBJECT_PREFIX = "Message Recall Report: "
NOTICE_SUCCESS_PREFIX = "Recall Success: "
NOTICE_FAILURE_PREFIX = "Recall Failure: "
REPORT_JSON_FILENAME = "recall-report.json"
REPORT_JSON_VERSION = 1


class RecallFormatError(ValueError):
    """A message claims to be a recall, report or notice but is malformed; the text says what is wrong."""


class RecallAction(enum.StrEnum):
    DELETE = "delete"
    REPLACE = "replace"


class RecallStatus(enum.StrEnum):
    """What became of the original in one recipient's mailbox."""

    RECALLED = "recalled"  # deleted before it was read
    RECALLED_AFTER_READ = "recalled-after-read"  # deleted, but the recipient had read it
    FAILED_READ = "failed-read"  # read already and the organisation does not recall read messages
    FAILED_MOVED = "failed-moved"  # legacy: not in the folder the recall landed in, so the client left it
    NOT_FOUND = "not-found"  # not (or no longer) in the mailbox: deleted, purged by retention
    FAILED_TOO_OLD = "failed-too-old"  # cloud: the original is older than recall_max_age_days; nothing removed
    HELD = "held"  # cloud: removed from the view of a mailbox on legal hold, kept in recoverable items
    EXTERNAL = "external"  # another provider's mailbox: cannot be recalled
    PENDING = "pending"  # legacy: no client has processed the recall yet

    @property
    def succeeded(self) -> bool:
        return self in (RecallStatus.RECALLED, RecallStatus.RECALLED_AFTER_READ)

    @property
    def final(self) -> bool:
        """Whether the status can still change (only `pending` can)."""
        return self is not RecallStatus.PENDING


# --- small helpers -----------------------------------------------------------------------------------------


def normalise_subject(subject: str | None) -> str:
    """One-line subject with runs of whitespace collapsed: the form that survives folding."""
    return " ".join((subject or "").split())


def normalise_message_id(message_id: str) -> str:
    """`<id>` with the angle brackets, whatever the caller passed; raises RecallFormatError if empty or spaced."""
    core = (message_id or "").strip().strip("<>").strip()
    if not core or any(ch.isspace() for ch in core) or "<" in core or ">" in core:
        raise RecallFormatError(f"not a Message-ID: {message_id!r}")
    return f"<{core}>"


def normalise_address(address: str) -> str:
    """The bare address in lower case (how the lab's accounts spell users)."""
    _name, addr = parseaddr(address or "")
    addr = (addr or address or "").strip().lower()
    if not addr or "@" not in addr or any(ch.isspace() for ch in addr):
        raise RecallFormatError(f"not an address: {address!r}")
    return addr


def _as_message(msg: EmailMessage | Message | bytes) -> EmailMessage:
    if isinstance(msg, bytes | bytearray):
        return BytesParser(policy=policy.default).parsebytes(bytes(msg))  # type: ignore[return-value]
    if isinstance(msg, EmailMessage):
        return msg
    return BytesParser(policy=policy.default).parsebytes(msg.as_bytes())  # type: ignore[return-value]


def _header(msg: EmailMessage, name: str) -> str | None:
    value = msg.get(name)
    return None if value is None else " ".join(str(value).split())


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2] or "localhost"


def _addresses(values: Iterable[str]) -> list[str]:
    return [addr.lower() for _name, addr in getaddresses([str(v) for v in values]) if addr and "@" in addr]


def _stamp(msg: EmailMessage, sender: str, message_id: str | None, date: datetime | None) -> None:
    msg["Message-ID"] = normalise_message_id(message_id) if message_id else make_msgid(domain=_domain_of(sender))
    msg["Date"] = format_datetime(date or datetime.now(UTC))
    msg["MIME-Version"] = "1.0"


# --- the recall instruction --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecallInstruction:
    """What a recall asks for. `to`/`cc` become headers; `bcc` only ever travels in the envelope."""

    original_message_id: str
    original_subject: str
    sender: str  # address
    sender_name: str = ""
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    action: RecallAction = RecallAction.DELETE
    replacement: EmailMessage | None = None
    message_id: str | None = None  # the recall's own Message-ID; chosen when built if None

    @property
    def recipients(self) -> tuple[str, ...]:
        """Every recipient of the original (envelope recipients of the recall), without duplicates."""
        seen: dict[str, None] = {}
        for addr in (*self.to, *self.cc, *self.bcc):
            seen.setdefault(addr.lower(), None)
        return tuple(seen)

    @property
    def display_name(self) -> str:
        return self.sender_name or self.sender


def recall_body_text(sender_name: str, original_subject: str) -> str:
    """The sentence a recipient without recall support reads (as with real recalls)."""
    return f'{sender_name} would like to recall the message, "{normalise_subject(original_subject)}".\n'


def build_recall_message(instruction: RecallInstruction, date: datetime | None = None) -> EmailMessage:
    """The recall as a message ready to submit (envelope recipients: `instruction.recipients`)."""
    sender = normalise_address(instruction.sender)
    action = RecallAction(instruction.action)
    if action is RecallAction.REPLACE and instruction.replacement is None:
        raise RecallFormatError("a replace recall needs the replacement message")
    if action is RecallAction.DELETE and instruction.replacement is not None:
        raise RecallFormatError("a delete recall carries no replacement")
    subject = normalise_subject(instruction.original_subject)
    name = normalise_subject(instruction.sender_name)
    msg = EmailMessage(policy=policy.default)
    msg["From"] = formataddr((name, sender)) if name else sender
    if instruction.to:
        msg["To"] = ", ".join(normalise_address(a) for a in instruction.to)
    if instruction.cc:
        msg["Cc"] = ", ".join(normalise_address(a) for a in instruction.cc)
    if not instruction.to and not instruction.cc:
        msg["To"] = "undisclosed-recipients:;"
    msg["Subject"] = RECALL_SUBJECT_PREFIX + subject
    _stamp(msg, sender, instruction.message_id, date)
    msg[HEADER_MESSAGE_ID] = normalise_message_id(instruction.original_message_id)
    msg[HEADER_ACTION] = action.value
    msg.set_content(recall_body_text(name or sender, subject))
    if action is RecallAction.REPLACE:
        assert instruction.replacement is not None
        msg.add_attachment(_as_message(instruction.replacement), disposition="inline")
    return msg


#: The field that makes a message each of the three kinds. A message is of one kind or of none: the server
#: vouches for a message as one kind (a user's notice) and a reader acts on it as the kind it reads (a report of
#: the whole recall), so a message carrying two kinds' fields would let a recipient write the sender's report.
_KIND_FIELDS = (("recall", HEADER_ACTION), ("notice", HEADER_NOTICE), ("report", HEADER_REPORT))


def message_kind(msg: EmailMessage | Message | bytes | header_block.HeaderBlock) -> str | None:
    """"recall", "notice" or "report": what the message claims to be, trusted or not; None when it claims to be
    none of them, or more than one (the server vouches for no such message and no reader acts on it). A
    HeaderBlock is answered without parsing the message (the web timeline asks this of every stored message)."""
    if isinstance(msg, header_block.HeaderBlock):
        return _kind(msg.has)
    m = _as_message(msg)
    return _kind(lambda name: m.get(name) is not None)


def _kind(present: Callable[[str], bool]) -> str | None:
    """The one rule of message_kind, over whichever reader of the header fields the caller has."""
    kinds = [kind for kind, name in _KIND_FIELDS if present(name)]
    if len(kinds) != 1 or (kinds[0] == "recall" and not present(HEADER_MESSAGE_ID)):
        return None
    return kinds[0]


def is_recall_instruction(msg: EmailMessage | Message | bytes) -> bool:
    """Whether the message claims to be a recall instruction (carries the recall headers), trusted or not."""
    return message_kind(msg) == "recall"


def parse_recall_instruction(msg: EmailMessage | Message | bytes) -> RecallInstruction | None:
    """The instruction a message carries; None when it is no recall; RecallFormatError when it is a broken one.

    `sender` is the From address; whether it may recall anything is the server's trust decision, not ours.
    """
    m = _as_message(msg)
    if not is_recall_instruction(m):
        return None
    try:
        action = RecallAction(_header(m, HEADER_ACTION).lower())  # type: ignore[union-attr]
    except ValueError:
        raise RecallFormatError(f"unknown {HEADER_ACTION}: {m.get(HEADER_ACTION)!r}") from None
    original = normalise_message_id(_header(m, HEADER_MESSAGE_ID) or "")
    who = header_block.author(msg if isinstance(msg, bytes | bytearray) else m)
    if who is None:
        raise RecallFormatError("a recall needs exactly one From address that reads one way only")
    sender_name, sender = who.name, who.address
    subject = normalise_subject(str(m.get("Subject", "")))
    if subject.startswith(RECALL_SUBJECT_PREFIX.strip()):
        subject = subject[len(RECALL_SUBJECT_PREFIX.strip()):].strip()
    replacement: EmailMessage | None = None
    if action is RecallAction.REPLACE:
        for part in m.walk():
            if part.get_content_type() == "message/rfc822":
                replacement = part.get_content()
                break
        if replacement is None:
            raise RecallFormatError("a replace recall without a message/rfc822 part")
    own_id = _header(m, "Message-ID")
    return RecallInstruction(
        original_message_id=original,
        original_subject=subject,
        sender=sender.lower(),
        sender_name=normalise_subject(sender_name),
        to=tuple(_addresses(m.get_all("To", []))),
        cc=tuple(_addresses(m.get_all("Cc", []))),
        action=action,
        replacement=replacement,
        message_id=normalise_message_id(own_id) if own_id else None,
    )


# --- the recall report -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecipientResult:
    recipient: str
    status: RecallStatus
    detail: str = ""

    def line(self) -> str:
        return f"{self.recipient}: {self.status.value}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True, slots=True)
class RecallReport:
    """Per-recipient outcome of one recall. `mode` is "cloud" or "legacy" (how the sender's org processed it)."""

    original_message_id: str
    original_subject: str
    results: tuple[RecipientResult, ...]
    recall_message_id: str | None = None
    mode: str = "cloud"

    @property
    def statuses(self) -> dict[str, RecallStatus]:
        return {r.recipient: r.status for r in self.results}

    @property
    def complete(self) -> bool:
        """True once no recipient is pending any more."""
        return all(r.status.final for r in self.results)

    @property
    def pending(self) -> tuple[str, ...]:
        return tuple(r.recipient for r in self.results if not r.status.final)

    def to_json(self) -> dict:
        return {
            "version": REPORT_JSON_VERSION,
            "original_message_id": self.original_message_id,
            "original_subject": self.original_subject,
            "recall_message_id": self.recall_message_id,
            "mode": self.mode,
            "recipients": [{"recipient": r.recipient, "status": r.status.value, "detail": r.detail}
                           for r in self.results],
        }

    @classmethod
    def from_json(cls, data: Mapping) -> RecallReport:
        try:
            if data.get("version") != REPORT_JSON_VERSION:
                raise RecallFormatError(f"unknown report version {data.get('version')!r}")
            results = tuple(RecipientResult(str(r["recipient"]), RecallStatus(r["status"]), str(r.get("detail", "")))
                            for r in data["recipients"])
            rid = data.get("recall_message_id")
            return cls(original_message_id=str(data["original_message_id"]),
                       original_subject=str(data["original_subject"]), results=results,
                       recall_message_id=None if rid is None else str(rid), mode=str(data.get("mode", "cloud")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, RecallFormatError):
                raise
            raise RecallFormatError(f"malformed recall report JSON: {exc}") from None

    def text(self) -> str:
        head = f'Recall of "{self.original_subject}" {self.original_message_id} ({self.mode}):'
        return "\n".join([head, *(r.line() for r in self.results)]) + "\n"


def build_report(report: RecallReport, to: str, from_addr: str | None = None, message_id: str | None = None,
                 date: datetime | None = None) -> EmailMessage:
    """The report message for the sender `to`; from `from_addr` (default: postmaster of the sender's domain)."""
    to_addr = normalise_address(to)
    sender = normalise_address(from_addr) if from_addr else f"postmaster@{_domain_of(to_addr)}"
    subject = normalise_subject(report.original_subject)
    msg = EmailMessage(policy=policy.default)
    msg["From"] = sender
    msg["To"] = to_addr
    msg["Subject"] = REPORT_SUBJECT_PREFIX + subject
    _stamp(msg, sender, message_id, date)
    msg[HEADER_REPORT] = normalise_message_id(report.recall_message_id) if report.recall_message_id else "none"
    msg[HEADER_MESSAGE_ID] = normalise_message_id(report.original_message_id)
    msg[HEADER_REPORT_MODE] = report.mode
    msg.set_content(report.text())
    payload = json.dumps(report.to_json(), indent=2, sort_keys=True, ensure_ascii=True).encode("ascii")
    msg.add_attachment(payload, maintype="application", subtype="json", filename=REPORT_JSON_FILENAME,
                       cte="quoted-printable")
    return msg


def is_report(msg: EmailMessage | Message | bytes) -> bool:
    return message_kind(msg) == "report"


def parse_report(msg: EmailMessage | Message | bytes) -> RecallReport | None:
    """The report a message carries (from its JSON part); None when it is no report."""
    m = _as_message(msg)
    if not is_report(m):
        return None
    for part in m.walk():
        if part.get_content_type() == "application/json":
            raw = part.get_content()
            try:
                data = json.loads(raw if isinstance(raw, str) else raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise RecallFormatError(f"report JSON does not parse: {exc}") from None
            if not isinstance(data, dict):
                raise RecallFormatError("report JSON is not an object")
            return RecallReport.from_json(data)
    raise RecallFormatError("a recall report without its application/json part")


# --- the legacy per-recipient notice -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecallNotice:
    """A recipient's client telling the sender what it did with a recall (legacy processing)."""

    original_message_id: str
    original_subject: str
    recipient: str
    status: RecallStatus
    detail: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status.succeeded

    def result(self) -> RecipientResult:
        return RecipientResult(self.recipient, self.status, self.detail)


def notice_body_text(notice: RecallNotice) -> str:
    outcome = "succeeded" if notice.succeeded else "failed"
    extra = f" ({notice.detail})" if notice.detail else ""
    return (f'Your recall of the message "{normalise_subject(notice.original_subject)}" for {notice.recipient} '
            f"{outcome}: {notice.status.value}{extra}.\n")


def build_notice(notice: RecallNotice, to: str, from_addr: str | None = None, message_id: str | None = None,
                 date: datetime | None = None) -> EmailMessage:
    """The notice a recipient's client sends to the recall's sender `to` (From: the recipient by default)."""
    recipient = normalise_address(notice.recipient)
    status = RecallStatus(notice.status)
    if status is RecallStatus.PENDING:
        raise RecallFormatError("a notice reports what a client did; it cannot be pending")
    sender = normalise_address(from_addr) if from_addr else recipient
    subject = normalise_subject(notice.original_subject)
    msg = EmailMessage(policy=policy.default)
    msg["From"] = sender
    msg["To"] = normalise_address(to)
    prefix = NOTICE_SUCCESS_PREFIX if status.succeeded else NOTICE_FAILURE_PREFIX
    msg["Subject"] = prefix + subject
    _stamp(msg, sender, message_id, date)
    msg[HEADER_NOTICE] = "success" if status.succeeded else "failure"
    msg[HEADER_MESSAGE_ID] = normalise_message_id(notice.original_message_id)
    msg[HEADER_RECIPIENT] = recipient
    msg[HEADER_STATUS] = status.value
    detail = normalise_subject(notice.detail)
    if detail:
        msg[HEADER_DETAIL] = detail
    msg.set_content(notice_body_text(replace(notice, recipient=recipient, status=status, original_subject=subject,
                                             detail=detail)))
    return msg


def is_notice(msg: EmailMessage | Message | bytes) -> bool:
    return message_kind(msg) == "notice"


def parse_notice(msg: EmailMessage | Message | bytes) -> RecallNotice | None:
    """The notice a message carries; None when it is no notice."""
    m = _as_message(msg)
    if not is_notice(m):
        return None
    try:
        status = RecallStatus((_header(m, HEADER_STATUS) or "").lower())
    except ValueError:
        raise RecallFormatError(f"unknown {HEADER_STATUS}: {m.get(HEADER_STATUS)!r}") from None
    if status is RecallStatus.PENDING:
        raise RecallFormatError("a notice cannot be pending")
    subject = normalise_subject(str(m.get("Subject", "")))
    for prefix in (NOTICE_SUCCESS_PREFIX, NOTICE_FAILURE_PREFIX):
        if subject.startswith(prefix.strip()):
            subject = subject[len(prefix.strip()):].strip()
            break
    return RecallNotice(
        original_message_id=normalise_message_id(_header(m, HEADER_MESSAGE_ID) or ""),
        original_subject=subject,
        recipient=normalise_address(_header(m, HEADER_RECIPIENT) or ""),
        status=status,
        detail=_header(m, HEADER_DETAIL) or "",
    )


def notice_sender(msg: EmailMessage | Message | bytes) -> str | None:
    """The From address of a notice (lower case; None unless exactly one, read one way only): the agent only
    believes notices whose From is the recipient. The same reading as the server's (headers.author)."""
    who = header_block.author(bytes(msg) if isinstance(msg, bytes | bytearray) else _as_message(msg))
    return None if who is None else who.address


# --- the server's mark of trust ---------------------------------------------------------------------------
#
# One reader for all of it: recall_lab.fake_servers.smtp.headers.HeaderBlock decides what the header fields are, for the
# filter (strip_verified, has_recall_headers) and for the trust check (verified_by) alike. The filter strips
# every field HeaderBlock reads as the mark, a superset of what Python's email parser (the clients') can see;
# the trust check believes a mark only in a header block that reads the same to both (no irregularity at all),
# where it is exactly one well-formed field.

_VERIFIED_KEY = HEADER_VERIFIED.lower().encode("ascii")
_MARK_VALUE = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?")


def has_recall_headers(raw: bytes) -> bool:
    """Cheap test on the header block: does any X-Recall-* field appear? (Ordinary mail skips all parsing.)"""
    head, _body = header_block.split_message(raw)
    lowered = head.lower()
    if b"x-recall-" not in lowered:
        return False
    return any(name.startswith(b"x-recall-") for name in header_block.field_names(head))


def strip_verified(raw: bytes) -> bytes:
    """`raw` without any X-Recall-Verified field (continuation lines included); `raw` itself when it has none."""
    head, _body = header_block.split_message(raw)
    if _VERIFIED_KEY not in head.lower():
        return raw
    return header_block.remove_headers(raw, [HEADER_VERIFIED])


def mark_verified(raw: bytes, domain: str) -> bytes:
    """`raw` with any earlier mark removed and this server's mark on top (CRLF line ends, bytes otherwise kept)."""
    return f"{HEADER_VERIFIED}: {domain.lower()}\r\n".encode("ascii") + strip_verified(to_crlf(raw))


def verified_by(msg: EmailMessage | Message | bytes) -> str | None:
    """The domain whose server vouched for this recall/notice/report, or None.

    Pass the message's bytes whenever there are any (a parsed message is judged by its parser's view, which
    cannot show a bare CR). None unless the header block is regular (HeaderBlock.problem) and holds exactly one
    mark whose value is one domain name."""
    values = header_block.field_values(bytes(msg) if isinstance(msg, bytes | bytearray) else msg, HEADER_VERIFIED)
    if not values or len(values) != 1:
        return None
    value = values[0].strip().lower()
    return value if _MARK_VALUE.fullmatch(value) else None


# --- merging: a report plus the notices that arrived since -------------------------------------------------


def merge_report(report: RecallReport, updates: Iterable[RecallReport | RecallNotice | RecipientResult]
                 ) -> RecallReport:
    """The report with later information applied, in order: a later report for the same recall replaces the
    statuses it carries; a notice or result sets its recipient's status. A final status is never turned back to
    pending (a late copy of the initial report must not undo a notice). Recipients a later report names are
    appended; a notice speaks only for a recipient the report already lists (anyone can be vouched for as
    themselves, but only the recall's recipients have a copy to speak of), and never for a cloud recall, whose
    server removed the copies itself: its report is the authority, not what a recipient says afterwards.
    """
    results: dict[str, RecipientResult] = {r.recipient: r for r in report.results}

    def apply(result: RecipientResult) -> None:
        current = results.get(result.recipient)
        if current is not None and current.status.final and not result.status.final:
            return
        results[result.recipient] = result

    for update in updates:
        if isinstance(update, RecallReport):
            if update.original_message_id != report.original_message_id:
                continue
            for r in update.results:
                apply(r)
        elif isinstance(update, RecallNotice):
            if update.original_message_id != report.original_message_id:
                continue
            if report.mode == "cloud" or update.recipient not in results:
                continue
            apply(update.result())
        else:
            apply(update)
    return replace(report, results=tuple(results.values()))


def pending_report(instruction: RecallInstruction, statuses: Mapping[str, RecallStatus] | None = None,
                   details: Mapping[str, str] | None = None, mode: str = "legacy") -> RecallReport:
    """A report with every recipient of `instruction` at the status given (default pending)."""
    statuses = statuses or {}
    details = details or {}
    results = tuple(RecipientResult(r, statuses.get(r, RecallStatus.PENDING), details.get(r, ""))
                    for r in instruction.recipients)
    return RecallReport(original_message_id=normalise_message_id(instruction.original_message_id),
                        original_subject=normalise_subject(instruction.original_subject), results=results,
                        recall_message_id=instruction.message_id, mode=mode)


__all__ = [
    "HEADER_ACTION", "HEADER_DETAIL", "HEADER_MESSAGE_ID", "HEADER_NOTICE", "HEADER_RECIPIENT", "HEADER_REPORT",
    "HEADER_REPORT_MODE", "HEADER_STATUS", "HEADER_VERIFIED", "RECALL_HEADERS", "RecallAction", "RecallFormatError",
    "RecallInstruction", "RecallNotice", "RecallReport", "RecallStatus", "RecipientResult", "build_notice",
    "build_recall_message", "build_report", "has_recall_headers", "is_notice", "is_recall_instruction", "is_report",
    "mark_verified", "merge_report", "message_kind", "normalise_address", "normalise_message_id",
    "normalise_subject", "notice_sender", "parse_notice", "parse_recall_instruction", "parse_report",
    "pending_report", "recall_body_text", "strip_verified", "verified_by",
]
