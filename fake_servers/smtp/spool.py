"""A spool: queue entries (a JSON envelope plus the message bytes), in memory or one file each in a directory.

Why: "what the server answered 250 for is never lost". With a Maildir store the relay queue and the held
deliveries live in a directory next to the mail, each entry written to a temporary file, fsync'd and renamed into
place before the SMTP client hears 250, so a restart finds exactly the entries not yet done. With the memory
store nothing survives a restart anyway, and the spool is a dict.

File format: one line of JSON (the envelope), "\n", then the raw message.

A crash between writing an entry's temporary file (`.<id>.msg.tmp`) and renaming it leaves the temporary
behind; `load()` removes those. Safe: an entry is acknowledged (250) only after its rename, so a temporary holds
nothing anyone was promised; and the spool belongs to one domain server, whose store lock (the lab opens the
store before the spool) keeps any other process from writing here.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from recall_lab.fake_servers.durable import sync_dir

log = logging.getLogger(__name__)

SUFFIX = ".msg"
TMP_SUFFIX = ".tmp"


class Spool:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self._entries: dict[str, tuple[dict[str, Any], bytes]] = {}
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    @property
    def durable(self) -> bool:
        return self.directory is not None

    def _path(self, entry_id: str) -> Path:
        assert self.directory is not None
        if "/" in entry_id or entry_id.startswith("."):
            raise ValueError(f"bad spool entry id {entry_id!r}")
        return self.directory / f"{entry_id}{SUFFIX}"

    def put(self, entry_id: str, record: dict[str, Any], raw: bytes) -> None:
        """Store (or replace) an entry; on disk it is durable when this returns."""
        self._entries[entry_id] = (record, raw)
        if self.directory is None:
            return
        path = self._path(entry_id)
        tmp = path.with_name(f".{path.name}{TMP_SUFFIX}")
        data = json.dumps(record, separators=(",", ":")).encode() + b"\n" + raw
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        sync_dir(self.directory)

    def update(self, entry_id: str, record: dict[str, Any]) -> None:
        """Rewrite an entry's envelope (remaining recipients, attempts), keeping its bytes."""
        _, raw = self._entries[entry_id]
        self.put(entry_id, record, raw)

    def remove(self, entry_id: str) -> None:
        self._entries.pop(entry_id, None)
        if self.directory is not None:
            try:
                self._path(entry_id).unlink()
            except FileNotFoundError:
                pass

    def get(self, entry_id: str) -> tuple[dict[str, Any], bytes]:
        return self._entries[entry_id]

    def __contains__(self, entry_id: str) -> bool:
        return entry_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def ids(self) -> list[str]:
        return list(self._entries)

    def load(self) -> list[tuple[str, dict[str, Any], bytes]]:
        """Read every entry from the directory (after a restart); unreadable files are logged and kept aside."""
        if self.directory is None:
            return [(k, r, raw) for k, (r, raw) in self._entries.items()]
        self._remove_temporaries()
        out = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            entry_id = path.name[: -len(SUFFIX)]
            try:
                data = path.read_bytes()
                head, _, raw = data.partition(b"\n")
                record = json.loads(head)
            except (OSError, ValueError):
                log.error("spool entry %s is unreadable; moved aside", path)
                path.rename(path.with_suffix(".bad"))
                continue
            self._entries[entry_id] = (record, raw)
            out.append((entry_id, record, raw))
        return out

    def _remove_temporaries(self) -> None:
        """Entries a crash cut short before their rename (see the module docstring for why that is safe)."""
        assert self.directory is not None
        removed = 0
        for path in self.directory.glob(f".*{SUFFIX}{TMP_SUFFIX}"):
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot remove unfinished spool entry %s: %s", path, exc.strerror or exc)
        if removed:
            log.info("removed %d unfinished spool entries (never acknowledged) in %s", removed, self.directory)
