"""Recall processing in the organisation's server: the `recall` delivery policy (cloud and legacy modes).

Why a delivery policy: a recall is just another submitted message, and the organisation's server is the first
party that sees it. In `cloud` mode (Exchange Online's cloud-based recall) the server intercepts it here and
deletes the original from each local recipient's mailbox, in whatever folder it now is, through the store, so
every IMAP session hears EXPUNGE/VANISHED at once. The sender's Message Recall Report is a separate delivery
filed after the recall has been processed, `recall_report_delay` seconds later by the domain's clock (Exchange
Online produces it asynchronously; see "The report" below). In `legacy` mode (classic Outlook) the server only
vouches for the recall (X-Recall-Verified) and delivers it; the recipients' desktop clients act and send notices,
which the server vouches for the same way.

A replace recall's replacement is delivered by this server itself, past the submission check of From, so it is
held to that check (`trust.judge_replacement`): a replacement in anyone's name but the sender's makes the recall
one that is refused, in both modes. In cloud mode the replacement is a separate, ordinary message to every
recipient of the recall, external ones included (they get it through the relay like any mail), as Outlook sends
the new message after the recall "processed for delivery normally" (docs/recall-sources.md section 1).

What leaves a mailbox here is kept by the store's removal hook in the domain's recoverable-items area
(fake_servers/recall/recoverable.py): this policy only expunges, for held and other mailboxes alike, and reads
the hold list only to say `held` in the report. The legacy recall goes to a held mailbox's clients like to any
other: a hold keeps items from destruction, it does not stop the deletion the user sees (section 3).

A cloud recall survives a crash: it decides everything first (each recipient's outcome, which copies go, the
report), writes that decision to the store as a write-ahead record (`MailStore.begin_operation`), then acts,
files the report and ends the record. A server killed half-way finds the record when it starts again
(`start`) and finishes the recall: every step is idempotent (copies are found again through the Message-ID
index, the replacement and the report are delivered only where their Message-ID is not yet), so the sender
gets exactly one report, the one decided before the first copy went.

The report: once the copies are gone (and the replacement delivered), the report waits `recall_report_delay`
seconds by the domain's clock (`services.clock`), its write-ahead record still open. 0 (the default) files it
from a background task on the next turn of the event loop, after the recall's SMTP reply (`Lab.wait_idle()`
waits for it); a positive delay is kept by the policy's own timer, and a driver on simulated time files it at
its planned instant (`file_report_now`, `file_due_reports`). Nothing is lost on the way: a domain that stops
with a report pending files it at once while stopping (`stop`), and one killed before that finds the open record
when it starts again and files the report then (`start`). The legacy mode's first report (each local recipient
`pending`) is filed at once, as before: the recipients' clients answer later with notices.

Settings (the domain's `policies` table; the Exchange Online setting each stands for in brackets):
    recall_mode = "cloud" | "legacy" | "off"   (default "cloud"; "classic" = "legacy": what Exchange falls back to
                                                with -MessageRecallEnabled $false; "off": a server without recall)
    recall_read_messages = true                (cloud: also recall messages already read;
                                                -RecallReadMessagesEnabled)
    notify_recipients = false | true | "read"  (cloud: also deliver the recall message itself to local recipients,
                                                as the alert; "read": only to those who had read the original;
                                                -MessageRecallAlertRecipientsEnabled and
                                                -MessageRecallAlertRecipientsReadMessagesOnlyEnabled)
    recall_max_age_days = 30                   (cloud: an original older than this is not recalled,
                                                `failed-too-old`; -MessageRecallMaxRecallableAge. Its default is
                                                not documented: 30 is the lab's assumption. The age is the
                                                server's clock now minus the INTERNALDATE of the sender's own
                                                copy, which her server stamped when it accepted the original)
    legal_hold = ["bob@corp.example"]          (see fake_servers/recall/recoverable.py)
    recall_step_delay = 0                      (cloud: seconds between one recipient's mailbox and the next;
                                                shows a recall's progress to IMAP clients, and lets a test stop
                                                the server half-way; 0 removes every copy at once)
    recall_report_delay = 0                    (cloud: seconds from the recall's processing to its report;
                                                no Microsoft figure is available, so 0, "as soon as processed",
                                                is the lab's assumption; at most 86400, the third-party "retries
                                                for up to 24 hours")
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email import policy as email_policy
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import make_msgid
from typing import Any

from recall_lab.fake_servers.background import cancel_and_wait
from recall_lab.fake_servers.mime_limits import MimeLimits, check_message
from recall_lab.fake_servers.pipeline import Delivery, DomainServices, Verdict
from recall_lab.fake_servers.recall.format import (
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
from recall_lab.fake_servers.recall.modes import normalise_mode
from recall_lab.fake_servers.recall.recoverable import held_users
from recall_lab.fake_servers.recall.trust import (
    copy_is_from,
    from_address,
    judge_replacement,
    judge_submission,
)
from recall_lab.fake_servers.smtp.headers import as_bytes_checked
from recall_lab.fake_servers.store.base import MailStore, MessageLocation, MessageRecord, StoreError

#: Marks put on Delivery.trusted_marks (never read from headers).
MARK_RECALL = "recall-honoured"
MARK_NOTICE = "recall-notice-verified"
#: The `origin` of the store changes recall makes (IMAP sessions only compare origins with themselves).
ORIGIN = "recall"
#: The `kind` of the store's write-ahead record a cloud recall keeps until its report is filed.
OPERATION_KIND = "cloud-recall"
#: The longest `recall_step_delay` accepted (seconds).
MAX_STEP_DELAY = 600.0
#: The longest `recall_report_delay` accepted (seconds): a day, the third-party "retries for up to 24 hours".
MAX_REPORT_DELAY = 86400.0
#: `recall_max_age_days` when the domain does not set it: an assumption (the cmdlet reference documents no
#: default, docs/recall-sources.md section 1).
DEFAULT_MAX_AGE_DAYS = 30.0
#: What `notify_recipients` may say besides true and false.
NOTIFY_READ = "read"

_HEADERS = BytesHeaderParser(policy=email_policy.default)


#: The keys of the domain's `policies` table the recall policy reads (legal_hold: held mailboxes report "held").
SETTINGS = ("recall_mode", "recall_read_messages", "notify_recipients", "recall_step_delay", "recall_max_age_days",
            "recall_report_delay", "legal_hold")


@dataclass(frozen=True, slots=True)
class RecallSettings:
    mode: str = "cloud"
    recall_read_messages: bool = True
    notify_recipients: bool | str = False  # False, True or NOTIFY_READ
    legal_hold: frozenset[str] = frozenset()
    step_delay: float = 0.0
    max_age_days: float = DEFAULT_MAX_AGE_DAYS
    report_delay: float = 0.0

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], domain: str) -> RecallSettings:
        mode = normalise_mode(settings.get("recall_mode", "cloud"))
        if "recall_read_messages" in settings and not isinstance(settings["recall_read_messages"], bool):
            raise ValueError("policies.recall_read_messages must be true or false")
        notify = settings.get("notify_recipients", False)
        if isinstance(notify, str) and notify.strip().lower() == NOTIFY_READ:
            notify = NOTIFY_READ
        elif not isinstance(notify, bool):
            raise ValueError(f'policies.notify_recipients must be true, false or "{NOTIFY_READ}"')
        delay = settings.get("recall_step_delay", 0)
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= MAX_STEP_DELAY:
            raise ValueError(f"policies.recall_step_delay must be a number of seconds from 0 to {MAX_STEP_DELAY:g}")
        age = settings.get("recall_max_age_days", DEFAULT_MAX_AGE_DAYS)
        if isinstance(age, bool) or not isinstance(age, int | float) or not age > 0:
            raise ValueError("policies.recall_max_age_days must be a number of days > 0")
        report = settings.get("recall_report_delay", 0)
        if isinstance(report, bool) or not isinstance(report, int | float) or not 0 <= report <= MAX_REPORT_DELAY:
            raise ValueError("policies.recall_report_delay must be a number of seconds from 0 to "
                             f"{MAX_REPORT_DELAY:g}")
        return cls(mode=mode, recall_read_messages=settings.get("recall_read_messages", True),
                   notify_recipients=notify, legal_hold=held_users(settings, domain), step_delay=float(delay),
                   max_age_days=float(age), report_delay=float(report))

    def notifies(self, plan: MailboxPlan) -> bool:
        """Whether the recall itself goes to this local recipient as the alert."""
        if self.notify_recipients == NOTIFY_READ:
            return plan.read
        return bool(self.notify_recipients)


def _copy_from(store: MailStore, user: str, mailbox: str, uid: int) -> str | None:
    return from_address(_HEADERS.parsebytes(store.fetch_raw(user, mailbox, uid)))  # type: ignore[arg-type]


def sender_copy(store: MailStore, sender: str, original: str) -> MessageRecord | None:
    """The sender's own copy of the original with her as its From (Sent, or Outbox while delayed send holds it),
    the earliest when there are several: the proof that the message she recalls is hers (the lab's submission
    files a Sent copy of everything she sends), and whose INTERNALDATE says when her server accepted it."""
    try:
        locations = store.find_by_message_id(sender, original)
    except StoreError:
        return None
    found: list[MessageRecord] = []
    for loc in locations:
        try:
            if copy_is_from(_copy_from(store, sender, loc.mailbox, loc.uid), sender):
                found.append(store.get(sender, loc.mailbox, loc.uid))
        except StoreError:
            continue
    return min(found, key=lambda r: r.internaldate) if found else None


def sent_by(store: MailStore, sender: str, original: str) -> bool:
    """Whether the sender's own mailbox holds the original with her as its From (see `sender_copy`)."""
    return sender_copy(store, sender, original) is not None


