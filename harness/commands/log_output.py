"""What the commands write for people and programs besides their result: `serve -v`'s event log, and consoles
that do not hard-wrap when stdout is a pipe or a file.

Why the event log is built on the lab's timeline and the connection guard, not on log records: the timeline
(`harness/web/timeline.py`) already merges what the servers did (a relay hop, a recall honoured or refused, a
notice) with what changed in the mailboxes (a message stored, read, expunged), each entry a flat dict with
`at`, `kind` and `domain`; the guard sees every connection of every listener as it is admitted and released.
Parsing the servers' log lines would tie a stable output to wording that is free to change.

Why a queue and a thread: the timeline's and the guard's listeners run on the lab's event loop. A write to a
stderr that nobody reads (a full pipe) blocks; done on the loop it would stall every server of the lab. So the
loop only puts the entry on a bounded queue (dropping it, and counting, when the queue is full); a thread of
its own formats and writes, and says how many lines were dropped before the next one it can write.

Why wide consoles for pipes: rich wraps at 80 columns when it cannot ask a terminal, so a condition label, a
URL or a table row piped into a file or `grep` was cut mid-phrase. `output_console` does not wrap text there and
lays tables out at their natural width.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import IO, Any

from rich.console import Console

#: Lines waiting for a slow stderr; beyond this they are dropped (and counted).
QUEUE_LINES = 10_000
#: Seconds `EventLog.close` waits for the writer to empty the queue (a stderr nobody reads never empties it).
CLOSE_WAIT = 2.0
#: Columns for a console that is not a terminal: tables take their natural width up to this; text is not wrapped.
PIPE_WIDTH = 1000
#: Width of a rule (a heading line) on such a console, which would otherwise span PIPE_WIDTH.
PIPE_RULE_WIDTH = 100

#: The loggers `-vv` shows: the lab's own servers and aiosmtpd's.
SERVER_LOGGERS = ("recall_lab", "mail.log")


class LogFormat(StrEnum):
    """`--log-format`: lines for people, or one JSON object a line."""

    text = "text"
    json = "json"


class _PipeConsole(Console):
    """A console for a pipe or a file: no wrapping, and rules of a readable width."""

    def rule(self, title: Any = "", *, characters: str = "─", style: Any = "rule.line",
             align: Any = "center") -> None:
        from rich.rule import Rule
        from rich.text import Text

        label = Text.from_markup(title) if isinstance(title, str) else title
        wide = max(PIPE_RULE_WIDTH, getattr(label, "cell_len", 0) + 6)  # a long title is not cut either
        self.print(Rule(title=title, characters=characters, style=style, align=align),
                   width=min(self.width, wide))


def output_console(*, stderr: bool = False, highlight: bool = False) -> Console:
    """The console a command prints to: as rich chooses on a terminal; on a pipe or file, lines unwrapped and
    tables at their natural width (see the module docstring)."""
    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return Console(stderr=stderr, highlight=highlight)
    return _PipeConsole(stderr=stderr, highlight=highlight, width=PIPE_WIDTH, soft_wrap=True)


# -- the event log ------------------------------------------------------------------------------------------------
_STOP = object()


def _clock(at: str) -> str:
    """An entry's ISO time as local time of day with milliseconds, for the text format."""
    try:
        return datetime.fromisoformat(at).astimezone().strftime("%H:%M:%S.%f")[:-3]
    except (TypeError, ValueError):
        return str(at)


def connection_entry(event: str, ticket: Any, open_now: int) -> dict[str, Any]:
    """The log entry of a guard's connection event (`opened`, `closed`, `refused`)."""
    domain, _, listener = str(ticket.where).partition(" ")
    return {"at": datetime.now(UTC).isoformat(), "kind": f"connection-{event}", "domain": domain,
            "listener": listener or domain, "peer": ticket.peer, "local": ticket.local, "connection": ticket.number,
            "open": open_now}


def format_entry(entry: dict[str, Any], fmt: LogFormat) -> str:
    """One line: a JSON object whose first keys are always `at`, `kind`, `domain`; or text for people."""
    if fmt is LogFormat.json:
        ordered = {"at": entry.get("at", ""), "kind": entry.get("kind", ""), "domain": entry.get("domain", "")}
        ordered.update((k, v) for k, v in entry.items() if k not in ordered)
        return json.dumps(ordered, default=str, ensure_ascii=False)
    kind = str(entry.get("kind", ""))
    if kind.startswith("connection-"):
        text = (f"{entry['listener']} {kind.removeprefix('connection-')} {entry['peer']}"
                f"{' at ' + entry['local'] if entry.get('local') else ''} (#{entry['connection']}, "
                f"{entry['open']} open)")
    elif kind == "log":
        text = f"{entry.get('level', '')} {entry.get('logger', '')}: {entry.get('message', '')}"
    else:
        text = str(entry.get("text") or kind)
    return f"{_clock(str(entry.get('at', '')))} {kind:<18} {entry.get('domain') or '-':<14} {text}"


