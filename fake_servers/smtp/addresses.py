"""Who a message says it is from: the one reading of From and Sender shared by the submission check, the recall
trust rules and the client emulators.

Why one reading, and why this one: a recipient's mail program shows the From its own parser reads; in the lab
that parser is Python's email package with `policy.default` (the clients, the recall trust code). Two readers
that disagree are a spoofing channel: a fast path once saw bob in `alice@corp.example <bob@corp.example>` while
policy.default sees alice. So a value is read by policy.default's own header parser (email.headerregistry) and
must read cleanly (no defects, no group), and an independent reader (email.utils.getaddresses) must find the
same addresses; what fails either cannot be read unambiguously and is refused (`AmbiguousAddress`, which the
submission listener answers with 553 5.7.1 and the reason). The forms clients write (`addr@domain`,
`Some Name <addr@domain>`) take a fast path that skips the parser; tests/smtp/test_from_spoofing.py proves with
hypothesis that it gives what the slow path gives on every value it answers.

Values are the strings policy.default hands its header parser (`HeaderBlock.raw_values`); `headers.author` reads
a whole message's From with it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from email import errors as email_errors
from email import policy as email_policy
from email.utils import getaddresses
from typing import NamedTuple


class AmbiguousAddress(ValueError):
    """A From/Sender value that cannot be read one way only (or not as the one mailbox it must be); says why."""


class Mailbox(NamedTuple):
    name: str  # the display name as policy.default decodes it ("" when none)
    address: str  # the addr-spec, lower-cased


# --- the fast path: the forms clients write -------------------------------------------------------------------
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_ADDR = rf"{_ATEXT}+(?:\.{_ATEXT}+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
#: A display name of atoms separated by spaces; no "=" or "?", so never an encoded word.
_WORD = r"[A-Za-z0-9!#$%&'*+/^_`{|}~-]+"
_PLAIN = re.compile(rf"[ \t]*({_ADDR})[ \t]*")
_NAMED = re.compile(rf"[ \t]*({_WORD}(?: +{_WORD})*) *<({_ADDR})>[ \t]*")


def fast_address(value: str) -> str | None:
    """The addr-spec (lower-cased) of a value in one of the plain forms, else None."""
    if "=?" in value:  # an encoded word may hide anywhere, even in a local part (policy.default decodes it)
        return None
    m = (_PLAIN if "<" not in value else _NAMED).fullmatch(value)
    return None if m is None else m.group(m.lastindex or 1).lower()


def fast_mailbox(value: str) -> Mailbox | None:
    """The mailbox of a value in one of the plain forms, else None (then only the slow path may answer)."""
    if "=?" in value:
        return None
    if "<" not in value:
        m = _PLAIN.fullmatch(value)
        return None if m is None else Mailbox("", m.group(1).lower())
    m = _NAMED.fullmatch(value)
    if m is None:
        return None
    return Mailbox(" ".join(m.group(1).split()), m.group(2).lower())


# --- the slow path: policy.default's parser, checked by an independent one ------------------------------------
_FACTORY = email_policy.default.header_factory


def _utf8(value: str) -> bool:
    try:
        value.encode("ascii", "surrogateescape").decode("utf-8")
    except UnicodeError:
        return False
    return True


def parse_mailboxes(value: str, field: str = "From") -> list[Mailbox]:
    """The mailboxes of one From/Sender value as policy.default reads it; AmbiguousAddress when the reading is not
    clean (a defect, a group, an address without local part or domain, not ASCII) or when getaddresses reads
    other addresses."""
    try:
        header = _FACTORY(field, value)
    except Exception as exc:  # noqa: BLE001 - the parser has crashing corners (IndexError on "<"): unreadable
        raise AmbiguousAddress(f"{field} cannot be parsed ({type(exc).__name__})") from None
    for defect in header.defects:
        if isinstance(defect, email_errors.UndecodableBytesDefect) and _utf8(value):
            continue  # raw UTF-8 (SMTPUTF8 mail) in a display name: every reader decodes it alike
        raise AmbiguousAddress(f"{field} does not parse cleanly: {defect}")
    found: list[Mailbox] = []
    for group in header.groups:
        if group.display_name is not None:
            raise AmbiguousAddress(f"{field} holds a group ({group.display_name!r}); it must name a mailbox")
        for addr in group.addresses:
            spec = addr.addr_spec
            if not addr.username or not addr.domain or not spec.isascii() or not spec.isprintable():
                raise AmbiguousAddress(f"{field} holds an incomplete or non-ASCII address {spec!r}")
            found.append(Mailbox(" ".join(addr.display_name.split()), spec.lower()))
    try:
        other = [spec.lower() for _name, spec in getaddresses([value])]
    except Exception as exc:  # noqa: BLE001 - same as above, for the other parser
        raise AmbiguousAddress(f"{field} cannot be parsed ({type(exc).__name__})") from None
    if other != [m.address for m in found]:
        seen = ", ".join(m.address for m in found) or "none"
        raise AmbiguousAddress(f"{field} reads as {seen} to one parser and as {', '.join(other) or 'none'} to "
                               "another")
    return found


def mailboxes(value: str, field: str = "From") -> list[Mailbox]:
    """The mailboxes of one value: the fast path when it answers, else `parse_mailboxes`."""
    fast = fast_mailbox(value)
    return [fast] if fast is not None else parse_mailboxes(value, field)


def sole_mailbox(values: Sequence[str], field: str = "From") -> Mailbox:
    """The one mailbox of a field that must occur once and name one mailbox (From of the lab's mail, Sender)."""
    if not values:
        raise AmbiguousAddress(f"there is no {field} header")
    if len(values) > 1:
        raise AmbiguousAddress(f"there are {len(values)} {field} headers; there must be one")
    found = mailboxes(values[0], field)
    if len(found) != 1:
        raise AmbiguousAddress(f"{field} names {len(found)} mailboxes; it must name exactly one")
    return found[0]