def _copies(store: MailStore, user: str, original: str, sender: str
            ) -> tuple[list[tuple[MessageLocation, MessageRecord]], int]:
    """The user's copies of `original` written by `sender` outside Sent (O(1) in the mailbox size: the store's
    Message-ID index says where they are), and how many messages carry that Message-ID from someone else."""
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
    return copies, foreign


@dataclass(frozen=True, slots=True)
class MailboxPlan:
    """What a cloud recall decided for one local mailbox, before acting: the outcome, and the copies to remove
    (none when the outcome keeps them)."""

    result: RecipientResult
    copies: tuple[MessageLocation, ...] = ()
    held: bool = False
    read: bool = False  # a copy had been read (\\Seen): what notify_recipients = "read" asks


def plan_mailbox_recall(store: MailStore, user: str, original: str, sender: str, settings: RecallSettings
                        ) -> MailboxPlan:
    """Decide, without changing anything, what a cloud recall does in `user`'s mailbox."""
    copies, foreign = _copies(store, user, original, sender)
    if not copies:
        detail = "a message with this Message-ID exists but was not sent by you" if foreign else \
            "not in the mailbox (deleted or purged)"
        return MailboxPlan(RecipientResult(user, RecallStatus.NOT_FOUND, detail))
    read = any("\\Seen" in record.flags for _loc, record in copies)
    if read and not settings.recall_read_messages:
        return MailboxPlan(RecipientResult(user, RecallStatus.FAILED_READ,
                                           "already read; read messages are not recalled"), read=True)
    where = ", ".join(sorted({loc.mailbox for loc, _record in copies}))
    locations = tuple(loc for loc, _record in copies)
    if user in settings.legal_hold:
        return MailboxPlan(RecipientResult(user, RecallStatus.HELD,
                                           f"removed from {where}; preserved in recoverable items (legal hold)"),
                           locations, held=True, read=read)
    status = RecallStatus.RECALLED_AFTER_READ if read else RecallStatus.RECALLED
    return MailboxPlan(RecipientResult(user, status, f"removed from {where}"), locations, read=read)


