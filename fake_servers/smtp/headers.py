"""The lab's one reading of a message's header block, and byte-level edits of it (prepend trace fields, drop
fields, read address lists).

Why bytes and not `email` round trips: an MTA must deliver what it was given. Re-serialising a parsed message
re-folds headers and re-encodes bodies; prepending `Received:` or removing `Bcc:` as bytes leaves every other
octet alone (and is much cheaper). Sans-I/O and pure, so hypothesis can test it.

Why one reading: whatever decides what the header fields are (the server's filter that strips the server-only
recall mark, the submission check of From, the trust code, the clients) must see the same fields, or the gap
between two readers is a way in. `HeaderBlock` splits lines exactly where Python's email parser does (CRLF, CR,
LF), ends the block at the first empty line, and reads a field's value exactly as `email.policy.default` does
(`raw_values`). Where Python would stop reading headers early (a line that is no field, white space before a
colon, a NUL or control character, a bare CR or LF), `HeaderBlock` reads on, so its fields are a superset of
Python's: a filter built on it removes everything any reader could take for a field. `problem()` names the first
such irregularity; the SMTP edge refuses mail that has one, and the trust code believes no header of a message
that has one, so for everything accepted and trusted the two readings are the same field for field (proved by
tests/smtp/test_header_reading.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from email import errors as email_errors
from email.message import Message
from email.policy import Policy
from email.utils import getaddresses

from recall_lab.fake_servers.smtp.addresses import AmbiguousAddress, Mailbox, fast_address, sole_mailbox
from recall_lab.fake_servers.smtp.canonical import to_crlf

_BLANK_LINES = (b"\r\n", b"\n", b"\r")


def _crlf_only(data: bytes) -> bool:
    crlf = data.count(b"\r\n")
    return data.count(b"\r") == crlf and data.count(b"\n") == crlf


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    """(header block including its final line end, rest from the blank line on).

    Lines end with CRLF, CR or LF, as Python's email parser reads them; the block ends at the first empty line,
    or is the whole message when there is none."""
    if raw[:1] in (b"\r", b"\n"):
        return b"", raw
    end = raw.find(b"\r\n\r\n")
    if end >= 0:
        head = raw[:end + 2]
        if _crlf_only(head):  # the usual CRLF message: C-speed searches and counts
            return head, raw[end + 2:]
    pos = 0
    for line in raw.splitlines(keepends=True):
        if line in _BLANK_LINES:
            return raw[:pos], raw[pos:]
        pos += len(line)
    return raw, b""  # no body: all header (or garbage); keep it whole as the header block


def _fields(block: bytes) -> list[bytes]:
    """Header fields, each with its continuation lines and line ends, in order (a first line that begins with
    white space is a field of its own)."""
    lines = block.splitlines(keepends=True)
    fields: list[bytes] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def _name(field: bytes) -> bytes:
    return field.split(b":", 1)[0].strip().lower()


def field_names(head: bytes) -> list[bytes]:
    """The names of the fields of a header block as HeaderBlock reads them (lower case, blanks around dropped)."""
    return [_name(f) for f in _fields(head) if b":" in f]


class HeaderBlock:
    """The header fields of a message, split once (the DATA handler asks several questions of the same block).

    Fields are also indexed by lower-cased name: the submission path asks for From, Sender, To, Cc, Bcc,
    Message-ID and Date of every message, and a dict lookup beats scanning the fields for each."""

    __slots__ = ("_by_name", "_head")

    def __init__(self, raw: bytes) -> None:
        head, _ = split_message(raw)
        by_name: dict[bytes, list[bytes]] = {}
        for f in _fields(head):
            name, colon, _rest = f.partition(b":")
            if colon:
                key = name.strip().lower()
                found = by_name.get(key)
                if found is None:
                    by_name[key] = [f]
                else:
                    found.append(f)
        self._by_name = by_name
        self._head = head

    def problem(self) -> str | None:
        """The first irregularity of the header block (where Python's parser would read it differently), with
        its line number; None for a block of well-formed fields with CRLF line ends. One regular expression
        decides the usual case."""
        if _GOOD_HEAD.fullmatch(self._head) is not None:
            return None
        return _head_problem(self._head)

    def raw_values(self, name: str) -> list[str]:
        """The values of every field called `name`, exactly as email.policy.default hands them to its header
        parser: the octets decoded as ASCII with surrogate escapes, leading blanks of the first line dropped,
        line ends removed (a fold keeps its white space)."""
        return [_python_value(f) for f in self._by_name.get(_key(name), ())]

    def values(self, name: str) -> list[str]:
        """The values of every field called `name`, unfolded (line ends removed, as policy.default does),
        stripped and decoded as UTF-8 (for display and the Bcc bookkeeping)."""
        out = []
        for f in self._by_name.get(_key(name), ()):
            value = f.split(b":", 1)[1]
            if b"\n" in value.rstrip(b"\r\n") or b"\r" in value.rstrip(b"\r\n"):
                value = value.replace(b"\r", b"").replace(b"\n", b"")
            out.append(value.decode("utf-8", "replace").strip())
        return out

    def has(self, name: str) -> bool:
        return _key(name) in self._by_name

    def addresses(self, *names: str) -> list[str]:
        """Every addr-spec in the named address fields, lower-cased."""
        out: list[str] = []
        for name in names:
            if _key(name) in self._by_name:
                for value in self.values(name):
                    out.extend(_address_list(value))
        return out


_KEYS: dict[str, bytes] = {}

#: A header block of well-formed fields: a name of printable ASCII but colon, the colon, a value of
#: printable/8-bit/tab octets, CRLF; continuation lines start with a blank. No other octet, no other line end.
_GOOD_HEAD = re.compile(rb"(?:[\x21-\x39\x3b-\x7e]+:[\t\x20-\x7e\x80-\xff]*\r\n"
                        rb"(?:[\t ][\t\x20-\x7e\x80-\xff]*\r\n)*)*")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")


def _head_problem(head: bytes) -> str | None:
    """What `_GOOD_HEAD` refused, said for people (a last line without a line end is no problem)."""
    lines = head.splitlines(keepends=True)
    for n, line in enumerate(lines, 1):
        content = line.rstrip(b"\r\n")
        ending = line[len(content):]
        if ending not in (b"\r\n", b""):
            bare = "CR" if ending == b"\r" else "LF"
            return f"line {n} of the header ends with a bare {bare}"
        control = _CONTROL.search(content)
        if control is not None:
            return f"line {n} of the header contains the control character 0x{control.group()[0]:02X}"
        if content[:1] in (b" ", b"\t"):
            if n == 1:
                return "line 1 of the header begins with white space (a continuation of no field)"
            continue
        name, colon, _value = content.partition(b":")
        if not colon:
            return f"line {n} of the header is not a header field (no colon)"
        if not name:
            return f"line {n} of the header has no field name"
        if name != name.rstrip(b" \t"):
            return f"line {n} of the header has white space before the colon"
        if _FIELD_NAME.fullmatch(name) is None:
            return f"line {n} of the header has a field name that is not printable ASCII"
    return None


def _python_value(field: bytes) -> str:
    """A field's value as email.policy.default reads it (header_source_parse, then header_fetch_parse)."""
    value = field.decode("ascii", "surrogateescape").split(":", 1)[1].lstrip(" \t")
    if "\r" in value or "\n" in value:
        value = value.replace("\r", "").replace("\n", "")
    return value


#: Defects of Python's parse that mean its header block is not the one HeaderBlock reads.
_STRUCTURE_DEFECTS = (email_errors.MissingHeaderBodySeparatorDefect, email_errors.FirstHeaderLineIsContinuationDefect,
                      email_errors.MisplacedEnvelopeHeaderDefect, email_errors.InvalidHeaderDefect)


def field_values(msg: bytes | Message, name: str) -> list[str] | None:
    """The values of the fields `name` for a trust decision, read as policy.default reads them; None when the
    header block is irregular (`HeaderBlock.problem`), because then readers may disagree about it.

    A parsed message (no bytes at hand) is judged by its parser's defects and read from its own fields, which are
    a subset of HeaderBlock's reading of the bytes it was parsed from."""
    if isinstance(msg, bytes | bytearray):
        block = HeaderBlock(bytes(msg))
        return None if block.problem() is not None else block.raw_values(name)
    if any(isinstance(d, _STRUCTURE_DEFECTS) for d in msg.defects):
        return None
    key = name.lower()
    out = []
    for field_name, value in msg.raw_items():
        if field_name.lower() != key:
            continue
        text = str(value)
        if "\r" in text or "\n" in text:
            text = text.replace("\r", "").replace("\n", "")
        out.append(text if hasattr(value, "name") else text.lstrip(" \t"))
    return out


def _key(name: str) -> bytes:
    """A field name as HeaderBlock indexes it (lower-cased bytes), remembered for the few names code asks for."""
    key = _KEYS.get(name)
    if key is None:
        key = name.lower().encode()
        if len(_KEYS) < 256:
            _KEYS[name] = key
    return key
def _address_list(value: str) -> list[str]:
    """addr-specs of one address-list value (To, Cc, Bcc) as email.utils.getaddresses reads them; a fast path for
    the plain lists clients write (each element `addr@domain` or `Some Name <addr@domain>`)."""
    out = []
    for part in value.split(","):
        fast = fast_address(part)
        if fast is None:
            return [addr.lower() for _, addr in getaddresses([value]) if addr]
        out.append(fast)
    return out


def as_bytes_checked(msg: Message, policy: Policy) -> bytes:
    """`msg` serialised with `policy`, refused (ValueError) when the bytes do not read back as `msg`'s own header
    fields: Python before 3.11.10 lets a decoded encoded word write a line end into a re-folded header
    (CVE-2024-6923), which would forge a field, the server-only recall mark included, past the SMTP edge's
    filter. Server code that re-serialises a parsed message someone else wrote goes through here."""
    raw = msg.as_bytes(policy=policy)
    wanted = [name.strip().lower().encode("ascii", "surrogateescape") for name in msg.keys()]
    if field_names(split_message(raw)[0]) != wanted:
        raise ValueError("serialising the message would add header fields it does not have (header injection)")
    return raw


def author(msg: bytes | Message) -> Mailbox | None:
    """The one From mailbox of a message (bytes or parsed), None when there is not exactly one unambiguous one or
    the header block is irregular: what the trust rules and the clients take as "who sent this"."""
    values = field_values(msg, "From")
    if values is None:
        return None
    try:
        return sole_mailbox(values, "From")
    except AmbiguousAddress:
        return None


def author_problem(block: HeaderBlock, user: str) -> str | None:
    """Why this header block may not go out in `user`'s name, else None: From, and Sender when present, must each
    be one field naming one mailbox, the user's, read as the recipients' parser reads it (`sole_mailbox`).

    The one rule for everything the lab delivers in a user's name: what she submits, and the replacement the
    server itself delivers for her replace recall."""
    froms = block.raw_values("From")
    if not froms:
        return "Message has no From header; it must name you"
    checks = [("From", froms)]
    if block.has("Sender"):
        checks.append(("Sender", block.raw_values("Sender")))
    for field, values in checks:
        try:
            mailbox = sole_mailbox(values, field)
        except AmbiguousAddress as exc:
            return f"{field} header refused: {exc}; write it as <{user}> or Your Name <{user}>"
        if mailbox.address != user:
            return f"{field} header must be your address <{user}>"
    return None


def header_values(raw: bytes, name: str) -> list[str]:
    """The unfolded values of every field called `name` (case-insensitive), decoded as UTF-8."""
    return HeaderBlock(raw).values(name)


def remove_headers(raw: bytes, names: Iterable[str]) -> bytes:
    """`raw` without the fields named (continuation lines included); `raw` itself when there is none.

    A field name is compared as HeaderBlock reads it (blanks around it ignored), so a field any reader could
    see goes. In a block with bare CRs or LFs, what is left gets CRLF line ends: dropping a line between a bare
    CR and a LF would otherwise join them into one line end and turn the line after into a field."""
    keys = {n.lower().encode() for n in names}
    head, body = split_message(raw)
    fields = _fields(head)
    kept = [f for f in fields if not (b":" in f and _name(f) in keys)]
    if len(kept) == len(fields):
        return raw
    if _crlf_only(head):
        return b"".join(kept) + body
    if body[:1] in (b"\r", b"\n"):  # the blank line that ends the block
        body = b"\r\n" + body[2 if body.startswith(b"\r\n") else 1:]
    return to_crlf(b"".join(kept)) + body


def prepend_headers(raw: bytes, fields: Iterable[tuple[str, str]]) -> bytes:
    """Put `Name: value` lines before the existing header block, in the order given (trace fields go on top)."""
    eol = "\r\n" if not raw or raw.find(b"\r\n", 0, 2000) >= 0 else "\n"
    return "".join([f"{name}: {value}{eol}" for name, value in fields]).encode() + raw


def append_headers(raw: bytes, fields: Iterable[tuple[str, str]]) -> bytes:
    """Add fields at the end of the header block (for Message-ID / Date / Bcc that a client left out)."""
    head, body = split_message(raw)
    eol = b"\r\n" if b"\r\n" in head or not head else b"\n"
    extra = b"".join(f"{name}: {value}".encode() + eol for name, value in fields)
    if head and not head.endswith((b"\n",)):
        head += eol
    if not body:
        return head + extra + eol
    return head + extra + body


def addresses(raw: bytes, *names: str) -> list[str]:
    """Every addr-spec in the named address fields (To, Cc, ...), lower-cased."""
    return HeaderBlock(raw).addresses(*names)
