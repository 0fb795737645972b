"""The outcome of a recall for one recipient in one trial, and its verdict.

Why a pure function: the verdict is the lab's unit of measurement (the table's rates are counts of it), so its
rule must be exact, stated once and tested exhaustively; observing the servers and clients is the caller's job.

| condition, checked in this order | verdict |
|---|---|
| the recipient is at an external provider (the recall cannot reach it) | `impossible` |
| the server copy is still there | `failed` |
| gone from the server, but a client still shows it, or it was read before the recall | `partial` |
| gone from the server and from every client, never read | `recalled` |

A preview seen on arrival counts as reading only with `preview_counts_as_read=True`: a notification shows a
line, not the message, and counting it would make even an unopened message a partial recall.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal


class ClientVerdict(enum.StrEnum):
    RECALLED = "recalled"
    PARTIAL = "partial"
    FAILED = "failed"
    IMPOSSIBLE = "impossible"

    @property
    def success(self) -> bool:
        """Only a full recall counts as success in the measured rates."""
        return self is ClientVerdict.RECALLED


@dataclass(frozen=True)
class ClientCopy:
    """One client's copy: cached (desktop) or visible on the page / as a snapshot (web)."""

    name: str
    kind: Literal["desktop", "web", "other"]
    present: bool


@dataclass(frozen=True)
class RecipientOutcome:
    recipient: str
    server_copy: bool
    clients: tuple[ClientCopy, ...] = ()
    read_before_recall: bool = False
    preview_seen: bool = False
    external: bool = False

    @property
    def visible_somewhere(self) -> bool:
        return any(c.present for c in self.clients)

    def verdict(self, preview_counts_as_read: bool = False) -> ClientVerdict:
        return judge(self, preview_counts_as_read=preview_counts_as_read)

    def explain(self, preview_counts_as_read: bool = False) -> str:
        """One line saying why the verdict is what it is (for reports and assertion messages)."""
        verdict = judge(self, preview_counts_as_read=preview_counts_as_read)
        if verdict is ClientVerdict.IMPOSSIBLE:
            return f"{self.recipient}: impossible (external provider; the recall cannot reach the mailbox)"
        if verdict is ClientVerdict.FAILED:
            return f"{self.recipient}: failed (the server still has the message)"
        if verdict is ClientVerdict.PARTIAL:
            reasons = [f"still shown by {c.name}" for c in self.clients if c.present]
            if self.read_before_recall:
                reasons.append("read before the recall")
            elif preview_counts_as_read and self.preview_seen:
                reasons.append("preview seen before the recall")
            return f"{self.recipient}: partial ({'; '.join(reasons)})"
        return f"{self.recipient}: recalled (gone from the server and every client, never read)"


def judge(outcome: RecipientOutcome, *, preview_counts_as_read: bool = False) -> ClientVerdict:
    """The verdict for one recipient; see the module docstring for the rule."""
    if outcome.external:
        return ClientVerdict.IMPOSSIBLE
    if outcome.server_copy:
        return ClientVerdict.FAILED
    read = outcome.read_before_recall or (preview_counts_as_read and outcome.preview_seen)
    if outcome.visible_somewhere or read:
        return ClientVerdict.PARTIAL
    return ClientVerdict.RECALLED


def server_copy_present(store: object, user: str, message_id: str) -> bool:
    """Whether the user's mailbox (any folder) still holds the message, via the store's public API
    (`MailStore.find_by_message_id`, e.g. `lab.store(domain)`)."""
    return bool(store.find_by_message_id(user, message_id))  # type: ignore[attr-defined]
