"""Reading stored messages for people and programs: a message's JSON (summary and detail) and a search language.

Why one module free of the web framework: the HTTP API serves these shapes, and a mail page may show the same
fields; neither should parse MIME its own way. Everything here reads bytes the store returned and never raises
on what a peer put in a message: a header that does not parse falls back to its raw text, a body part that does
not decode is read with replacement characters, a part that breaks the parser is skipped.

The search language (`parse_query`), all criteria combined with AND, every comparison case-insensitive:
- free words and "quoted phrases": each must occur in the subject, the From/To/Cc names and addresses, or the
  text of the body;
- `from:x`, `to:x` (To and Cc), `subject:x`: x occurs in that header (`from:"Alice Smith"` quotes a value);
- `is:seen`, `is:unread`: the \\Seen flag; `has:attachment`: at least one attachment.
Any other `word:` prefix, an empty value or an unbalanced quote is a `QueryError` naming the problem (quote a
word with a colon to search for it literally: "12:30").

Bounds: bodies of messages larger than `MAX_TEXT_BYTES` are not parsed for search or snippets (their headers
are); a query is at most `MAX_QUERY_CHARS` long; `search` yields to the event loop between small batches, so a
large mailbox never holds other clients up.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email import policy as email_policy
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from email.utils import getaddresses
from html.parser import HTMLParser
from typing import Any, TypeVar

from recall_lab.fake_servers.store.base import MailStore, MessageRecord, StoreError

#: Messages larger than this (octets, the store's size) are searched and summarised by their headers only.
MAX_TEXT_BYTES = 10 * 1024 * 1024
#: Header bytes read from a message too large to parse whole.
HEADER_BYTES = 256 * 1024
#: Characters of body text in a summary's snippet.
SNIPPET_CHARS = 200
#: The longest query accepted.
MAX_QUERY_CHARS = 1000
#: MIME parts looked at per message, and how deep (a message cannot make a walk run away).
MAX_PARTS = 1000
MAX_DEPTH = 32
#: Work between two yields to the event loop while searching: messages, and octets parsed.
BATCH_MESSAGES = 20
BATCH_BYTES = 1024 * 1024

PARSER = BytesParser(policy=email_policy.default)
HEADER_PARSER = BytesHeaderParser(policy=email_policy.default)

T = TypeVar("T")


def _safe(fn: Callable[[], T], default: T) -> T:
    try:
        return fn()
    except Exception:  # noqa: BLE001 - whatever a malformed message makes the email package raise
        return default


# --- the query language ------------------------------------------------------------------------------------


class QueryError(ValueError):
    """A search query that cannot be read; the text says what is wrong (the API answers 400 with it)."""


PREFIXES = ("from", "to", "subject", "is", "has")
_PREFIX = re.compile(r"([A-Za-z][A-Za-z0-9_-]*):(.*)", re.DOTALL)


@dataclass(frozen=True)
class Query:
    """A parsed search; an empty query matches every message."""

    words: tuple[str, ...] = ()  # free words and phrases, casefolded
    senders: tuple[str, ...] = ()
    recipients: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    seen: bool | None = None
    has_attachment: bool = False
    text: str = ""

    @property
    def needs_body(self) -> bool:
        """Whether matching reads the body (else the headers and flags decide)."""
        return bool(self.words) or self.has_attachment

    def matches_flags(self, flags: Iterable[str]) -> bool:
        return self.seen is None or (("\\Seen" in set(flags)) == self.seen)

    def matches(self, msg: ParsedMessage, flags: Iterable[str] = ()) -> bool:
        if not self.matches_flags(flags):
            return False
        if self.has_attachment and not msg.attachments:
            return False
        subject = msg.subject.casefold()
        if any(s not in subject for s in self.subjects):
            return False
        if self.senders:
            sender = _addresses_text(msg.from_).casefold()
            if any(s not in sender for s in self.senders):
                return False
        if self.recipients:
            rcpts = _addresses_text([*msg.to, *msg.cc]).casefold()
            if any(r not in rcpts for r in self.recipients):
                return False
        if self.words:
            hay = msg.search_text()
            if any(w not in hay for w in self.words):
                return False
        return True


def _tokens(text: str) -> list[tuple[str, bool, bool]]:
    """(token with quotes removed, whether it began with a quote, whether any part was quoted)."""
    out: list[tuple[str, bool, bool]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        starts_quoted = text[i] == '"'
        quoted = False
        chars: list[str] = []
        while i < n and not text[i].isspace():
            if text[i] == '"':
                end = text.find('"', i + 1)
                if end < 0:
                    raise QueryError(f"unbalanced quote at character {i + 1} of the query")
                chars.append(text[i + 1:end])
                quoted = True
                i = end + 1
            else:
                chars.append(text[i])
                i += 1
        out.append(("".join(chars), starts_quoted, quoted))
    return out


def parse_query(text: str | None) -> Query:
    """The `Query` a search string says (see the module docstring); QueryError when it cannot be read."""
    text = text or ""
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"the query is longer than {MAX_QUERY_CHARS} characters")
    words: list[str] = []
    senders: list[str] = []
    recipients: list[str] = []
    subjects: list[str] = []
    seen: bool | None = None
    has_attachment = False
    for token, starts_quoted, _quoted in _tokens(text):
        m = None if starts_quoted else _PREFIX.fullmatch(token)
        if m is None:
            if token.strip():
                words.append(token.casefold())
            continue
        prefix, value = m.group(1).lower(), m.group(2)
        if prefix not in PREFIXES:
            raise QueryError(f"unknown search prefix {m.group(1) + ':'!r}: use from:, to:, subject:, is:seen, "
                             'is:unread or has:attachment (quote a word with a colon: "12:30")')
        if not value.strip():
            raise QueryError(f"{prefix}: needs a value")
        folded = value.casefold()
        if prefix == "from":
            senders.append(folded)
        elif prefix == "to":
            recipients.append(folded)
        elif prefix == "subject":
            subjects.append(folded)
        elif prefix == "is":
            if folded not in ("seen", "unread"):
                raise QueryError(f"is:{value} is not known: use is:seen or is:unread")
            seen = folded == "seen"
        else:
            if folded != "attachment":
                raise QueryError(f"has:{value} is not known: use has:attachment")
            has_attachment = True
    return Query(words=tuple(words), senders=tuple(senders), recipients=tuple(recipients),
                 subjects=tuple(subjects), seen=seen, has_attachment=has_attachment, text=text)


# --- HTML to text ------------------------------------------------------------------------------------------

_BLOCK = frozenset({"p", "div", "br", "li", "tr", "table", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote",
                    "pre", "hr", "ul", "ol", "dl", "dt", "dd", "section", "article", "header", "footer"})
_HIDDEN = frozenset({"script", "style", "head", "title", "template"})


class _TextOf(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self.hidden += 1
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Readable text of an HTML body: tags dropped, script and style left out, blocks on lines of their own."""
    parser = _TextOf()
    try:
        parser.feed(html)
        parser.close()
        text = "".join(parser.parts)
    except Exception:  # noqa: BLE001 - markup the parser rejects: drop anything tag-shaped instead
        text = re.sub(r"<[^>]*>", " ", html)
    lines = (" ".join(line.split()) for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# --- one message -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Address:
    name: str
    address: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "address": self.address}


