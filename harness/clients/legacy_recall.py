"""The legacy (client-side) recall rule, as a pure decision: what a desktop client does with a recall.

Why pure: the rule is the heart of the article's table (unread and in the same folder: recalled; read: fails;
moved by a rule: fails), so it is stated once here and tested without servers; the desktop client only
carries it out over IMAP and SMTP.

Whether to act at all is decided by the server's own readers, never by a parser of the client's: the mark of
trust through `format.verified_by` and "who sent it" through `trust.from_address`, both built on the one header
reader (recall_lab.fake_servers.smtp.headers) whose filter stripped every forged mark on the way in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from recall_lab.fake_servers.recall.format import RecallStatus, verified_by
from recall_lab.fake_servers.recall.trust import from_address


def vouched_for(raw: bytes, user: str) -> bool:
    """Whether the user's own server vouched for this message (its mark, read from the bytes as received)."""
    return verified_by(raw) == user.strip().lower().rpartition("@")[2]


def sender_of(raw: bytes) -> str:
    """The one From address of a message as the server reads it ("" when there is not exactly one that reads
    one way only): a recall is obeyed only for copies whose sender is the recall's."""
    return from_address(raw) or ""


@dataclass(frozen=True)
class OriginalCopy:
    """Where one copy of the original sits and whether it has been read (\\Seen)."""

    folder: str
    seen: bool


@dataclass(frozen=True)
class RecallDecision:
    status: RecallStatus
    delete_from: tuple[str, ...]  # folders whose copies the client deletes (the recall's folder or none)
    detail: str


def decide(recall_folder: str, copies: Iterable[OriginalCopy]) -> RecallDecision:
    """Unread copies in the recall's own folder are deleted; anything else makes the recall fail.

    - no copy at all: `not-found` (deleted already, or never arrived);
    - a copy in the same folder, every such copy unread: `recalled` (the client deletes them);
    - a copy in the same folder already read: `failed-read` (both stay; the recipient is told);
    - copies only in other folders (a rule moved it): `failed-moved`.
    """
    copies = list(copies)
    same = [c for c in copies if c.folder == recall_folder]
    if not copies:
        return RecallDecision(RecallStatus.NOT_FOUND, (), "the original is not in the mailbox")
    if same and not any(c.seen for c in same):
        return RecallDecision(RecallStatus.RECALLED, (recall_folder,), "")
    if same:
        return RecallDecision(RecallStatus.FAILED_READ, (), "the recipient had read the original")
    folders = ", ".join(sorted({c.folder for c in copies}))
    return RecallDecision(RecallStatus.FAILED_MOVED, (), f"the original is in {folders}, not {recall_folder}")
