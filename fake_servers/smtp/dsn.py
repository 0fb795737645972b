"""Delivery status notifications (RFC 3464): the bounce a sender gets when the relay cannot deliver.

Why its own module: the format is exact (multipart/report; report-type=delivery-status, a human part, a
message/delivery-status part with per-message and per-recipient fields, then the original's headers) and tests
parse it back. Built as bytes with the email package, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from email import policy as email_policy
from email.message import EmailMessage, Message, MIMEPart
from email.utils import format_datetime, make_msgid

from recall_lab.fake_servers.smtp.headers import split_message
from recall_lab.fake_servers.smtp.relay import Failure


def build_dsn(*, reporting_domain: str, original_from: str, original_raw: bytes, failures: Sequence[Failure],
              queue_id: str, arrival: datetime | None = None, gave_up: bool = False) -> bytes:
    """A failure DSN to `original_from` about `failures` (Action: failed for each)."""
    now = datetime.now(UTC)
    msg = EmailMessage(policy=email_policy.SMTP)
    msg["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_domain}>"
    msg["To"] = original_from
    msg["Subject"] = "Undelivered Mail Returned to Sender"
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid("dsn", domain=reporting_domain)
    msg["Auto-Submitted"] = "auto-replied"
    msg.set_type("multipart/report")
    msg.set_param("report-type", "delivery-status")

    why = "after retrying for too long" if gave_up else "permanently"
    lines = [f"This is the mail system at {reporting_domain}.", "",
             f"Your message (queue id {queue_id}) could not be delivered {why} to:", ""]
    for f in failures:
        lines.append(f"  <{f.recipient}>: {f.diagnostic.removeprefix('smtp; ')}")
    human = MIMEPart(policy=email_policy.SMTP)
    human.set_content("\n".join(lines) + "\n")

    per_message = _fields_block([("Reporting-MTA", f"dns; {reporting_domain}"), ("X-Queue-ID", queue_id)]
                                + ([("Arrival-Date", format_datetime(arrival))] if arrival is not None else []))
    blocks = [per_message]
    for f in failures:
        fields = [("Final-Recipient", f"rfc822; {f.recipient}"), ("Action", "failed"), ("Status", f.status)]
        if f.remote_mta:
            fields.append(("Remote-MTA", f"dns; {f.remote_mta}"))
        fields.append(("Diagnostic-Code", f.diagnostic))
        fields.append(("Last-Attempt-Date", format_datetime(now)))
        blocks.append(_fields_block(fields))
    status = MIMEPart(policy=email_policy.SMTP)
    status["Content-Type"] = "message/delivery-status"
    status.set_payload(blocks)

    headers, _ = split_message(original_raw)
    original = MIMEPart(policy=email_policy.SMTP)
    original["Content-Type"] = "text/rfc822-headers"
    original["Content-Transfer-Encoding"] = "8bit" if any(b > 127 for b in headers) else "7bit"
    original.set_payload(headers.decode("utf-8", "replace"))

    msg.attach(human)
    msg.attach(status)
    msg.attach(original)
    return msg.as_bytes()


def _fields_block(fields: Sequence[tuple[str, str]]) -> Message:
    """One block of delivery-status fields (the email package writes each block as a header section)."""
    block = Message(policy=email_policy.compat32)
    for name, value in fields:
        block[name] = value
    return block
