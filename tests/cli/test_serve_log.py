"""`recall-lab serve -v` / `--log-format json`: one line per connection, delivery, relay hop, recall, expunge and
report on stderr, stdout still the one JSON line; and the event log's parts (bounded queue, formats, the guard's
connection watch, -vv's server log) on their own.
"""

from __future__ import annotations

import io
import json
import logging
import queue
import signal
import smtplib
import subprocess
import sys
import threading
import time
from email.message import EmailMessage
from email.utils import make_msgid

from recall_lab.fake_servers.guard import ConnectionGuard, GuardLimits
from recall_lab.harness.commands.log_output import EventLog, LogFormat, connection_entry, format_entry

# Not `-m recall_lab.harness.cli`: run as __main__, its CliError would be a different class from the one commands raise.
CLI = [sys.executable, "-c", "from recall_lab.harness.cli import main; main()"]


class _Lines:
    """A subprocess stream read by a thread: `wait_for(pred)` blocks on each line as it arrives (no polling)."""

    def __init__(self, stream: io.TextIOBase) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: io.TextIOBase) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pred, timeout: float = 20.0) -> dict:
        """The first entry, seen before or arriving now, for which `pred` holds (events of two domains may come
        in either order)."""
        for line in self.lines:
            if pred(json.loads(line)):
                return json.loads(line)
        deadline = time.monotonic() + timeout
        while True:
            line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            assert line is not None, "stderr ended:\n" + "".join(self.lines)
            self.lines.append(line)
            entry = json.loads(line)
            if pred(entry):
                return entry

    def rest(self) -> list[str]:
        """Every line, once the stream ended (the process exited)."""
        self._thread.join(20)
        while (line := self._queue.get_nowait()) is not None:
            self.lines.append(line)
        return self.lines


