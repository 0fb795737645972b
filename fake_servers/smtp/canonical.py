"""The one form of mail the lab accepts, and what a client may put in the SMTP envelope.

Why refuse rather than repair, at the SMTP edge (both listeners): RFC 5321 (2.3.8) lets CR and LF occur in mail
only together, as CRLF, and every client library (smtplib, aiosmtplib, swaks) sends exactly that. A bare CR or a
bare LF therefore comes only from a broken or hostile client, and it is where readers disagree: a line filter
looking for "\\nName:" misses a field that Python's email parser (which splits lines on CR, LF and CRLF) sees. A
server that rewrites line ends has to get its rewrite to agree with every reader; a server that refuses them has
nothing to agree about, changes none of the bytes it accepts, and tells the sender why (as sendmail 8.18 and
Postfix's smtpd_forbid_bare_newline=reject do). So accepted mail is CRLF-only and free of NUL, and its header
block reads one way for everybody (`recall_lab.fake_servers.smtp.headers.HeaderBlock.problem`).

The server's own injections (a policy's internal submission, a report or a replacement delivered straight into
a mailbox) cannot be refused; they are normalised to the same form with `to_crlf`.

Envelope arguments (EHLO/HELO name, MAIL FROM and RCPT TO addresses) end up in trace fields (Received,
Return-Path); control characters in them would become header lines of their own. They are refused, and
`trace_text` escapes whatever reaches a trace field by another way.
"""

from __future__ import annotations

import re

#: Each bare CR or bare LF (a CR not followed by LF, an LF not preceded by CR), and CRLF, for `to_crlf`.
_LINE_END = re.compile(rb"\r\n|\r|\n")
_BAD_BYTE = re.compile(rb"\r(?!\n)|(?<!\r)\n|\x00")


def line_problem(raw: bytes) -> str | None:
    """Why `raw` is not canonical mail (a bare CR, a bare LF or a NUL, with its line number); None when it is.

    Three C-speed counts decide the usual case; only refused mail pays for finding the place."""
    crlf = raw.count(b"\r\n")
    if raw.count(b"\r") == crlf and raw.count(b"\n") == crlf and b"\x00" not in raw:
        return None
    m = _BAD_BYTE.search(raw)
    if m is None:  # pragma: no cover - the counts above and this search agree by construction
        return None
    line = raw.count(b"\r\n", 0, m.start()) + 1
    what = {b"\r": "a bare CR", b"\n": "a bare LF", b"\x00": "a NUL character"}[m.group()]
    return f"{what} in line {line}; lines must end with CRLF (RFC 5321 2.3.8) and carry no NUL"


def to_crlf(raw: bytes) -> bytes:
    """`raw` with every bare CR and bare LF made a CRLF (the same object when there was none)."""
    crlf = raw.count(b"\r\n")
    if raw.count(b"\r") == crlf and raw.count(b"\n") == crlf:
        return raw
    return _LINE_END.sub(b"\r\n", raw)


def _is_control(ch: str) -> bool:
    """C0 and C1 controls, DEL, and bytes that were not UTF-8 (aiosmtpd hands them over surrogate-escaped)."""
    code = ord(ch)
    return code < 0x20 or 0x7F <= code <= 0x9F or 0xD800 <= code <= 0xDFFF


def _describe(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:
        return f"the byte 0x{code - 0xDC00:02X}, which is not UTF-8"
    return f"the control character 0x{code:02X}"


def address_problem(address: str) -> str | None:
    """Why an envelope address (MAIL FROM / RCPT TO, as aiosmtpd parsed it) is unacceptable, else None.

    A quoted local part may hold spaces and most printable characters (RFC 5321 4.1.2 qtextSMTP), never a
    control character."""
    for ch in address:
        if _is_control(ch):
            return f"it contains {_describe(ch)}"
    return None


#: RFC 5321 caps a domain at 255 octets; an address literal is shorter still.
MAX_HELO = 255


def helo_problem(name: str) -> str | None:
    """Why an EHLO/HELO argument is unacceptable (controls, white space inside, too long), else None.

    The argument is one Domain or address-literal (RFC 5321 4.1.1.1): one word. UTF-8 letters are allowed
    (RFC 6531 lets an SMTPUTF8 client name itself with U-labels)."""
    if len(name.encode("utf-8", "surrogateescape")) > MAX_HELO:
        return f"it is longer than {MAX_HELO} octets"
    for ch in name:
        if _is_control(ch):
            return f"it contains {_describe(ch)}"
        if ch.isspace():
            return "it contains white space (one domain name or address literal is expected)"
    return None


#: Characters kept as they are in a trace field's word (a host name, an address literal).
_TRACE_WORD_CHAR = re.compile(r"[A-Za-z0-9.\-_:\[\]@+=]")
_TRACE_WORD = re.compile(r"[A-Za-z0-9.\-_:\[\]@+=]*")


def _trace_keeps(ch: str, word: bool) -> bool:
    return _TRACE_WORD_CHAR.fullmatch(ch) is not None if word else ch.isprintable()


def trace_text(text: str, *, word: bool = False) -> str:
    """`text` safe inside a trace field: every character that is not printable (controls, line ends, bytes
    that were not UTF-8) percent-encoded as its UTF-8 bytes; for a `word` (a host name, an address literal)
    every character but those of host names and address literals. Defence in depth: the SMTP edge refuses
    such input already, but a trace field must never become two fields whoever called."""
    if (_TRACE_WORD.fullmatch(text) is not None) if word else text.isprintable():
        return text  # the usual case, at C speed
    return "".join(ch if _trace_keeps(ch, word) else
                   "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogateescape")) for ch in text)
