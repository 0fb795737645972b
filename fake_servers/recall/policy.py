"""Recall processing in the organisation's server: the `recall` delivery policy (cloud and legacy modes).

Why a delivery policy: a recall is just another submitted message, and the organisation's server is the first
party that sees it. In `cloud` mode (Exchange Online's cloud-based recall) the server intercepts it here and
deletes the original from each local recipient's mailbox, in whatever folder it now is, through the store, so
every IMAP session hears EXPUNGE/VANISHED at once; the sender gets the report in her INBOX before her SMTP client
is even answered. In `legacy` mode (classic Outlook) the server only vouches for the recall (X-Recall-Verified)
and delivers it; the recipients' desktop clients act and send notices, which the server vouches for the same way.

Settings (the domain's `policies` table):
    recall_mode = "cloud" | "legacy" | "off"   (default "cloud")
    recall_read_messages = true                (cloud: also recall messages already read)
    notify_recipients = false                  (cloud: also deliver the recall message itself)
    legal_hold = ["bob@corp.example"]          (see fake_servers/policies/legal_hold.py)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from email import policy as email_policy
from email.parser import BytesHeaderParser
from email.utils import make_msgid
from typing import Any

from fake_servers.pipeline import Delivery, DomainServices, Verdict
from fake_servers.policies.legal_hold import held_users, preserve_then_expunge
from fake_servers.recall.format import (
    RecallAction,
    RecallFormatError,
    RecallInstruction,
    RecallReport,
    RecallStatus,
    RecipientResult,
    build_report,
    has_recall_headers,
    is_notice,
    is_recall_instruction,
    mark_verified,
    normalise_message_id,
    parse_notice,
    parse_recall_instruction,
    strip_verified,
)
from fake_servers.recall.trust import copy_is_from, from_address, judge_submission
from fake_servers.store.base import MailStore, StoreError

MODES = ("cloud", "legacy", "off")
#: Marks put on Delivery.trusted_marks (never read from headers).
MARK_RECALL = "recall-honoured"
MARK_NOTICE = "recall-notice-verified"
#: The `origin` of the store changes recall makes (IMAP sessions only compare origins with themselves).
ORIGIN = "recall"

_HEADERS = BytesHeaderParser(policy=email_policy.default)


@dataclass(frozen=True, slots=True)
class RecallSettings:
    mode: str = "cloud"
    recall_read_messages: bool = True
    notify_recipients: bool = False
    legal_hold: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], domain: str) -> RecallSettings:
        mode = str(settings.get("recall_mode", "cloud")).strip().lower()
        if mode not in MODES:
            raise ValueError(f"policies.recall_mode must be one of {', '.join(MODES)}, not {mode!r}")
        for key in ("recall_read_messages", "notify_recipients"):
            if key in settings and not isinstance(settings[key], bool):
                raise ValueError(f"policies.{key} must be true or false")
        return cls(mode=mode, recall_read_messages=settings.get("recall_read_messages", True),
                   notify_recipients=settings.get("notify_recipients", False),
                   legal_hold=held_users(settings, domain))


def _copy_from(store: MailStore, user: str, mailbox: str, uid: int) -> str | None:
    return from_address(_HEADERS.parsebytes(store.fetch_raw(user, mailbox, uid)))  # type: ignore[arg-type]


def sent_by(store: MailStore, sender: str, original: str) -> bool:
    """Whether the sender's own mailbox holds the original with her as its From: the proof that the message
    she recalls is hers (the lab's submission files a Sent copy of everything she sends)."""
    try:
        locations = store.find_by_message_id(sender, original)
    except StoreError:
        return False
    for loc in locations:
        try:
            if copy_is_from(_copy_from(store, sender, loc.mailbox, loc.uid), sender):
                return True
        except StoreError:
            continue
    return False


def recall_from_mailbox(store: MailStore, user: str, original: str, sender: str, settings: RecallSettings
                        ) -> RecipientResult:
    """Cloud recall in one local mailbox: remove every copy of `original` written by `sender`, wherever it is.

    O(1) in the mailbox size: the store's Message-ID index says where the copies are.
    """
    copies = []
    foreign = 0
    for loc in store.find_by_message_id(user, original):
        try:
            if store.mailbox(user, loc.mailbox).special_use == "\\Sent":
                continue  # the sender's own Sent copy when she was also a recipient: not the recipient's copy
            header_from = _copy_from(store, user, loc.mailbox, loc.uid)
            record = store.get(user, loc.mailbox, loc.uid)
        except StoreError:
            continue
        if copy_is_from(header_from, sender):
            copies.append((loc, record))
        else:
            foreign += 1
    if not copies:
        detail = "a message with this Message-ID exists but was not sent by you" if foreign else \
            "not in the mailbox (deleted or purged)"
        return RecipientResult(user, RecallStatus.NOT_FOUND, detail)
    read = any("\\Seen" in record.flags for _loc, record in copies)
    if read and not settings.recall_read_messages:
        return RecipientResult(user, RecallStatus.FAILED_READ, "already read; read messages are not recalled")
    folders = sorted({loc.mailbox for loc, _record in copies})
    held = user in settings.legal_hold
    for loc, _record in copies:
        if held:
            preserve_then_expunge(store, user, loc.mailbox, loc.uid, reason=ORIGIN)
        else:
            store.expunge(user, loc.mailbox, [loc.uid], origin=ORIGIN)
    where = ", ".join(folders)
    if held:
        return RecipientResult(user, RecallStatus.HELD,
                               f"removed from {where}; preserved in recoverable items (legal hold)")
    return RecipientResult(user, RecallStatus.RECALLED_AFTER_READ if read else RecallStatus.RECALLED,
                           f"removed from {where}")


def _cancel_delayed_send(services: DomainServices, queue_id: str) -> bool:
    """Cancel through the delayed-send policy when it holds the message, so its Outbox copy goes too."""
    try:
        from fake_servers.policies.delayed_send import delayed_send_for
    except ImportError:
        return False
    policy = delayed_send_for(services)
    return policy is not None and policy.cancel(queue_id)


class RecallPolicy:
    """The `recall` policy of an organisation's domain (see the module docstring)."""

    name = "recall"

    def __init__(self, settings: Mapping[str, Any], services: DomainServices) -> None:
        self.settings = RecallSettings.from_settings(settings, services.domain)
        self.domain = services.domain

    async def on_delivery(self, delivery: Delivery, services: DomainServices) -> Verdict:
        if not has_recall_headers(delivery.raw):
            return Verdict.CONTINUE  # ordinary mail: no parsing at all
        stripped = strip_verified(delivery.raw)
        if stripped is not delivery.raw:
            delivery.raw = stripped
            services.log("recall-mark-stripped", queue_id=delivery.queue_id, channel=delivery.channel,
                         mail_from=delivery.mail_from)
        if self.settings.mode == "off":
            return Verdict.CONTINUE
        msg = delivery.message
        if is_notice(msg):
            return self._notice(delivery, services)
        if is_recall_instruction(msg):
            return self._recall(delivery, services)
        return Verdict.CONTINUE

    # -- recalls -----------------------------------------------------------------------------------------

    @staticmethod
    def _refuse(delivery: Delivery, services: DomainServices, reason: str, **fields: Any) -> Verdict:
        """Log the attempt; the recall goes on as the ordinary mail it then is."""
        services.log("recall-refused", reason=reason, queue_id=delivery.queue_id, channel=delivery.channel,
                     auth_user=delivery.auth_user, mail_from=delivery.mail_from,
                     recipients=list(delivery.recipients), **fields)
        return Verdict.CONTINUE

    def _recall(self, delivery: Delivery, services: DomainServices) -> Verdict:
        msg = delivery.message
        try:
            instruction = parse_recall_instruction(msg)
        except RecallFormatError as exc:
            return self._refuse(delivery, services, f"malformed: {exc}")
        assert instruction is not None
        original = instruction.original_message_id
        decision = judge_submission(delivery.channel, delivery.auth_user, delivery.mail_from, msg,
                                    services.local_domains)
        if not decision.honoured:
            return self._refuse(delivery, services, decision.reason, sender=instruction.sender, original=original)
        sender = (delivery.auth_user or "").lower()
        if not sent_by(services.store, sender, original):
            return self._refuse(delivery, services, f"no message {original} sent by {sender} in her mailbox",
                                sender=instruction.sender, original=original)
        delivery.trusted_marks.add(MARK_RECALL)
        recipients = list(dict.fromkeys(r.strip().lower() for r in delivery.recipients))
        if self.settings.mode == "cloud":
            results, remaining = self._cloud(instruction, sender, recipients, services)
        else:
            results, remaining = self._legacy(recipients, services)
            delivery.raw = mark_verified(delivery.raw, self.domain)
        report = RecallReport(original_message_id=instruction.original_message_id,
                              original_subject=instruction.original_subject,
                              results=tuple(results[r] for r in recipients),
                              recall_message_id=instruction.message_id, mode=self.settings.mode)
        self._send_report(report, sender, services)
        services.log("recall-honoured", queue_id=delivery.queue_id, mode=self.settings.mode, sender=sender,
                     original=instruction.original_message_id, action=instruction.action.value,
                     statuses={r.recipient: r.status.value for r in report.results})
        delivery.recipients[:] = remaining
        if remaining:
            return Verdict.CONTINUE  # final delivery files the Sent copy, as for any submission
        if delivery.save_sent_copy:
            # consumed: the pipeline stops here, so file the sender's copy ourselves. One rule for every recall:
            # a submitted recall is filed in Sent like any submission (as real servers do), whoever received it
            services.save_sent_copy(delivery)
        return Verdict.CONSUMED

    @staticmethod
    def _not_local(rcpt: str, services: DomainServices) -> RecipientResult | None:
        """The status of a recipient no mailbox of ours can act for (both modes), else None."""
        if not services.is_local(rcpt):
            return RecipientResult(rcpt, RecallStatus.EXTERNAL, "another provider: the recall goes out as ordinary mail")
        if services.accounts.canonical(rcpt) is None:
            return RecipientResult(rcpt, RecallStatus.NOT_FOUND, "no such mailbox")
        return None

    def _cloud(self, instruction: RecallInstruction, sender: str, recipients: list[str],
               services: DomainServices) -> tuple[dict[str, RecipientResult], list[str]]:
        results: dict[str, RecipientResult] = {}
        remaining: list[str] = []
        local_users: list[str] = []
        never_delivered = self._discard_held_original(instruction.original_message_id, sender, services)
        for rcpt in recipients:
            if rcpt in never_delivered:
                results[rcpt] = RecipientResult(rcpt, RecallStatus.RECALLED,
                                                "never delivered: it was still held (delayed send)")
            elif (other := self._not_local(rcpt, services)) is not None:
                results[rcpt] = other
                if other.status is RecallStatus.EXTERNAL:
                    remaining.append(rcpt)
            else:
                results[rcpt] = recall_from_mailbox(services.store, rcpt, instruction.original_message_id, sender,
                                                    self.settings)
                local_users.append(rcpt)
                if self.settings.notify_recipients:
                    remaining.append(rcpt)
        if instruction.action is RecallAction.REPLACE and instruction.replacement is not None:
            raw = instruction.replacement.as_bytes(policy=email_policy.SMTP)
            if instruction.replacement.get("Message-ID") is None:
                raw = f"Message-ID: {make_msgid(domain=self.domain)}\r\n".encode("ascii") + raw
            for user in local_users:
                services.deliver_local(user, raw, mail_from=sender)
        return results, remaining

    def _legacy(self, recipients: list[str], services: DomainServices
                ) -> tuple[dict[str, RecipientResult], list[str]]:
        results: dict[str, RecipientResult] = {}
        remaining: list[str] = []
        for rcpt in recipients:
            if (other := self._not_local(rcpt, services)) is not None:
                results[rcpt] = other
                if other.status is RecallStatus.EXTERNAL:
                    remaining.append(rcpt)
            elif rcpt in self.settings.legal_hold:
                results[rcpt] = RecipientResult(rcpt, RecallStatus.HELD,
                                                "legal hold: the recall is not handed to the mailbox's clients")
            else:
                results[rcpt] = RecipientResult(rcpt, RecallStatus.PENDING, "delivered; waiting for a client")
                remaining.append(rcpt)
        return results, remaining

    def _discard_held_original(self, original: str, sender: str, services: DomainServices) -> set[str]:
        """A recall of a message still held (delayed send) drops it: its recipients never see it."""
        try:
            held = services.held()
        except Exception:  # a domain server without a spool: nothing can be held
            return set()
        dropped: set[str] = set()
        for delivery in held:
            try:
                same = delivery.message_id is not None and \
                    normalise_message_id(delivery.message_id) == original
            except RecallFormatError:
                same = False
            if same and delivery.mail_from.strip().lower() == sender:
                if not _cancel_delayed_send(services, delivery.queue_id):
                    services.discard(delivery.queue_id)
                dropped.update(r.strip().lower() for r in delivery.recipients)
                services.log("recall-discarded-held", queue_id=delivery.queue_id, original=original)
        return dropped

    def _send_report(self, report: RecallReport, sender: str, services: DomainServices) -> None:
        msg = build_report(report, to=sender, from_addr=f"postmaster@{self.domain}")
        raw = mark_verified(msg.as_bytes(policy=email_policy.SMTP), self.domain)
        services.deliver_local(sender, raw, mail_from="")

    # -- legacy notices ----------------------------------------------------------------------------------

    def _notice(self, delivery: Delivery, services: DomainServices) -> Verdict:
        msg = delivery.message
        try:
            notice = parse_notice(msg)
        except RecallFormatError as exc:
            services.log("recall-notice-refused", reason=f"malformed: {exc}", queue_id=delivery.queue_id)
            return Verdict.CONTINUE
        assert notice is not None
        decision = judge_submission(delivery.channel, delivery.auth_user, delivery.mail_from, msg,
                                    services.local_domains, claimed=notice.recipient)
        if not decision.honoured:
            services.log("recall-notice-refused", reason=decision.reason, queue_id=delivery.queue_id,
                         channel=delivery.channel, auth_user=delivery.auth_user, recipient=notice.recipient,
                         original=notice.original_message_id)
            return Verdict.CONTINUE
        delivery.trusted_marks.add(MARK_NOTICE)
        delivery.raw = mark_verified(delivery.raw, self.domain)
        services.log("recall-notice", queue_id=delivery.queue_id, recipient=notice.recipient,
                     status=notice.status.value, original=notice.original_message_id)
        return Verdict.CONTINUE
