"""The legacy (client-side) recall rule, as a pure decision: what a desktop client does with a recall.

Why pure: the rule is the heart of the article's table (unread and in the same folder: recalled; read: fails;
moved by a rule: fails), so it is stated once here and tested without servers; the desktop client only
carries it out over IMAP and SMTP.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fake_servers.recall.format import RecallStatus


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
