"""The desktop client's local copy of the mailbox (an Outlook .ost in miniature): in memory or in SQLite.

Why it matters for recall: what a cached-mode client shows comes from here, not from the server. A message
expunged on the server stays visible until the client hears of it (a push while online, a resync after an
offline period) and removes it here. The SQLite form survives a restart of the client, as an .ost does.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path

_HEADERS = BytesHeaderParser(policy=policy.compat32)


def message_id_of(raw: bytes) -> str | None:
    """The Message-ID header of raw message bytes, angle brackets kept, or None."""
    # compat32: the raw header value is all we need, and it parses far faster than policy.default
    headers = _HEADERS.parsebytes(raw)
    value = headers.get("Message-ID")
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def normalise_mid(mid: str) -> str:
    """Message-IDs compare without their angle brackets and surrounding space (as the store does)."""
    return mid.strip().strip("<>").strip()


def search_quoted(mid: str) -> str:
    """A Message-ID as the quoted argument of SEARCH HEADER (brackets kept, so "<a@x>" never matches "<a@x.y>")."""
    core = normalise_mid(mid).replace("\\", "").replace('"', "")
    return f'"<{core}>"'


@dataclass(frozen=True)
class CachedMessage:
    folder: str
    uid: int
    raw: bytes
    flags: frozenset[str]
    message_id: str | None

    @property
    def seen(self) -> bool:
        return "\\Seen" in self.flags


@dataclass
class FolderState:
    """What the client remembers of a folder for the next resync (RFC 7162 QRESYNC parameters)."""

    uidvalidity: int = 0
    highestmodseq: int = 0


class MessageCache:
    """Messages by (folder, uid), plus a Message-ID index; the in-memory form."""

    def __init__(self) -> None:
        self._messages: dict[tuple[str, int], CachedMessage] = {}
        self._by_mid: dict[str, set[tuple[str, int]]] = {}
        self._state: dict[str, FolderState] = {}

    # -- reads --
    def get(self, folder: str, uid: int) -> CachedMessage | None:
        return self._messages.get((folder, uid))

    def uids(self, folder: str) -> list[int]:
        return sorted(uid for (f, uid) in self._messages if f == folder)

    def find(self, message_id: str) -> list[CachedMessage]:
        keys = self._by_mid.get(normalise_mid(message_id), set())
        return sorted((self._messages[k] for k in keys), key=lambda m: (m.folder, m.uid))

    def __contains__(self, message_id: str) -> bool:
        return bool(self._by_mid.get(normalise_mid(message_id)))

    def __len__(self) -> int:
        return len(self._messages)

    def all(self) -> list[CachedMessage]:
        return sorted(self._messages.values(), key=lambda m: (m.folder, m.uid))

    def state(self, folder: str) -> FolderState:
        """A copy: change it and hand it back with `save_state` (so the SQLite form writes it)."""
        old = self._state.get(folder)
        return FolderState(old.uidvalidity, old.highestmodseq) if old else FolderState()

    # -- writes --
    def put(self, message: CachedMessage) -> None:
        key = (message.folder, message.uid)
        self._forget_index(key)
        self._messages[key] = message
        if message.message_id:
            self._by_mid.setdefault(normalise_mid(message.message_id), set()).add(key)

    def set_flags(self, folder: str, uid: int, flags: frozenset[str]) -> bool:
        old = self._messages.get((folder, uid))
        if old is None or old.flags == flags:
            return False
        self.put(CachedMessage(folder, uid, old.raw, flags, old.message_id))
        return True

    def remove(self, folder: str, uid: int) -> bool:
        key = (folder, uid)
        if key not in self._messages:
            return False
        self._forget_index(key)
        del self._messages[key]
        return True

    def clear_folder(self, folder: str) -> list[int]:
        uids = self.uids(folder)
        for uid in uids:
            self.remove(folder, uid)
        return uids

    def save_state(self, folder: str, state: FolderState) -> None:
        self._state[folder] = state

    def close(self) -> None:
        """Nothing to release in memory."""

    def _forget_index(self, key: tuple[str, int]) -> None:
        old = self._messages.get(key)
        if old is not None and old.message_id:
            keys = self._by_mid.get(normalise_mid(old.message_id))
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_mid[normalise_mid(old.message_id)]


class SqliteMessageCache(MessageCache):
    """The same cache, written through to a SQLite file and loaded from it on start."""

    def __init__(self, path: Path | str) -> None:
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS messages (folder TEXT, uid INTEGER, raw BLOB, flags TEXT,
                                                 message_id TEXT, PRIMARY KEY (folder, uid));
            CREATE TABLE IF NOT EXISTS folders (folder TEXT PRIMARY KEY, uidvalidity INTEGER,
                                                highestmodseq INTEGER);
            """
        )
        for folder, uid, raw, flags, mid in self._db.execute("SELECT folder, uid, raw, flags, message_id "
                                                             "FROM messages"):
            super().put(CachedMessage(folder, uid, bytes(raw), frozenset(flags.split()) if flags else frozenset(),
                                      mid))
        for folder, validity, modseq in self._db.execute("SELECT folder, uidvalidity, highestmodseq FROM folders"):
            super().save_state(folder, FolderState(validity, modseq))

    def put(self, message: CachedMessage) -> None:
        super().put(message)
        self._db.execute("INSERT OR REPLACE INTO messages VALUES (?, ?, ?, ?, ?)",
                         (message.folder, message.uid, message.raw, " ".join(sorted(message.flags)),
                          message.message_id))
        self._db.commit()

    def remove(self, folder: str, uid: int) -> bool:
        removed = super().remove(folder, uid)
        if removed:
            self._db.execute("DELETE FROM messages WHERE folder = ? AND uid = ?", (folder, uid))
            self._db.commit()
        return removed

    def save_state(self, folder: str, state: FolderState) -> None:
        super().save_state(folder, state)
        self._db.execute("INSERT OR REPLACE INTO folders VALUES (?, ?, ?)",
                         (folder, state.uidvalidity, state.highestmodseq))
        self._db.commit()

    def close(self) -> None:
        self._db.close()