def test_serve_json_log_names_every_step_of_a_message_and_its_recall(tmp_path):
    endpoints = tmp_path / "lab.json"
    proc = subprocess.Popen([*CLI, "serve", "--json", "--no-web", "--log-format", "json", "--endpoints-file",
                             str(endpoints)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        data = json.loads(proc.stdout.readline())
        err = _Lines(proc.stderr)
        corp = data["domains"]["corp.example"]
        msg = EmailMessage()
        msg["From"], msg["To"] = "alice@corp.example", "bob@corp.example, dave@mail.example"
        msg["Subject"], msg["Message-ID"] = "Quarterly figures", make_msgid(domain="corp.example")
        msg.set_content("wrong figures")
        with smtplib.SMTP(corp["submission"]["host"], corp["submission"]["port"], local_hostname="localhost",
                          timeout=10) as smtp:
            smtp.login("alice@corp.example", "alice-password")
            smtp.send_message(msg)
        opened = err.wait_for(lambda e: e["kind"] == "connection-opened" and e["listener"] == "submission")
        assert opened["domain"] == "corp.example" and opened["peer"].startswith("127.0.0.1:")
        assert opened["local"] == f"127.0.0.1:{corp['submission']['port']}"
        err.wait_for(lambda e: e["kind"] == "relayed" and e["domain"] == "corp.example")
        err.wait_for(lambda e: e["kind"] == "stored" and e["domain"] == "mail.example" and e["user"] == "dave@mail.example")

        recall = subprocess.run([*CLI, "recall", "--endpoints", str(endpoints), "--user", "alice@corp.example",
                                 "--message-id", msg["Message-ID"], "--json"], capture_output=True, text=True,
                                timeout=60)
        assert recall.returncode == 0, recall.stderr
        err.wait_for(lambda e: e["kind"] == "recall-honoured" and e["original"] == msg["Message-ID"])
        err.wait_for(lambda e: e["kind"] == "expunged" and e["user"] == "bob@corp.example")
        err.wait_for(lambda e: e["kind"] == "stored" and e.get("message_kind") == "report"
                     and e["user"] == "alice@corp.example")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert proc.stdout.read() == ""  # stdout held the endpoints line only (read above)
        entries = [json.loads(line) for line in err.rest()]
        assert all(list(e)[:3] == ["at", "kind", "domain"] for e in entries)
        closed = [e for e in entries if e["kind"] == "connection-closed"]
        assert opened["connection"] in {e["connection"] for e in closed}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_serve_verbose_text_lines_are_for_people(tmp_path):
    proc = subprocess.Popen([*CLI, "serve", "--json", "--no-web", "-v"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        data = json.loads(proc.stdout.readline())
        imap = data["domains"]["mail.example"]["imap"]
        import imaplib

        with imaplib.IMAP4(imap["host"], imap["port"], timeout=10) as client:
            client.login("dave@mail.example", "dave-password")
            client.logout()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        lines = [line for line in err.splitlines() if "connection-" in line]
        assert any("mail.example" in line and "IMAP opened 127.0.0.1:" in line for line in lines), err
        assert any("IMAP closed" in line for line in lines), err
        assert not any(line.lstrip().startswith("{") for line in err.splitlines())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


class _StuckStream(io.StringIO):
    """A stderr nobody reads: the first write blocks until released."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, s: str) -> int:
        self.entered.set()
        assert self.release.wait(20)
        return super().write(s)


def test_a_stuck_stream_never_blocks_the_producer_and_the_drops_are_counted():
    stream = _StuckStream()
    log = EventLog(stream, LogFormat.json, queue_lines=5)
    log.start()
    entry = {"at": "2024-01-01T00:00:00+00:00", "kind": "stored", "domain": "corp.example", "text": "x"}
    log.put(dict(entry, n=0))
    assert stream.entered.wait(10)  # the writer holds entry 0 and is stuck in write()
    producer = threading.Thread(target=lambda: [log.put(dict(entry, n=i)) for i in range(1, 21)])
    producer.start()
    producer.join(10)
    assert not producer.is_alive() and not stream.release.is_set()  # 20 puts done while the stream is stuck
    assert log.dropped == 15  # 5 queued behind entry 0, the other 15 dropped
    stream.release.set()
    log.close()
    objects = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [o.get("n") for o in objects if o["kind"] == "stored"] == [0, 1, 2, 3, 4, 5]
    assert [o["count"] for o in objects if o["kind"] == "dropped"] == [15]


def test_a_closed_stream_ends_the_output_not_the_lab():
    stream = io.StringIO()
    stream.close()
    log = EventLog(stream)
    log.start()
    log.put({"at": "", "kind": "stored", "domain": "x", "text": "y"})
    log.close()  # no exception, and the writer ended
    assert not log._writer.is_alive()


def test_formats_json_keys_first_and_text_columns():
    entry = {"seq": 3, "text": "relay hop", "kind": "relayed", "domain": "corp.example",
             "at": "2024-05-01T10:00:00.123456+00:00", "dest": "mail.example"}
    obj = json.loads(format_entry(entry, LogFormat.json))
    assert list(obj)[:3] == ["at", "kind", "domain"] and obj["dest"] == "mail.example"
    text = format_entry(entry, LogFormat.text)
    assert text.split()[1:4] == ["relayed", "corp.example", "relay"] and text.endswith("relay hop")


def test_the_guard_tells_watchers_of_each_connection_and_refusal():
    guard = ConnectionGuard(GuardLimits(max_connections=1))
    seen: list[tuple[str, dict]] = []
    guard.watch(lambda event, ticket: seen.append((event, connection_entry(event, ticket, guard.connections))))
    first = guard.admit("127.0.0.1", "corp.example IMAP", peer="127.0.0.1:5000", local="127.0.0.1:143")
    refused = guard.admit("127.0.0.1", "corp.example mx", peer="127.0.0.1:5001")
    assert refused.ticket is None
    guard.release(first.ticket)
    guard.release(first.ticket)  # idempotent: told once
    assert [(e, d["kind"], d["listener"], d["peer"], d["open"]) for e, d in seen] == [
        ("opened", "connection-opened", "IMAP", "127.0.0.1:5000", 1),
        ("refused", "connection-refused", "mx", "127.0.0.1:5001", 1),
        ("closed", "connection-closed", "IMAP", "127.0.0.1:5000", 0)]
    assert seen[0][1]["domain"] == "corp.example" and seen[0][1]["connection"] == seen[2][1]["connection"]


def test_verbose_twice_adds_the_servers_log_and_gives_it_back():
    stream = io.StringIO()
    logger = logging.getLogger("recall_lab.fake_servers.imap")
    before = logging.getLogger("recall_lab").handlers[:]
    log = EventLog(stream, LogFormat.json, verbosity=2)
    log.start()
    logger.info("IMAP %s: client closed the connection", "127.0.0.1:5000")
    log.close()
    (obj,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert obj["kind"] == "log" and obj["level"] == "info" and obj["logger"] == "recall_lab.fake_servers.imap"
    assert obj["message"] == "IMAP 127.0.0.1:5000: client closed the connection"
    assert logging.getLogger("recall_lab").handlers == before
