"""CATENATE (RFC 4469): the IMAP URLs (RFC 5092) an APPEND may build a message from.

Why only the user's own mailboxes: a CATENATE URL is resolved with the rights of the session that sends it,
and this server has no URLAUTH, so a URL may name a message only in a mailbox of the logged-in user, on this
server: a relative URL ("/INBOX;UIDVALIDITY=5/;UID=3/;SECTION=HEADER"), or an absolute one whose user is the
logged-in user. Anything else (another user, another host, URLAUTH or search parts, a malformed URL, a mailbox,
UIDVALIDITY or UID that does not match) fails the whole APPEND with NO [BADURL <url>], and nothing is appended.

The parsing is a pure function (hypothesis tests it); resolving goes through the store's public methods and
the server's view cache (so a section is cut exactly as FETCH BODY[section] cuts it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from .errors import CommandFailed, ParseError
from .fetch_items import Section, parse_section
from .lexer import NUMBER64_MAX
from .utf7 import Utf7Error, decode_lenient

#: The longest URL accepted (RFC 5092 URLs naming a message are short; anything longer is refused).
MAX_URL = 4096

_ABSOLUTE = re.compile(r"imap://(?:(?P<user>[^@/]*)@)?(?P<host>[^/]*)(?P<path>/.*)\Z", re.IGNORECASE | re.DOTALL)
_PATH = re.compile(
    r"/(?P<mailbox>[^;?#]+?)(?:;UIDVALIDITY=(?P<uidvalidity>[0-9]{1,10}))?"
    r"/;UID=(?P<uid>[0-9]{1,10})"
    r"(?:/;SECTION=(?P<section>[^/;?#]*))?"
    r"(?:/;PARTIAL=(?P<offset>[0-9]{1,19})(?:\.(?P<length>[0-9]{1,19}))?)?\Z",  # number64 (RFC 9051)
    re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ImapUrl:
    """A message (or a section of one) that an IMAP URL names."""

    mailbox: str
    uid: int
    uidvalidity: int | None = None
    section: Section | None = None
    offset: int | None = None
    length: int | None = None
    user: str | None = None  # from an absolute URL: whose mailbox (checked against the session's user)
    host: str | None = None


def bad_url(url: str, why: str) -> CommandFailed:
    """NO [BADURL url] why: the URL as the client sent it, cut short and without what would end the code."""
    shown = "".join(c for c in url[:200] if c.isprintable() and c != "]")
    return CommandFailed(why, f"BADURL {shown}")


def parse_url(url: str) -> ImapUrl:
    """An IMAP URL naming one message (RFC 5092 imessagepart, relative or absolute); CommandFailed
    (NO [BADURL]) when it is not one this server resolves."""
    if len(url) > MAX_URL:
        raise bad_url(url, "URL too long")
    user = host = None
    path = url
    m = _ABSOLUTE.match(url)
    if m is not None:
        userinfo = m.group("user")
        if userinfo is not None:
            user = _unescape(userinfo.split(";", 1)[0], url)
        host = m.group("host").lower()
        path = m.group("path")
    p = _PATH.match(path)
    if p is None:
        raise bad_url(url, "Not a URL of a message on this server")
    mailbox = _unescape(p.group("mailbox"), url)
    if "&" in mailbox:  # RFC 2192 URLs carried modified UTF-7; RFC 5092 ones carry UTF-8 (no "&" escape)
        try:
            mailbox = decode_lenient(mailbox)
        except Utf7Error:
            pass
    if mailbox.upper() == "INBOX":
        mailbox = "INBOX"
    uid = int(p.group("uid"))
    if uid == 0:
        raise bad_url(url, "UID 0 names no message")
    section = None
    if p.group("section") is not None:
        try:
            section = parse_section(_unescape(p.group("section"), url))
        except ParseError as exc:
            raise bad_url(url, f"Bad section: {exc}") from None
    offset = length = None
    if p.group("offset") is not None:
        offset, length = int(p.group("offset")), p.group("length")
        length = int(length) if length is not None else None
        if offset > NUMBER64_MAX or (length or 0) > NUMBER64_MAX:
            raise bad_url(url, f"PARTIAL over {NUMBER64_MAX} (a 63-bit number64)")
    uidvalidity = int(p.group("uidvalidity")) if p.group("uidvalidity") is not None else None
    return ImapUrl(mailbox, uid, uidvalidity, section, offset, length, user, host)


def _unescape(text: str, url: str) -> str:
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise bad_url(url, "URL escapes are not UTF-8") from None


__all__ = ["ImapUrl", "MAX_URL", "bad_url", "parse_url"]
