"""Reading and changing a client-side Maildir the way a user's mail program would (flags live in file names)."""

from __future__ import annotations

from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

#: Maildir info flags (the letters after ":2,") and the IMAP flags they stand for.
MAILDIR_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}


def messages(folder: Path) -> dict[str, Path]:
    """Subject -> file of every message in a Maildir folder (new/ and cur/)."""
    found = {}
    for sub in ("new", "cur"):
        for path in sorted((folder / sub).glob("*")):
            if path.is_file():
                msg = message_from_bytes(path.read_bytes(), policy=default_policy)
                found[str(msg["Subject"])] = path
    return found


def flags_of(path: Path) -> set[str]:
    _, _, info = path.name.partition(":2,")
    return {MAILDIR_FLAGS[c] for c in info if c in MAILDIR_FLAGS}


def set_flags(path: Path, flags: set[str]) -> Path:
    """Rename a message file so its info part carries exactly `flags` (moving it to cur/); the new path."""
    letters = "".join(sorted(c for c, flag in MAILDIR_FLAGS.items() if flag in flags))
    base = path.name.partition(":2,")[0]
    target = path.parent.parent / "cur" / f"{base}:2,{letters}"
    path.rename(target)
    return target


def deliver(folder: Path, name: str, raw: bytes) -> Path:
    """Put a new message into a Maildir folder (tmp/ then new/, as Maildir requires)."""
    tmp = folder / "tmp" / name
    tmp.write_bytes(raw)
    target = folder / "new" / name
    tmp.rename(target)
    return target
