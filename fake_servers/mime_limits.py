"""Does a message stay within the MIME limits? The check made where mail comes in (SMTP DATA, IMAP APPEND).

Sans-I/O: bytes in, a verdict out. It reads the message with the very scanner the IMAP server renders with
(fake_servers/imap/mime/tree.py, bounded by the same MimeLimits), so "accepted" means "rendered whole": no
second parser that could disagree with the first about how many parts a message has.

Why refuse at delivery instead of accepting and truncating (as Dovecot does): Dovecot is the last stop, the
mail is already accepted when it sees it, so truncating is all it can do. Our MX and submission listeners are
the first stop: refusing during DATA (before "250 accepted") hands the problem back to the sending MTA, which
bounces it to its author, and nothing is silently shown truncated. No real message comes near the limits
(10,000 parts, 100 levels, 20,000 header fields), while a hostile one costs every reader's client and the
recall code (which parses with `email`) time and memory. Mail can still reach a store without passing here
(a Maildir written by hand or by Dovecot), so rendering stays bounded on its own; this check is the door,
not the only wall.

The line length rule is RFC 5322 2.1.1 (998 octets without the CRLF; SMTP already refuses longer lines
through aiosmtpd), checked here for mail that does not come through SMTP (APPEND).
"""

from __future__ import annotations

import re
from collections.abc import Generator
from dataclasses import dataclass

from recall_lab.fake_servers.imap.mime.tree import DEFAULT_LIMITS, MimeLimits, parse_steps, run_steps

__all__ = ["DEFAULT_LIMITS", "MimeLimits", "Violation", "check_message", "check_steps"]


@dataclass(frozen=True, slots=True)
class Violation:
    """Why a message is refused: which limit (a MimeLimits field name), a reason for humans, and the replies
    that say so (SMTP 554 5.6.0 for content, 552 5.3.4 for size; IMAP NO [LIMIT], RFC 5530)."""

    limit: str
    reason: str
    smtp_code: int
    enhanced: str

    @property
    def smtp_reply(self) -> str:
        """The SMTP reply line, e.g. "554 5.6.0 Message refused: more than 10000 MIME parts"."""
        return f"{self.smtp_code} {self.enhanced} Message refused: {self.reason}"

    @property
    def imap_reply(self) -> str:
        """The text of a tagged IMAP NO (after the tag), e.g. "NO [LIMIT] more than 10000 MIME parts"."""
        return f"NO [LIMIT] {self.reason}"


def _violation(limit: str, limits: MimeLimits) -> Violation:
    value = getattr(limits, limit)
    if limit == "max_parts":
        return Violation(limit, f"more than {value} MIME parts", 554, "5.6.0")
    if limit == "max_depth":
        return Violation(limit, f"MIME parts nested {value} or more levels deep", 554, "5.6.0")
    if limit == "max_header_fields":
        return Violation(limit, f"more than {value} header fields", 552, "5.3.4")
    if limit == "max_header_bytes":
        return Violation(limit, f"more than {value} bytes of header fields", 552, "5.3.4")
    if limit == "max_scan_passes":
        return Violation(limit, f"boundaries nested over a large body (more than {value} passes to read)",
                         554, "5.6.0")
    return Violation(limit, f"a line longer than {value} octets (RFC 5322 2.1.1)", 554, "5.6.0")


def _long_line(raw: bytes, max_length: int) -> Generator[None, None, bool]:
    """Is some line longer than max_length octets (its CRLF or LF not counted, a bare CR counted)?

    A regex in C whose pattern starts with a LF, so the engine jumps from line start to line start and
    looks at most max_length + 2 octets into each line: linear whatever the input. Run a window of
    _WINDOW octets at a time (yielding between windows: ten million empty lines take about 0.1 s)."""
    first = raw.find(b"\n", 0, max_length + 2)
    if first < 0:
        first = min(len(raw), max_length + 2)
    first_len = first - (1 if first > 0 and raw[first - 1] == 13 else 0)
    if first_len > max_length:
        return True
    pattern = _line_pattern(max_length)
    overlap = max_length + 3  # a long line found from a LF in one window whatever window it ends in
    pos = 0
    while pos < len(raw):
        end = min(len(raw), pos + _WINDOW + overlap)
        if pattern.search(raw, pos, end) is not None:
            return True
        pos += _WINDOW
        yield
    return False


_WINDOW = 1 << 20
_PATTERNS: dict[int, re.Pattern[bytes]] = {}


def _line_pattern(max_length: int) -> re.Pattern[bytes]:
    pattern = _PATTERNS.get(max_length)
    if pattern is None:
        # LF, max_length octets that are not LF, then one more octet of the line: not a CR that ends it
        pattern = re.compile(rb"\n[^\n]{%d}(?:[^\r\n]|\r(?!\n))" % max_length)
        _PATTERNS[max_length] = pattern
    return pattern


def check_steps(raw: bytes, limits: MimeLimits = DEFAULT_LIMITS) -> Generator[None, None, Violation | None]:
    """check_message in steps (the generator yields after each bounded amount of work, as parse_steps does)
    for a server that wants to let other clients in while a large message is checked."""
    if (yield from _long_line(raw, limits.max_line_length)):
        return _violation("max_line_length", limits)
    root = yield from parse_steps(raw, limits, stop_at_limit=True)
    return None if root.exceeded is None else _violation(root.exceeded, limits)


def check_message(raw: bytes, limits: MimeLimits = DEFAULT_LIMITS) -> Violation | None:
    """None when `raw` stays within `limits`, else the first limit it exceeds (line length first, then what
    the MIME scan meets first). Linear in the size of the message; the scan's own work is bounded by the
    limits (about 0.2 s of CPU for a 10 MB message of a million parts, most of it rendering nothing)."""
    return run_steps(check_steps(raw, limits))
