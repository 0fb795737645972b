"""What a client shows of a message without opening it: subject, sender and the first line of text.

Why shared: the desktop notification, the web list's preview line and the simulated user's "preview seen" must
agree on what the recipient could read before a recall arrived.
"""

from __future__ import annotations

from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

#: How many characters of the first line a preview shows (a notification toast is about this wide).
PREVIEW_CHARS = 120


@dataclass(frozen=True)
class Preview:
    subject: str
    first_line: str
    sender: str


def first_line(text: str, limit: int = PREVIEW_CHARS) -> str:
    """The first non-blank line of `text`, whitespace collapsed, cut to `limit` characters."""
    for line in text.splitlines():
        line = " ".join(line.split())
        if line:
            return line[:limit]
    return ""


def body_text(msg: EmailMessage) -> str:
    """The plain-text body (or an HTML body with tags left in), "" when there is none."""
    try:
        part = msg.get_body(preferencelist=("plain", "html"))
        if part is None:
            return ""
        content = part.get_content()
    except (KeyError, LookupError, ValueError, AttributeError):
        return ""
    return content if isinstance(content, str) else ""


def parse(raw: bytes) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(raw)  # type: ignore[return-value]


def preview_of(raw: bytes) -> Preview:
    msg = parse(raw)
    subject = " ".join(str(msg.get("Subject", "")).split())
    try:
        sender = " ".join(str(msg.get("From", "")).split())
    except (IndexError, ValueError, TypeError, AttributeError):  # `From: <` crashes email's header parser
        sender = ""
    return Preview(subject=subject, first_line=first_line(body_text(msg)), sender=sender)
