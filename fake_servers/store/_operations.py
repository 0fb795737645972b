"""Write-ahead records of changes that span many mailboxes, kept by the store until their author ends them.

Why: a cloud recall removes a message from many recipients' mailboxes and then files a report for the sender;
a crash can cut that anywhere, leaving some copies removed and others not, and no report. The author writes
what it decided (with all it needs to finish) here BEFORE its first step and ends the record after its last;
when the store opens again, an unfinished record is still there and its author finishes the job (steps made
idempotent with the Message-ID index). Why in the store: a policy reaches durable state only through the store
API, and the store's directory lock already proves that one process owns these records.

Records are JSON objects (checked on the way in, on both stores alike). On disk each is one file,
`<root>/.recall-lab-operations/<id>.json`, written to a temporary name, fsync'd and renamed, so a record is
either wholly there or not at all; a temporary left by a crash was never begun and is removed at open.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recall_lab.fake_servers.durable import sync_dir
from recall_lab.fake_servers.store.base import StoreError

log = logging.getLogger(__name__)

#: Under the store's root; the leading dot keeps it apart from user homes (no user name starts with one).
DIRECTORY = ".recall-lab-operations"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}")
#: A bound on one record: what an operation needs to finish is small (ids, addresses, a report).
MAX_RECORD = 4 * 1024 * 1024


def _checked(op_id: str, record: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
    if not isinstance(op_id, str) or not _ID.fullmatch(op_id):
        raise StoreError(f"Invalid operation id: {op_id!r}")
    try:
        data = json.dumps(dict(record), separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise StoreError(f"Operation record is not JSON: {exc}") from None
    if len(data) > MAX_RECORD:
        raise StoreError(f"Operation record too large ({len(data)} bytes)")
    return json.loads(data), data


class Operations:
    """The records in memory (the memory store's, and the disk version's cache)."""

    def __init__(self) -> None:
        self._records: dict[str, dict[str, Any]] = {}

    def begin(self, op_id: str, record: Mapping[str, Any]) -> None:
        value, data = _checked(op_id, record)
        self._write(op_id, data)
        self._records[op_id] = value

    def end(self, op_id: str) -> None:
        if op_id in self._records:
            self._remove(op_id)
            del self._records[op_id]

    def unfinished(self) -> dict[str, dict[str, Any]]:
        return {op_id: json.loads(json.dumps(rec)) for op_id, rec in sorted(self._records.items())}

    def _write(self, op_id: str, data: bytes) -> None:
        pass

    def _remove(self, op_id: str) -> None:
        pass


class DiskOperations(Operations):
    """One durable file per record under `directory` (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        try:
            directory.mkdir(exist_ok=True)
            names = sorted(os.listdir(directory))
        except OSError as exc:
            raise StoreError(f"Mail storage error: {exc.strerror or exc}") from exc
        for name in names:
            path = directory / name
            if name.startswith(".") and name.endswith(".tmp"):
                path.unlink(missing_ok=True)  # never renamed into place: that operation never began
                continue
            if not name.endswith(".json"):
                continue
            try:
                value, _ = _checked(name[:-5], json.loads(path.read_bytes()))
            except (OSError, ValueError, StoreError):
                log.error("operation record %s is unreadable; moved aside", path)
                path.rename(path.with_suffix(".bad"))
                continue
            self._records[name[:-5]] = value

    def _write(self, op_id: str, data: bytes) -> None:
        path = self.directory / f"{op_id}.json"
        tmp = self.directory / f".{op_id}.json.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            sync_dir(self.directory)
        except OSError as exc:
            raise StoreError(f"Mail storage error: {exc.strerror or exc}") from exc

    def _remove(self, op_id: str) -> None:
        try:
            (self.directory / f"{op_id}.json").unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"Mail storage error: {exc.strerror or exc}") from exc
