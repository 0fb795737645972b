"""Protocol transcripts: timestamped lines of what client and server said, in both directions.

Why: the demo and the recall reports show the protocol lines that matter (the Message-ID, the EXPUNGE the
desktop client received). IMAP and SMTP sessions record into the same form, off by default:

    2026-11-24T06:40:01.123456Z imap#3 C: a1 SELECT INBOX
    2026-11-24T06:40:01.123789Z imap#3 S: * 3 EXISTS

Literals and DATA bodies longer than `max_literal` octets are abbreviated to `<N octets>`, so a transcript
stays readable and small. Passwords in LOGIN / AUTHENTICATE / AUTH lines are masked.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TextIO

Direction = Literal["C", "S"]

_LOGIN = re.compile(rb"^(\S+ LOGIN \S+ )(.*)$", re.IGNORECASE)
_AUTH_DATA = re.compile(rb"^(\S+ AUTHENTICATE \S+ )(\S+)$", re.IGNORECASE)
_SMTP_AUTH = re.compile(rb"^(AUTH \S+ )(\S+)$", re.IGNORECASE)


@dataclass(slots=True)
class TranscriptLine:
    at: datetime
    session: str
    direction: Direction
    text: str

    def __str__(self) -> str:
        stamp = self.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return f"{stamp} {self.session} {self.direction}: {self.text}"


def _mask(data: bytes) -> bytes:
    for pattern in (_LOGIN, _AUTH_DATA, _SMTP_AUTH):
        m = pattern.match(data)
        if m:
            return m.group(1) + b"********"
    return data


def render(data: bytes, max_literal: int = 200) -> list[str]:
    """Turn raw protocol bytes into display lines (CRLF split, masked, long blocks abbreviated)."""
    if len(data) > max_literal and data.count(b"\n") > 3:
        return [f"<{len(data)} octets>"]
    lines = data.split(b"\r\n") if b"\r\n" in data else data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [_mask(line).decode("utf-8", "replace") for line in lines] or [""]


@dataclass
class TranscriptRecorder:
    """Collects the lines of any number of sessions; optionally mirrors them to a file or a callback.

    Thread-safe: a blocking lab runs its servers in a thread while the caller reads lines.
    """

    max_literal: int = 200
    path: Path | None = None
    sink: Callable[[TranscriptLine], None] | None = None
    lines: list[TranscriptLine] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _file: TextIO | None = field(default=None, repr=False)
    _counter: int = field(default=0, repr=False)

    def new_session(self, kind: str) -> str:
        """A fresh session label such as "imap#3"."""
        with self._lock:
            self._counter += 1
            return f"{kind}#{self._counter}"

    def record(self, session: str, direction: Direction, data: bytes) -> None:
        now = datetime.now(UTC)
        new = [TranscriptLine(now, session, direction, text) for text in render(data, self.max_literal)]
        with self._lock:
            self.lines.extend(new)
            if self.path is not None:
                if self._file is None:
                    self._file = self.path.open("a", encoding="utf-8")
                for line in new:
                    self._file.write(f"{line}\n")
                self._file.flush()
        if self.sink is not None:
            for line in new:
                self.sink(line)

    def text(self) -> str:
        with self._lock:
            return "".join(f"{line}\n" for line in self.lines)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
