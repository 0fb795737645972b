"""What the webmail shows of a message: its headers, its body (sanitised or escaped) and its attachments' names.

Why here and so strict: a message's bytes come from whoever sent it. Everything a template prints is
autoescaped; the one thing shown as HTML, an HTML body, first goes through nh3 (a whitelist sanitiser): no
script or style, no event handlers, images only from `data:` or `cid:` URLs (a remote image is a read receipt
the recipient never agreed to), links only to http(s)/mailto with rel="noopener noreferrer". The page's
Content-Security-Policy forbids remote loads anyway; the sanitiser is the first line, the CSP the second.
What is rendered is bounded: at most `MAX_BODY_CHARS` of body text, and the page says when it was cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import EmailMessage, Message

import nh3
from markupsafe import Markup

from recall_lab.harness.clients.preview import parse

#: Characters of a body rendered on the page; the rest is left out and the page says so.
MAX_BODY_CHARS = 200_000
#: Attachments listed by name on one message page.
MAX_ATTACHMENTS = 100

_LINK_SCHEMES = ("http:", "https:", "mailto:")
_IMAGE_SCHEMES = ("data:image/", "cid:")


@dataclass(frozen=True)
class Attachment:
    name: str
    content_type: str
    size: int


@dataclass
class RenderedMessage:
    """One message as the page shows it; `html` is sanitised markup, `text` plain text (escaped when shown)."""

    subject: str
    sender: str
    to: str
    cc: str
    date: str
    message_id: str
    text: str | None = None
    html: Markup | None = None
    attachments: list[Attachment] = field(default_factory=list)
    more_attachments: int = 0
    body_cut: bool = False  # the body was longer than MAX_BODY_CHARS
    fetch_cut: bool = False  # the message was larger than the webmail fetches


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    low = value.strip().lower()
    if attribute == "src":
        return value if low.startswith(_IMAGE_SCHEMES) else None
    if attribute == "href":
        return value if low.startswith(_LINK_SCHEMES) else None
    return value


def sanitise_html(html: str) -> str:
    """An HTML body made safe to show inside our page (see the module docstring)."""
    return nh3.clean(html, clean_content_tags={"script", "style"}, attribute_filter=_filter_attribute,
                     url_schemes={"http", "https", "mailto", "data", "cid"}, link_rel="noopener noreferrer",
                     url_relative="deny")


def header(msg: Message, name: str) -> str:
    """A header field's value, decoded and on one line; "" when absent or unreadable."""
    try:
        value = msg.get(name)
    except (IndexError, ValueError, TypeError, AttributeError, LookupError):  # malformed headers break email's parser
        return ""
    return " ".join(str(value).split()) if value is not None else ""


def _content(part: Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
    except (KeyError, LookupError, ValueError, AttributeError, AssertionError):
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return content if isinstance(content, str) else ""


def render_message(raw: bytes, *, fetch_cut: bool = False) -> RenderedMessage:
    msg: EmailMessage = parse(raw)
    shown = RenderedMessage(subject=header(msg, "Subject"), sender=header(msg, "From"), to=header(msg, "To"),
                            cc=header(msg, "Cc"), date=header(msg, "Date"), message_id=header(msg, "Message-ID"),
                            fetch_cut=fetch_cut)
    try:
        body = msg.get_body(preferencelist=("html", "plain"))
    except (KeyError, LookupError, ValueError, AttributeError):
        body = None
    if body is not None:
        content = _content(body)
        if len(content) > MAX_BODY_CHARS:
            content, shown.body_cut = content[:MAX_BODY_CHARS], True
        if body.get_content_type() == "text/html":
            shown.html = Markup(sanitise_html(content))  # noqa: S704 - sanitised just now
        else:
            shown.text = content
    try:
        attachments = list(msg.iter_attachments())
    except (KeyError, LookupError, ValueError, AttributeError, TypeError):
        attachments = []
    for part in attachments[:MAX_ATTACHMENTS]:
        try:
            name = part.get_filename() or "(unnamed)"
        except (ValueError, LookupError, TypeError):
            name = "(unnamed)"
        payload = part.get_payload(decode=True)
        shown.attachments.append(Attachment(" ".join(name.split()), part.get_content_type(),
                                            len(payload) if isinstance(payload, bytes) else 0))
    shown.more_attachments = max(0, len(attachments) - MAX_ATTACHMENTS)
    return shown
