"""The name a lab client gives itself (its EHLO argument, the domain of the Message-IDs it makes), from the
address it speaks for, never from the resolver.

Why: aiosmtplib and smtplib, created without a local hostname, and `email.utils.make_msgid()` without a domain
call `socket.getfqdn()` on every use: a reverse DNS query for the machine's own name, which takes seconds on a
host whose name is not in /etc/hosts (the demo went from 11 s to 55 s), and made the lab's speed depend on the
network. A lab client acts for a user of a lab domain, so that domain is its name, as the servers' is theirs.
"""

from __future__ import annotations

import re

#: The name used when the address has no usable domain (a bare local part, or something hostile).
FALLBACK = "localhost"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def client_name(address: str) -> str:
    """The domain of `address` (`alice@corp.example` -> `corp.example`) when it is a plain DNS name that is safe
    on an EHLO line and after the `@` of a Message-ID; otherwise FALLBACK."""
    domain = address.strip().rpartition("@")[2].strip().lower()
    if len(domain) <= 253 and _DOMAIN.fullmatch(domain):
        return domain
    return FALLBACK