def remove_copies(store: MailStore, user: str, locations: Sequence[MessageLocation]) -> None:
    """Take the planned copies out of the user's view. Held or not, it is an expunge: the store's removal hook
    hands each copy to the domain's recoverable-items area first (fake_servers/recall/recoverable.py)."""
    for loc in locations:
        store.expunge(user, loc.mailbox, [loc.uid], origin=ORIGIN)


def recall_from_mailbox(store: MailStore, user: str, original: str, sender: str, settings: RecallSettings
                        ) -> RecipientResult:
    """Cloud recall in one local mailbox: remove every copy of `original` written by `sender`, wherever it is."""
    plan = plan_mailbox_recall(store, user, original, sender, settings)
    remove_copies(store, user, plan.copies)
    return plan.result


def _cancel_delayed_send(services: DomainServices, queue_id: str) -> bool:
    """Cancel through the domain's delayed-send policy when it holds the message, so its Outbox copy goes too.

    The sibling policy is found through the services object (no import of recall_lab.fake_servers.policies: that package
    depends on this one); any policy named `delayed_send` with a `cancel(queue_id) -> bool` will do."""
    policy = services.policy("delayed_send")
    cancel = getattr(policy, "cancel", None)
    return cancel is not None and bool(cancel(queue_id))


@dataclass(frozen=True, slots=True)
class PendingReport:
    """A processed cloud recall's report, waiting for its time (`due`, by the domain's clock)."""

    op_id: str  # the write-ahead record that stays open until the report is filed
    recall_message_id: str | None
    sender: str
    due: float
    work: _CloudRecall