class _ServerLogHandler(logging.Handler):
    """The servers' own log records (-vv), as entries of kind `log` on the same queue."""

    def __init__(self, put: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(logging.INFO)
        self._put = put

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[0] is not None:
                message += " (" + " ".join(logging.Formatter().formatException(record.exc_info).split()) + ")"
            self._put({"at": datetime.fromtimestamp(record.created, UTC).isoformat(), "kind": "log",
                       "domain": "", "level": record.levelname.lower(), "logger": record.name, "message": message})
        except Exception:  # noqa: BLE001 - logging's own rule: a handler never raises into the caller
            self.handleError(record)


class EventLog:
    """`serve -v`: one line per timeline entry and connection, written to `stream` by a thread of its own.

    `verbosity` 1: events; 2: also the servers' own log (INFO and up). Use `attach(lab)` once it started and
    `close()` when it stopped (what the lab did while stopping is still written)."""

    def __init__(self, stream: IO[str] | None = None, fmt: LogFormat = LogFormat.text, verbosity: int = 1,
                 queue_lines: int = QUEUE_LINES) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.fmt = fmt
        self.verbosity = verbosity
        self.dropped = 0  # lines dropped in all
        self._unreported = 0  # dropped since the writer last said so
        self._lock = threading.Lock()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, queue_lines))
        self._writer = threading.Thread(target=self._write_loop, name="recall-lab-event-log", daemon=True)
        self._timeline: Any = None
        self._own_timeline = False
        self._guards: list[Any] = []
        self._handler: _ServerLogHandler | None = None
        self._levels: dict[str, int] = {}
        self._started = False

    # -- producers (the lab's loop) ----------------------------------------------------------------------------
    def put(self, entry: dict[str, Any]) -> None:
        """Queue one entry; never blocks (a full queue drops it and counts)."""
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            with self._lock:
                self.dropped += 1
                self._unreported += 1

    def _on_entry(self, entry: dict[str, Any]) -> None:
        self.put(entry)

    def _on_connection(self, event: str, ticket: Any, guard: Any) -> None:
        self.put(connection_entry(event, ticket, guard.connections))

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer (and, at verbosity 2, take the servers' log); `attach` calls it."""
        if self._started:
            return
        self._started = True
        self._writer.start()
        if self.verbosity >= 2:
            self._handler = _ServerLogHandler(self.put)
            for name in SERVER_LOGGERS:
                logger = logging.getLogger(name)
                self._levels[name] = logger.level
                if logger.getEffectiveLevel() > logging.INFO:
                    logger.setLevel(logging.INFO)
                logger.addHandler(self._handler)

    def attach(self, lab: Any) -> None:
        """Follow a started lab: its web server's timeline when it has one, else a timeline of our own, and the
        connection guard of each of its domains (one guard is shared by a lab's listeners, the capture's too)."""
        from recall_lab.harness.web.timeline import Timeline

        self.start()
        web = getattr(lab, "web", None)
        timeline = getattr(web, "timeline", None) if web is not None else None
        if timeline is None or not timeline.running:
            timeline = Timeline(lab)
            timeline.start()
            self._own_timeline = True
        timeline.subscribe(self._on_entry)
        self._timeline = timeline
        for domain in lab.domains:
            guard = lab.server(domain).guard
            if all(guard is not g for g, _ in self._guards):
                def watcher(event: str, ticket: Any, guard: Any = guard) -> None:
                    self._on_connection(event, ticket, guard)

                guard.watch(watcher)
                self._guards.append((guard, watcher))

    def detach(self) -> None:
        """Stop following the lab (the writer keeps writing what is queued)."""
        timeline, self._timeline = self._timeline, None
        if timeline is not None:
            timeline.unsubscribe(self._on_entry)
            if self._own_timeline:
                timeline.stop()
        for guard, watcher in self._guards:
            guard.unwatch(watcher)
        self._guards.clear()

    def close(self, wait: float = CLOSE_WAIT) -> None:
        """Detach, give the servers' log back, and let the writer finish within `wait` seconds."""
        self.detach()
        if self._handler is not None:
            for name, level in self._levels.items():
                logger = logging.getLogger(name)
                logger.removeHandler(self._handler)
                logger.setLevel(level)
            self._handler = None
        if not self._started:
            return
        try:
            self._queue.put(_STOP, timeout=wait)
        except queue.Full:  # the stream is stuck: the daemon thread is left behind, the process may exit
            return
        self._writer.join(wait)

    # -- the writer thread ---------------------------------------------------------------------------------
    def _dropped_line(self) -> list[str]:
        """The line saying how many were dropped since the last such line (none when nothing was)."""
        with self._lock:
            dropped, self._unreported = self._unreported, 0
        if not dropped:
            return []
        return [format_entry({"at": datetime.now(UTC).isoformat(), "kind": "dropped", "domain": "",
                              "count": dropped, "text": f"{dropped} lines dropped: the output was too slow"},
                             self.fmt)]

    def _write_loop(self) -> None:
        broken = False
        while True:
            item = self._queue.get()
            if broken:
                if item is _STOP:
                    break
                continue  # the stream is gone (a closed pipe): keep emptying the queue, write nothing
            lines = self._dropped_line()
            if item is not _STOP:
                try:
                    lines.append(format_entry(item, self.fmt))  # type: ignore[arg-type]
                except Exception as exc:  # noqa: BLE001 - one odd entry must not end the log
                    lines.append(f"(an entry could not be written: {exc})")
            if not lines:
                break
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                broken = True
            if item is _STOP:
                break


__all__ = ["EventLog", "LogFormat", "PIPE_WIDTH", "connection_entry", "format_entry", "output_console"]