@dataclass(frozen=True)
class Attachment:
    filename: str | None
    content_type: str
    size: int

    def as_dict(self) -> dict[str, Any]:
        return {"filename": self.filename, "content_type": self.content_type, "size": self.size}


@dataclass
class ParsedMessage:
    """What the API shows of one message; built by `read_message`, never raising on a malformed one."""

    headers: list[tuple[str, str]]
    subject: str
    from_: list[Address]
    to: list[Address]
    cc: list[Address]
    date: str | None  # the Date header as ISO 8601, None when absent or unreadable
    text: str
    html: str | None
    attachments: list[Attachment]
    body_read: bool  # False: a message too large to parse whole (headers only)
    _search: str | None = field(default=None, repr=False)

    def snippet(self, chars: int = SNIPPET_CHARS) -> str:
        flat = " ".join(self.text.split())
        return flat if len(flat) <= chars else flat[:chars].rstrip() + "…"

    def search_text(self) -> str:
        """Subject, names and addresses, and body text, casefolded: what free words are looked for in."""
        if self._search is None:
            self._search = "\n".join((self.subject, _addresses_text([*self.from_, *self.to, *self.cc]),
                                      self.text)).casefold()
        return self._search


def _addresses_text(addresses: Sequence[Address]) -> str:
    return ", ".join(f"{a.name} <{a.address}>" if a.name else a.address for a in addresses)


def _header_value(msg: Message, name: str, value: Any) -> str:
    """A header's decoded text, or its raw text when the policy cannot parse it."""
    parsed = _safe(lambda: str(msg.policy.header_fetch_parse(name, value)), None)
    if parsed is None:
        parsed = _safe(lambda: str(value), "")
    return " ".join(parsed.split()) if name.lower() == "subject" else parsed


def _raw_items(msg: Message) -> list[tuple[str, Any]]:
    return _safe(lambda: list(msg.raw_items()), [])


def _first(items: list[tuple[str, Any]], name: str) -> Any | None:
    for key, value in items:
        if key.lower() == name:
            return value
    return None


