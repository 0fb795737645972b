"""Seeding and inspecting an account over IMAP (imapclient), the same way on both servers.

Why over IMAP and not through the store: the tests must treat Dovecot and recall-lab alike, and what a peer
did is only proven once another client sees it on the server.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from email.policy import default as default_policy

from imapclient import IMAPClient

from .servers import ImapEndpoint


def make_message(subject: str, body: str, *, sender: str = "dave@mail.example",
                 to: str = "alice@corp.example") -> bytes:
    """A small, plain RFC 5322 message with CRLF line ends and a Message-ID derived from the subject."""
    msg = EmailMessage(policy=default_policy)
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = "Tue, 24 Nov 2026 08:00:00 +0000"
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@mail.example>"
    msg.set_content(body)
    return msg.as_bytes(policy=default_policy.clone(linesep="\r\n"))


@contextmanager
def connect(ep: ImapEndpoint) -> Iterator[IMAPClient]:
    client = IMAPClient(ep.host, port=ep.port, ssl=False, timeout=10)
    try:
        client.login(ep.user, ep.password)
        yield client
    finally:
        try:
            client.logout()
        except Exception:  # the server may already have closed; nothing left to clean up
            client.shutdown()


def seed(ep: ImapEndpoint, messages: Iterable[tuple[str, str, tuple[str, ...]]], mailbox: str = "INBOX") -> None:
    """Append (subject, body, flags) messages to a mailbox."""
    with connect(ep) as client:
        for subject, body, flags in messages:
            client.append(mailbox, make_message(subject, body), flags=flags)


def flags_by_subject(ep: ImapEndpoint, mailbox: str = "INBOX") -> dict[str, set[str]]:
    """Subject -> set of stored flags of every message in a mailbox, read with EXAMINE (no side effects).
    \\Recent is left out: it is per session, not stored."""
    with connect(ep) as client:
        client.select_folder(mailbox, readonly=True)
        uids = client.search("ALL")
        if not uids:
            return {}
        data = client.fetch(uids, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        result = {}
        for item in data.values():
            header = item[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode()
            subject = header.partition(":")[2].strip()
            flags = {f.decode() if isinstance(f, bytes) else f for f in item[b"FLAGS"]}
            result[subject] = flags - {"\\Recent"}
        return result