def recall_policy_for(services: DomainServices) -> RecallPolicy | None:
    """The domain's recall policy (None when it runs none)."""
    policy = services.policy("recall")
    return policy if isinstance(policy, RecallPolicy) else None


#: The most MIME structure a recall instruction, notice or report can have (they are built with a few parts).
RECALL_STRUCTURE_LIMITS = MimeLimits(max_parts=64, max_depth=8, max_header_fields=1000, max_header_bytes=256 << 10)


class RecallPolicy:
    """The `recall` policy of an organisation's domain (see the module docstring)."""

    name = "recall"

    def __init__(self, settings: Mapping[str, Any], services: DomainServices) -> None:
        self.settings = RecallSettings.from_settings(settings, services.domain)
        self.domain = services.domain
        # The domain's clock read as wall time: the age of an original (its INTERNALDATE, wall time) is measured
        # against it, so a lab on simulated time ages messages by advancing its clock.
        self._clock = services.clock
        self._wall_at_start = time.time()
        self._clock_at_start = services.clock()
        self._services = services
        self._reports: dict[str, PendingReport] = {}  # operation id -> the report waiting to be filed
        self._wake: asyncio.Event | None = None
        self._timer: asyncio.Task[None] | None = None

    def now(self) -> datetime:
        """The server's time: the wall clock when the policy was built, moved on by the domain's clock."""
        return datetime.fromtimestamp(self._wall_at_start + (self._clock() - self._clock_at_start), UTC)

    def too_old(self, store: MailStore, sender: str, original: str) -> str | None:
        """Why the original is past `recall_max_age_days` (cloud), or None. The reference is the INTERNALDATE of
        the sender's own copy (when her server accepted it), not the Date field her client wrote."""
        copy = sender_copy(store, sender, original)
        if copy is None:
            return None
        age = self.now() - copy.internaldate
        if age <= timedelta(days=self.settings.max_age_days):
            return None
        return (f"sent {age.total_seconds() / 86400:.1f} days ago; older than the {self.settings.max_age_days:g} "
                "days a message can be recalled")

    async def start(self, services: DomainServices) -> None:
        """Finish the cloud recalls a crash cut short (their write-ahead records are still in the store)."""
        for op_id, record in services.store.unfinished_operations().items():
            if record.get("kind") != OPERATION_KIND:
                continue
            try:
                await _CloudRecall.from_record(record).finish(services, op_id)
            except (KeyError, TypeError, ValueError, binascii.Error, RecallFormatError, StoreError) as exc:
                services.log("recall-resume-failed", operation=op_id, reason=str(exc))
                continue
            services.store.end_operation(op_id)
            services.log("recall-resumed", operation=op_id, original=record.get("original"),
                         sender=record.get("sender"))

    async def stop(self) -> None:
        """Stop the report timer, then file every report still waiting, at once: a stopping domain delivers what
        it owes the senders rather than leaving it to a restart (a memory store would lose it)."""
        await cancel_and_wait(self._timer)
        self._timer = None
        for op_id in list(self._reports):
            self._file_report(op_id, how="on-stop")

    # -- the report, filed after the recall ----------------------------------------------------------------

    def _schedule_report(self, op_id: str, work: _CloudRecall) -> None:
        """The recall is processed: its report is due `report_delay` seconds from now by the domain's clock."""
        delay = self.settings.report_delay
        self._reports[op_id] = PendingReport(op_id, work.report.recall_message_id, work.sender,
                                             self._clock() + delay, work)
        self._services.log("recall-report-scheduled", operation=op_id, seconds=delay,
                           recall=work.report.recall_message_id)
        if delay <= 0:
            # a tracked task: Lab.wait_idle() waits for it, and it runs after the recall's SMTP reply
            self._services.spawn(self._file_soon(op_id), name="recall report")
            return
        if self._timer is None:
            self._wake = asyncio.Event()
            self._timer = asyncio.get_running_loop().create_task(self._run_timer(),
                                                                 name=f"recall reports {self.domain}")
        assert self._wake is not None
        self._wake.set()

    async def _file_soon(self, op_id: str) -> None:
        self._file_report(op_id)

    def _file_report(self, op_id: str, how: str = "due") -> bool:
        pending = self._reports.pop(op_id, None)
        if pending is None:
            return False  # filed already (by the timer, a driver, or stop)
        pending.work.deliver_report(self._services)
        self._services.store.end_operation(op_id)
        self._services.log("recall-report-filed", operation=op_id, recall=pending.recall_message_id, how=how)
        return True

    def pending_reports(self) -> list[PendingReport]:
        """The reports processed recalls still owe their senders, soonest first."""
        return sorted(self._reports.values(), key=lambda p: p.due)

    async def file_report_now(self, key: str) -> bool:
        """File one waiting report at once, named by its recall's Message-ID (or its operation id); False when
        none waits under that key. Simulated-time trials file the report at its planned instant with it."""
        wanted = key.strip().strip("<>")
        for op_id, pending in list(self._reports.items()):
            rid = (pending.recall_message_id or "").strip().strip("<>")
            if op_id == key or (rid and rid == wanted):
                return self._file_report(op_id, how="now")
        return False

    async def file_due_reports(self) -> int:
        """File every report that is due by the domain's clock; returns how many."""
        now = self._clock()
        return sum(self._file_report(p.op_id) for p in self.pending_reports() if p.due <= now)

    async def _run_timer(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            pending = self.pending_reports()
            if not pending:
                await self._wake.wait()
                continue
            delay = pending[0].due - self._clock()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                continue
            try:
                await self.file_due_reports()
            except (StoreError, OSError) as exc:  # that report's record stays open: the next start files it
                self._services.log("recall-report-error", error=repr(exc))
            await asyncio.sleep(0)

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
        if check_message(delivery.raw, replace(RECALL_STRUCTURE_LIMITS, max_line_length=len(delivery.raw) + 1)):
            # A recall, notice or report is a few parts; anything larger is not one of ours, and parsing it
            # whole with `email` (in the event loop) is what a MIME bomb wearing an X-Recall-* header wants.
            services.log("recall-not-parsed", queue_id=delivery.queue_id, channel=delivery.channel,
                         reason="MIME structure larger than any recall message")
            return Verdict.CONTINUE
        msg = delivery.message
        if is_notice(msg):
            return self._notice(delivery, services)
        if is_recall_instruction(msg):
            return await self._recall(delivery, services)
        return Verdict.CONTINUE

    # -- recalls -----------------------------------------------------------------------------------------

    @staticmethod
    def _refuse(delivery: Delivery, services: DomainServices, reason: str, **fields: Any) -> Verdict:
        """Log the attempt; the recall goes on as the ordinary mail it then is."""
        services.log("recall-refused", reason=reason, queue_id=delivery.queue_id, channel=delivery.channel,
                     auth_user=delivery.auth_user, mail_from=delivery.mail_from,
                     recipients=list(delivery.recipients), **fields)
        return Verdict.CONTINUE

    async def _recall(self, delivery: Delivery, services: DomainServices) -> Verdict:
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
        replacement = None
        if instruction.replacement is not None:
            replacement, reason = _replacement_bytes(instruction.replacement, sender)
            if replacement is None:
                return self._refuse(delivery, services, reason, sender=instruction.sender, original=original)
        delivery.trusted_marks.add(MARK_RECALL)
        recipients = list(dict.fromkeys(r.strip().lower() for r in delivery.recipients))
        if self.settings.mode == "cloud":
            results, remaining = await self._cloud(instruction, replacement, sender, recipients, services,
                                                   delivery.queue_id)
        else:
            results, remaining = self._legacy(recipients, services)
            delivery.raw = mark_verified(delivery.raw, self.domain)
            report = self._report(instruction, recipients, results)
            services.deliver_local(sender, report_message(report, sender, self.domain), mail_from="")
        services.log("recall-honoured", queue_id=delivery.queue_id, mode=self.settings.mode, sender=sender,
                     original=instruction.original_message_id, action=instruction.action.value,
                     statuses={r: results[r].status.value for r in recipients})
        delivery.recipients[:] = remaining
        if remaining:
            return Verdict.CONTINUE  # final delivery files the Sent copy, as for any submission
        if delivery.save_sent_copy:
            # consumed: the pipeline stops here, so file the sender's copy ourselves. One rule for every recall:
            # a submitted recall is filed in Sent like any submission (as real servers do), whoever received it
            services.save_sent_copy(delivery)
        return Verdict.CONSUMED

    def _report(self, instruction: RecallInstruction, recipients: list[str],
                results: Mapping[str, RecipientResult]) -> RecallReport:
        return RecallReport(original_message_id=instruction.original_message_id,
                            original_subject=instruction.original_subject,
                            results=tuple(results[r] for r in recipients),
                            recall_message_id=instruction.message_id, mode=self.settings.mode)

    @staticmethod
    def _not_local(rcpt: str, services: DomainServices) -> RecipientResult | None:
        """The status of a recipient no mailbox of ours can act for (both modes), else None."""
        if not services.is_local(rcpt):
            return RecipientResult(rcpt, RecallStatus.EXTERNAL, "another provider: the recall goes out as ordinary mail")
        if services.accounts.canonical(rcpt) is None:
            return RecipientResult(rcpt, RecallStatus.NOT_FOUND, "no such mailbox")
        return None

    async def _cloud(self, instruction: RecallInstruction, replacement_raw: bytes | None, sender: str,
                     recipients: list[str], services: DomainServices, queue_id: str
                     ) -> tuple[dict[str, RecipientResult], list[str]]:
        """Decide everything, record the decision in the store, then act (see the module docstring).
        `replacement_raw`: the replacement as judged (`_replacement_bytes`), for a replace recall."""
        original = instruction.original_message_id
        results: dict[str, RecipientResult] = {}
        remaining: list[str] = []
        plans: dict[str, MailboxPlan] = {}
        local: list[str] = []  # every recipient with a mailbox here: the replacement goes to each
        external: list[str] = []
        held_ids, never_delivered = _held_originals(original, sender, services)
        too_old = self.too_old(services.store, sender, original)
        for rcpt in recipients:
            if rcpt in never_delivered:
                results[rcpt] = RecipientResult(rcpt, RecallStatus.RECALLED,
                                                "never delivered: it was still held (delayed send)")
                (external if not services.is_local(rcpt) else local).append(rcpt)
            elif (other := self._not_local(rcpt, services)) is not None:
                results[rcpt] = other
                if other.status is RecallStatus.EXTERNAL:
                    remaining.append(rcpt)
                    external.append(rcpt)
            elif too_old is not None:
                results[rcpt] = RecipientResult(rcpt, RecallStatus.FAILED_TOO_OLD, too_old)
                local.append(rcpt)
                if self.settings.notify_recipients is True:
                    remaining.append(rcpt)
            else:
                plans[rcpt] = plan_mailbox_recall(services.store, rcpt, original, sender, self.settings)
                results[rcpt] = plans[rcpt].result
                local.append(rcpt)
                if self.settings.notifies(plans[rcpt]):
                    remaining.append(rcpt)
        replacement = None
        if instruction.action is RecallAction.REPLACE and instruction.replacement is not None \
                and replacement_raw is not None:
            # delivered by this server itself, past the SMTP edge's filter: no server-only mark may ride in it
            raw = strip_verified(replacement_raw)
            mid = instruction.replacement.get("Message-ID")
            if mid is None:
                mid = make_msgid(domain=self.domain)
                raw = f"Message-ID: {mid}\r\n".encode("ascii") + raw
            replacement = (raw, str(mid), tuple(local))
        # the report is decided now and written after the last copy went (building it costs more than removing)
        work = _CloudRecall(domain=self.domain, original=original, sender=sender, held_queue_ids=held_ids,
                            removals={user: plan.held for user, plan in plans.items() if plan.copies},
                            replacement=replacement, report=self._report(instruction, recipients, results),
                            report_id=make_msgid(domain=self.domain),
                            replacement_external=tuple(external) if replacement is not None else ())
        op_id = f"recall-{queue_id}"
        services.store.begin_operation(op_id, work.record())
        work.drop_held(services)
        paused = False
        for user, plan in plans.items():
            if not plan.copies:
                continue
            locations: Sequence[MessageLocation] = plan.copies
            if paused:  # the mailbox lived on meanwhile (a client may have moved the copy): look again
                await asyncio.sleep(self.settings.step_delay)
                locations = [loc for loc, _record in _copies(services.store, user, original, sender)[0]]
            remove_copies(services.store, user, locations)
            paused = self.settings.step_delay > 0
        await work.relay_replacement(services, op_id)
        work.deliver_replacement(services)
        self._schedule_report(op_id, work)
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
            else:
                # a mailbox on legal hold too: the hold keeps what the client deletes (the store's removal hook
                # hands it to recoverable items), it does not stop the deletion the user sees
                detail = "delivered; waiting for a client"
                if rcpt in self.settings.legal_hold:
                    detail += " (legal hold: what the client deletes is kept in recoverable items)"
                results[rcpt] = RecipientResult(rcpt, RecallStatus.PENDING, detail)
                remaining.append(rcpt)
        return results, remaining

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


def _replacement_bytes(replacement: Message, sender: str) -> tuple[bytes | None, str]:
    """(the replacement as this server would deliver it, "") when it may go out as the sender's mail, else
    (None, why not): serialised only through `as_bytes_checked` (re-serialising can forge a field on this
    Python), then judged by the submission check of From (`trust.judge_replacement`)."""
    try:
        raw = as_bytes_checked(replacement, email_policy.SMTP)
    except (ValueError, TypeError, LookupError, UnicodeError) as exc:
        return None, f"the replacement cannot be written out: {exc}"
    decision = judge_replacement(raw, sender)
    return (raw, "") if decision.honoured else (None, decision.reason)


def _held_originals(original: str, sender: str, services: DomainServices) -> tuple[list[str], set[str]]:
    """The held deliveries (delayed send) of the original by its sender: their queue ids and recipients."""
    try:
        held = services.held()
    except Exception:  # a domain server without a spool: nothing can be held
        return [], set()
    ids: list[str] = []
    recipients: set[str] = set()
    for delivery in held:
        try:
            same = delivery.message_id is not None and normalise_message_id(delivery.message_id) == original
        except RecallFormatError:
            same = False
        if same and delivery.mail_from.strip().lower() == sender:
            ids.append(delivery.queue_id)
            recipients.update(r.strip().lower() for r in delivery.recipients)
    return ids, recipients


def report_message(report: RecallReport, sender: str, domain: str, message_id: str | None = None) -> bytes:
    """The report as delivered to the sender, vouched for by her domain's server."""
    msg = build_report(report, to=sender, from_addr=f"postmaster@{domain}", message_id=message_id)
    return mark_verified(msg.as_bytes(policy=email_policy.SMTP), domain)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class _CloudRecall:
    """A cloud recall's decided work, as its write-ahead record keeps it; every step may run twice."""

    domain: str
    original: str
    sender: str
    held_queue_ids: list[str]
    removals: dict[str, bool]  # user -> under legal hold; users whose copies go
    replacement: tuple[bytes, str, tuple[str, ...]] | None  # (raw, Message-ID, local users)
    report: RecallReport  # decided before the first step
    report_id: str  # the Message-ID the report is delivered with: how a second run knows it is there
    replacement_external: tuple[str, ...] = ()  # other providers' recipients the replacement is relayed to
    replacement_relayed: bool = False  # set (and the record rewritten) once it was handed to the relay

    def record(self) -> dict[str, Any]:
        replacement = None
        if self.replacement is not None:
            raw, mid, users = self.replacement
            replacement = {"raw": _b64(raw), "message_id": mid, "users": list(users),
                           "external": list(self.replacement_external), "relayed": self.replacement_relayed}
        return {"kind": OPERATION_KIND, "version": 1, "domain": self.domain, "original": self.original,
                "sender": self.sender, "held_queue_ids": list(self.held_queue_ids), "removals": dict(self.removals),
                "replacement": replacement, "report": self.report.to_json(), "report_id": self.report_id}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> _CloudRecall:
        rep = record.get("replacement")
        replacement = None
        external: tuple[str, ...] = ()
        relayed = False
        if rep is not None:
            replacement = (base64.b64decode(rep["raw"], validate=True), str(rep["message_id"]),
                           tuple(str(u) for u in rep["users"]))
            external = tuple(str(u) for u in rep.get("external", ()))
            relayed = bool(rep.get("relayed", False))
        return cls(domain=str(record["domain"]), original=str(record["original"]), sender=str(record["sender"]),
                   held_queue_ids=[str(q) for q in record["held_queue_ids"]],
                   removals={str(u): bool(h) for u, h in dict(record["removals"]).items()},
                   replacement=replacement, report=RecallReport.from_json(record["report"]),
                   report_id=str(record["report_id"]), replacement_external=external, replacement_relayed=relayed)

    def drop_held(self, services: DomainServices) -> None:
        """Drop the original where delayed send still holds it: its recipients never see it."""
        still = {d.queue_id for d in services.held()} if self.held_queue_ids else set()
        for queue_id in self.held_queue_ids:
            if queue_id in still:
                if not _cancel_delayed_send(services, queue_id):
                    services.discard(queue_id)
                services.log("recall-discarded-held", queue_id=queue_id, original=self.original)

    def deliver(self, services: DomainServices) -> None:
        """The replacement to each local recipient, then the report to the sender: each where not yet there."""
        self.deliver_replacement(services)
        self.deliver_report(services)

    def deliver_replacement(self, services: DomainServices) -> None:
        if self.replacement is not None:
            raw, mid, users = self.replacement
            for user in users:
                if not services.store.find_by_message_id(user, mid):
                    services.deliver_local(user, raw, mail_from=self.sender)

    def deliver_report(self, services: DomainServices) -> None:
        if not services.store.find_by_message_id(self.sender, self.report_id):
            raw = report_message(self.report, self.sender, self.domain, self.report_id)
            services.deliver_local(self.sender, raw, mail_from="")

    async def relay_replacement(self, services: DomainServices, op_id: str) -> None:
        """The replacement to other providers' recipients, as ordinary mail through the domain's pipeline and
        relay queue; once handed over, the record says so (a second run does not send it twice)."""
        if self.replacement is None or not self.replacement_external or self.replacement_relayed:
            return
        raw, _mid, _users = self.replacement
        await services.submit(self.sender, list(self.replacement_external), raw, channel="internal")
        services.store.begin_operation(op_id, replace(self, replacement_relayed=True).record())

    async def finish(self, services: DomainServices, op_id: str = "") -> None:
        """After a restart: the whole recall again, as far as it is not done yet."""
        self.drop_held(services)
        for user in self.removals:
            copies, _foreign = _copies(services.store, user, self.original, self.sender)
            remove_copies(services.store, user, [loc for loc, _record in copies])
        if op_id:
            await self.relay_replacement(services, op_id)
        self.deliver(services)