def _addresses(msg: Message, items: list[tuple[str, Any]], name: str) -> list[Address]:
    out: list[Address] = []
    for key, value in items:
        if key.lower() != name:
            continue
        header = _safe(lambda k=key, v=value: msg.policy.header_fetch_parse(k, v), None)
        addresses = _safe(lambda h=header: list(h.addresses), None) if header is not None else None
        if addresses is not None:
            out.extend(Address(str(a.display_name or ""), str(a.addr_spec or "")) for a in addresses)
        else:
            raw = _safe(lambda v=value: str(v), "")
            out.extend(Address(n, a) for n, a in _safe(lambda r=raw: getaddresses([r]), []) if a or n)
    return out


def _date(msg: Message, items: list[tuple[str, Any]]) -> str | None:
    value = _first(items, "date")
    if value is None:
        return None
    header = _safe(lambda: msg.policy.header_fetch_parse("Date", value), None)
    when = getattr(header, "datetime", None) if header is not None else None
    return when.isoformat() if isinstance(when, datetime) else None


def _part_text(part: Message) -> str:
    content = _safe(lambda: part.get_content(), None) if isinstance(part, EmailMessage) else None
    if isinstance(content, str):
        return content.replace("\r\n", "\n")
    payload = _safe(lambda: part.get_payload(decode=True), None)
    if isinstance(payload, bytes):
        charset = _safe(lambda: part.get_content_charset(), None) or "utf-8"
        try:
            text = payload.decode(charset, errors="replace")
        except LookupError:
            text = payload.decode("utf-8", errors="replace")
        return text.replace("\r\n", "\n")
    return ""


def _leaves(msg: Message) -> list[Message]:
    """Leaf parts, depth-first, bounded; an attached message (message/*) counts as one leaf."""
    out: list[Message] = []
    stack: list[tuple[Message, int]] = [(msg, 0)]
    while stack and len(out) < MAX_PARTS:
        part, depth = stack.pop()
        if _safe(lambda p=part: p.get_content_maintype(), "") == "multipart" and depth < MAX_DEPTH:
            children = _safe(lambda p=part: p.get_payload(), [])
            if isinstance(children, list):
                stack.extend((c, depth + 1) for c in reversed(children) if isinstance(c, Message))
            continue
        out.append(part)
    return out


def _size(part: Message) -> int:
    if _safe(lambda: part.get_content_maintype(), "") == "message":
        inner = _safe(lambda: part.get_payload(0), None)
        return len(_safe(lambda: inner.as_bytes(), b"")) if isinstance(inner, Message) else 0
    payload = _safe(lambda: part.get_payload(decode=True), None)
    return len(payload) if isinstance(payload, bytes) else 0


def _body_part(msg: Message, kind: str) -> Message | None:
    if not isinstance(msg, EmailMessage):
        return None
    return _safe(lambda: msg.get_body(preferencelist=(kind,)), None)


def read_message(raw: bytes, *, size: int | None = None, headers_only: bool = False) -> ParsedMessage:
    """Parse stored bytes; headers only when asked or when the message is over MAX_TEXT_BYTES."""
    too_big = (size if size is not None else len(raw)) > MAX_TEXT_BYTES
    if headers_only or too_big:
        msg = _safe(lambda: HEADER_PARSER.parsebytes(raw[:HEADER_BYTES]), None)
    else:
        msg = _safe(lambda: PARSER.parsebytes(raw), None)
    if msg is None:
        return ParsedMessage([], "", [], [], [], None, "", None, [], False)
    items = _raw_items(msg)
    headers = [(k, _header_value(msg, k, v)) for k, v in items]
    subject_raw = _first(items, "subject")
    subject = _header_value(msg, "Subject", subject_raw) if subject_raw is not None else ""
    body_read = not (headers_only or too_big)
    text, html, attachments = "", None, []
    if body_read:
        plain_part = _body_part(msg, "plain")
        html_part = _body_part(msg, "html")
        if html_part is not None:
            html = _part_text(html_part)
        if plain_part is not None:
            text = _part_text(plain_part)
        elif html is not None:
            text = html_to_text(html)
        bodies = {id(p) for p in (plain_part, html_part) if p is not None}
        for part in _leaves(msg):
            if id(part) in bodies:
                continue
            disposition = _safe(lambda p=part: p.get_content_disposition(), None)
            filename = _safe(lambda p=part: p.get_filename(), None)
            ctype = _safe(lambda p=part: p.get_content_type(), "application/octet-stream")
            if disposition == "attachment" or filename or not ctype.startswith("text/"):
                if part is msg and ctype.startswith("text/"):
                    continue
                attachments.append(Attachment(str(filename) if filename else None, ctype, _size(part)))
    return ParsedMessage(headers=headers, subject=subject, from_=_addresses(msg, items, "from"),
                         to=_addresses(msg, items, "to"), cc=_addresses(msg, items, "cc"), date=_date(msg, items),
                         text=text, html=html, attachments=attachments, body_read=body_read)


