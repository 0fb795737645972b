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

A recipient that is not one mailbox (a distribution list the organisation expands into its members) gets one
verdict per member; the recipient's verdict is the worst of them (`combine`: a recall of a list works only if it
works for every member), and the members' verdicts are kept beside it.

Why a residue besides the verdict: "recalled" says what the recipient can no longer see, not what no longer
exists. `Residue` lists, per trial, what is left once the recall is done: whether the message is gone from every
view, whether the organisation can still restore it (Recoverable Items, until a date, or as long as a hold
lasts), whether it was read first, and which copies are out of any recall's reach (forwarded to another
provider, quoted in a reply, shown on a lock screen, synced to a phone that is offline). The verdict (and so the
table's rate) does not change with it; reports show it per trial and summed per row (`summarise_residues`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal


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
    kind: Literal["desktop", "web", "live-web", "phone", "other"]
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


#: Worst first: the order `combine` uses to merge the verdicts of one recipient's members.
_WORST_FIRST = (ClientVerdict.IMPOSSIBLE, ClientVerdict.FAILED, ClientVerdict.PARTIAL, ClientVerdict.RECALLED)


def combine(verdicts: Iterable[ClientVerdict]) -> ClientVerdict:
    """The verdict of a recipient made of several mailboxes (a distribution list): the worst member's. An empty
    list is `failed` (nothing can be said to be recalled from nobody)."""
    found = set(verdicts)
    return next((v for v in _WORST_FIRST if v in found), ClientVerdict.FAILED)


#: The kinds of copies a recall cannot reach, as the residue names them.
ESCAPE_KINDS = ("forwarded", "auto-forwarded", "quoted-in-reply", "lock-screen", "phone-sync")


@dataclass(frozen=True)
class Escape:
    """A copy (or part of one) that no recall can reach: where it is and what of the message it holds."""

    kind: str  # one of ESCAPE_KINDS
    where: str  # "dave@mail.example's INBOX", "bob@corp.example's phone (offline)" ...
    holds: str = "the whole message"  # or "subject and first line"

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "where": self.where, "holds": self.holds}


@dataclass(frozen=True)
class Residue:
    """What is left of the message once a trial's recall is done (see the module docstring)."""

    gone_from_every_view: bool  # no folder of the recipient holds it and no client shows it
    recoverable: bool = False  # the organisation keeps it out of the user's view (Recoverable Items)
    recoverable_until: str | None = None  # ISO date it is purged; None while a hold lasts (or not recoverable)
    held: bool = False  # kept by a legal hold: no purge date
    read_before_recall: bool = False
    escapes: tuple[Escape, ...] = ()

    @property
    def out_of_reach(self) -> bool:
        return bool(self.escapes)

    def to_json(self) -> dict[str, Any]:
        return {"gone_from_every_view": self.gone_from_every_view, "recoverable": self.recoverable,
                "recoverable_until": self.recoverable_until, "held": self.held,
                "read_before_recall": self.read_before_recall, "escapes": [e.to_json() for e in self.escapes]}

    def words(self) -> str:
        """One line a class understands: what the recall left behind."""
        parts = ["gone from every view" if self.gone_from_every_view else "still visible somewhere"]
        if self.held:
            parts.append("kept by the organisation while the legal hold lasts")
        elif self.recoverable:
            parts.append("recoverable by the organisation" + (f" until {self.recoverable_until}"
                                                              if self.recoverable_until else ""))
        if self.read_before_recall:
            parts.append("read before the recall")
        parts.extend(f"{e.holds} {_ESCAPE_WORDS.get(e.kind, e.kind)} ({e.where})" for e in self.escapes)
        return "; ".join(parts)


_ESCAPE_WORDS = {"forwarded": "forwarded out of reach", "auto-forwarded": "auto-forwarded out of reach",
                 "quoted-in-reply": "quoted in a reply", "lock-screen": "shown on a lock screen",
                 "phone-sync": "synced to a phone"}

#: The keys of a row's residue summary, in the order reports show them.
RESIDUE_KEYS = ("gone_from_every_view", "recoverable", "held", "read_before_recall", "out_of_reach",
                *ESCAPE_KINDS)


def summarise_residues(residues: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many trials of a row left each kind of residue (from `Residue.to_json()` forms; empty ones skipped)."""
    counts = dict.fromkeys(RESIDUE_KEYS, 0)
    for r in residues:
        if not r:
            continue
        for key in ("gone_from_every_view", "recoverable", "held", "read_before_recall"):
            counts[key] += bool(r.get(key))
        kinds = {e.get("kind") for e in r.get("escapes", ())}
        counts["out_of_reach"] += bool(kinds)
        for kind in ESCAPE_KINDS:
            counts[kind] += kind in kinds
    return counts


def server_copy_present(store: object, user: str, message_id: str) -> bool:
    """Whether the user's mailbox (any folder) still holds the message, via the store's public API
    (`MailStore.find_by_message_id`, e.g. `lab.store(domain)`)."""
    return bool(store.find_by_message_id(user, message_id))  # type: ignore[attr-defined]
