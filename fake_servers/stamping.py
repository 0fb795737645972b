"""The server's own marks on a message: what acceptance adds (Received, and on submission Message-ID, Date and
the Bcc bookkeeping) and what final delivery adds (Return-Path, Delivered-To).

Why one module: these are the places where envelope data a peer chose (HELO, addresses) is written into header
fields, and where the server-only recall mark is taken off whatever comes in, so every defence of that kind is
read in one file. Nothing here touches the store, a socket or the policies: a stamp is bytes in, bytes out.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid
from typing import Any, NamedTuple

from recall_lab.fake_servers.pipeline import Channel, Delivery
from recall_lab.fake_servers.recall.format import HEADER_VERIFIED, strip_verified
from recall_lab.fake_servers.smtp import headers
from recall_lab.fake_servers.smtp.canonical import to_crlf, trace_text

_QUEUE_IDS = itertools.count()


def new_queue_id() -> str:
    """Unique across the process and across restarts (a spool file is named by it): time, then a counter."""
    return f"{time.time_ns() // 1000:X}{next(_QUEUE_IDS) & 0xFFFF:04X}"


def needs_smtputf8(mail_from: str, recipients: Sequence[str]) -> bool:
    """Whether an internal submission's envelope needs SMTPUTF8 (the SMTP edge learns it from the client)."""
    return not all(a.isascii() for a in (mail_from, *recipients))


def delivery_trace(raw: bytes, mail_from: str, user: str) -> bytes:
    """`raw` (canonical already) with Return-Path and Delivered-To on top, as final delivery writes them:
    nothing raw from the envelope in those fields."""
    return headers.prepend_headers(raw, [("Return-Path", f"<{trace_text(mail_from)}>"),
                                         ("Delivered-To", trace_text(user))])


class Stamped(NamedTuple):
    """What acceptance made of a message; `mark_stripped` says the server-only recall mark was taken off (the
    caller records it in the audit log)."""

    delivery: Delivery
    mark_stripped: bool


class Stamper:
    """Acceptance stamps of one domain's server (its name in Received and in generated Message-IDs)."""

    def __init__(self, domain: str, hostname: str) -> None:
        self.domain = domain
        self.hostname = hostname
        self._date_cache: tuple[int, str] = (-1, "")

    def stamp(self, *, channel: Channel, auth_user: str | None, mail_from: str, recipients: Sequence[str],
              raw: bytes, smtputf8: bool, helo: str | None = None, peer: Any = None, tls: bool = False,
              marks: Iterable[str] | None = None, save_sent_copy: bool | None = None,
              block: headers.HeaderBlock | None = None) -> Stamped:
        """A Delivery for an accepted message, with the server's trace and submission fix-ups applied.

        Every message enters here, whatever its channel, so here the server-only recall mark is stripped (as
        Authentication-Results is, RFC 8601), whichever policies the domain runs: only the recall policy puts it
        back, on what it vouches for. The server's own mail (`internal`) is made canonical (CRLF) like
        everything the SMTP edge accepts."""
        queue_id = new_queue_id()
        now = datetime.now(UTC)
        if channel == "internal":
            raw = to_crlf(raw)
        stripped = raw if block is not None and not block.has(HEADER_VERIFIED) else strip_verified(raw)
        mark_stripped = stripped is not raw
        if mark_stripped:
            raw, block = stripped, None
        bcc: list[str] = []
        if channel in ("submission", "internal"):
            block = block or headers.HeaderBlock(raw)
            has_bcc = block.has("Bcc")
            if channel == "submission" or has_bcc:
                named = set(block.addresses("To", "Cc"))
                bcc = [r for r in recipients if r.lower() not in named]
                if has_bcc:
                    raw = headers.remove_headers(raw, ["Bcc"])
            missing = []
            if not block.has("Message-ID"):
                missing.append(("Message-ID", make_msgid(domain=self.domain)))
            if not block.has("Date"):
                missing.append(("Date", self._date(now)))
            if missing:
                raw = headers.append_headers(raw, missing)
        raw = headers.prepend_headers(raw, [("Received", self._received(channel, helo, peer, tls, auth_user,
                                                                         smtputf8, queue_id, recipients, now))])
        delivery = Delivery(domain=self.domain, channel=channel, auth_user=auth_user, mail_from=mail_from,
                            recipients=list(recipients), raw=raw, queue_id=queue_id, bcc=bcc,
                            trusted_marks=set(marks or ()),
                            save_sent_copy=(channel == "submission") if save_sent_copy is None else save_sent_copy,
                            smtputf8=smtputf8, received_at=now)
        return Stamped(delivery, mark_stripped)

    def _received(self, channel: Channel, helo: str | None, peer: Any, tls: bool, auth_user: str | None,
                  smtputf8: bool, queue_id: str, recipients: Sequence[str], now: datetime) -> str:
        if channel == "internal":
            source = "from localhost (internal)"
            proto = "local"
        else:
            ip = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
            # nothing the client chose lands raw in a trace field (the SMTP edge refuses controls already)
            source = f"from {trace_text(helo, word=True) if helo else 'unknown'} ([{ip}])"  # ip: the socket's
            proto = ("UTF8SMTP" if smtputf8 else "ESMTP") + ("S" if tls else "") + ("A" if auth_user else "")
        who = f" for <{trace_text(recipients[0])}>" if len(recipients) == 1 else ""
        return f"{source} by {self.hostname} (recall-lab) with {proto} id {queue_id}{who}; {self._date(now)}"

    def _date(self, now: datetime) -> str:
        """format_datetime, computed once per second (every accepted message stamps one or two)."""
        second = int(now.timestamp())
        if self._date_cache[0] != second:
            self._date_cache = (second, format_datetime(now.replace(microsecond=0)))
        return self._date_cache[1]