# --- the JSON shapes ---------------------------------------------------------------------------------------


def summary(record: MessageRecord, folder: str, msg: ParsedMessage) -> dict[str, Any]:
    """A message in a list: the keys documented in docs/web-api.md (MessageSummary)."""
    flags = sorted(record.flags)
    return {"message_id": record.message_id, "uid": record.uid, "folder": folder, "subject": msg.subject,
            "from": msg.from_[0].as_dict() if msg.from_ else None, "to": [a.as_dict() for a in msg.to],
            "cc": [a.as_dict() for a in msg.cc], "date": msg.date, "received": record.internaldate.isoformat(),
            "size": record.size, "flags": flags, "seen": "\\Seen" in record.flags, "snippet": msg.snippet()}


def detail(record: MessageRecord, folder: str, msg: ParsedMessage) -> dict[str, Any]:
    """One message in full (Message in docs/web-api.md): the summary's keys plus headers, text, html,
    attachments."""
    out = summary(record, folder, msg)
    out.update({"headers": [[k, v] for k, v in msg.headers], "text": msg.text, "html": msg.html,
                "attachments": [a.as_dict() for a in msg.attachments], "body_parsed": msg.body_read})
    return out


# --- searching a mailbox -----------------------------------------------------------------------------------


@dataclass
class SearchResult:
    messages: list[dict[str, Any]]
    more: bool  # matches exist past this page


def newest_first(store: MailStore, user: str, folders: Sequence[str]) -> list[tuple[str, MessageRecord]]:
    """Every (folder, record) of these folders, newest arrival first (then the higher UID)."""
    rows: list[tuple[str, MessageRecord]] = []
    for folder in folders:
        try:
            rows.extend((folder, r) for r in store.messages(user, folder))
        except StoreError:
            continue  # the folder went away meanwhile
    rows.sort(key=lambda row: (row[1].internaldate, row[1].uid), reverse=True)
    return rows


class _Pace:
    """Counts parsing work and yields to the event loop after each batch."""

    def __init__(self) -> None:
        self.messages = 0
        self.octets = 0

    async def did(self, size: int) -> None:
        self.messages += 1
        self.octets += min(size, MAX_TEXT_BYTES)
        if self.messages >= BATCH_MESSAGES or self.octets >= BATCH_BYTES:
            self.messages = self.octets = 0
            await asyncio.sleep(0)


async def search(store: MailStore, user: str, folders: Sequence[str], query: Query, *, offset: int = 0,
                 limit: int = 50) -> SearchResult:
    """Summaries of the matching messages, newest first, `offset` skipped, at most `limit`; yields to the loop
    between small batches. A message expunged while the search runs is left out."""
    found: list[dict[str, Any]] = []
    matched = 0
    pace = _Pace()
    reads_headers = bool(query.subjects or query.senders or query.recipients)
    for folder, record in newest_first(store, user, folders):
        if not query.matches_flags(record.flags):
            continue
        past_page = matched >= offset + limit
        if past_page and not (reads_headers or query.needs_body):
            return SearchResult(found, True)
        in_page = offset <= matched < offset + limit
        msg: ParsedMessage | None = None
        if reads_headers or query.needs_body or in_page:
            try:
                raw = store.fetch_raw(user, folder, record.uid)
            except StoreError:
                continue  # expunged meanwhile
            msg = read_message(raw, size=record.size, headers_only=not (query.needs_body or in_page))
            await pace.did(len(raw))
            if not query.matches(msg, record.flags):
                continue
        if past_page:
            return SearchResult(found, True)
        if in_page and msg is not None:
            found.append(summary(record, folder, msg))
        matched += 1
    return SearchResult(found, False)


async def first_match(store: MailStore, user: str, folders: Sequence[str], query: Query,
                      known: dict[tuple[str, int, int], bool]) -> dict[str, Any] | None:
    """The newest message matching `query`, or None. `known` remembers, per (folder, UIDVALIDITY, UID), which
    messages' content did not match, so a wait re-reads only messages it has not seen (flags are checked
    afresh each time)."""
    validities: dict[str, int] = {}
    for folder in folders:
        try:
            validities[folder] = store.mailbox(user, folder).uidvalidity
        except StoreError:
            continue
    pace = _Pace()
    for folder, record in newest_first(store, user, list(validities)):
        key = (folder, validities[folder], record.uid)
        if not query.matches_flags(record.flags) or known.get(key) is False:
            continue
        try:
            raw = store.fetch_raw(user, folder, record.uid)
        except StoreError:
            continue
        msg = read_message(raw, size=record.size)
        await pace.did(len(raw))
        if query.matches(msg, record.flags):
            return summary(record, folder, msg)
        known[key] = False
    return None
