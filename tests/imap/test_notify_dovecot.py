"""NOTIFY without a SELECTED group against the reference: the same exchange with a private Dovecot and here.

Why: RFC 5465 3.1 makes a NOTIFY SET without SELECTED / SELECTED-DELAYED mean "SELECTED NONE": no message
events for the selected mailbox, even when a MAILBOXES group names it. A watcher sets such a NOTIFY, selects
INBOX and idles while another connection appends to INBOX, flags and expunges there, then appends to Trash;
the watcher must hear only Trash's STATUS, neither during IDLE nor at the NOOP and CHECK that follow. The Trash
append comes last so that its STATUS line is the event the Dovecot side waits for (Dovecot pushes after a
short delay, a batch of changes at a time): anything about INBOX would have come by then.

Where the two differ on purpose (docs/imap.md, NOTIFY): Dovecot renumbers its view silently (a later FETCH
1:* shows the messages of the moment without an EXISTS or EXPUNGE having been sent); this server keeps the
numbers the client knows and tells what it held back at the next NOTIFY. That part is not compared.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.store.memory import MemoryStore
from recall_lab.harness.dovecot import DovecotServer, DovecotUnavailable, dovecot_binary

from .sansio import Client

pytestmark = pytest.mark.peer("dovecot")

USER, PASSWORD = "nfy@corp.example", "pw"
NOTIFY = "NOTIFY SET (mailboxes (INBOX Trash) (MessageNew MessageExpunge FlagChange))"
_MESSAGE_LINES = re.compile(rb"^\* (\d+ (EXISTS|EXPUNGE|FETCH|RECENT)|VANISHED)", re.M)


def _message(n: int) -> bytes:
    return f"Message-ID: <nfy-{n}@corp.example>\r\nSubject: m{n}\r\n\r\nbody {n}\r\n".encode()


def _append(mailbox: str, n: int) -> str:
    raw = _message(n)
    return f"APPEND {mailbox} {{{len(raw)}+}}\r\n{raw.decode()}"


#: What the other connection does while the watcher idles (INBOX holds 3 messages when it starts).
CHANGES = [_append("INBOX", 10), "SELECT INBOX", "STORE 1 +FLAGS (\\Flagged)", "STORE 2 +FLAGS (\\Deleted)",
           "EXPUNGE", _append("Trash", 11)]


def _unsolicited(out: bytes) -> list[bytes]:
    """The watcher's lines about the selected mailbox and its STATUS lines (values dropped: they differ)."""
    lines = [m.group(0) for m in _MESSAGE_LINES.finditer(out)]
    lines += [b"* STATUS " + name for name in re.findall(rb"^\* STATUS (\S+) \(", out, re.M)]
    return lines


class _Sock:
    """A line reader over a socket (imaplib has no IDLE; a timeout only guards against a hang)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.line()
        self.command("l", f'LOGIN "{USER}" "{PASSWORD}"')

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(self.buf)
            self.buf += data
        i = self.buf.index(b"\n") + 1
        line, self.buf = self.buf[:i], self.buf[i:]
        return line

    def until(self, prefix: bytes) -> bytes:
        out = b""
        while not (line := self.line()).startswith(prefix):
            out += line
        return out + line

    def command(self, tag: str, text: str) -> bytes:
        self.sock.sendall(f"{tag} {text}\r\n".encode())
        out = self.until(tag.encode() + b" ")
        assert re.search(rb"^" + tag.encode() + rb" OK", out, re.M), (text, out)
        return out


def theirs(dovecot: DovecotServer) -> bytes:
    watcher, other = _Sock(dovecot.port), _Sock(dovecot.port)
    try:
        for n in range(3):
            other.command("a", _append("INBOX", n))
        watcher.command("n", NOTIFY)
        watcher.command("s", "SELECT INBOX")
        watcher.sock.sendall(b"i IDLE\r\n")
        assert watcher.line().startswith(b"+ ")
        for n, command in enumerate(CHANGES):
            other.command(f"c{n}", command)
        out = watcher.until(b"* STATUS Trash ")
        watcher.sock.sendall(b"DONE\r\n")
        out += watcher.until(b"i ")
        out += watcher.command("x", "NOOP") + watcher.command("y", "CHECK")
        return out
    finally:
        watcher.sock.close()
        other.sock.close()


def ours() -> bytes:
    store = MemoryStore()
    store.ensure_user(USER)
    accounts = Accounts({USER: PASSWORD})
    watcher, other = Client(store, accounts), Client(store, accounts)
    watcher.login(USER, PASSWORD)
    other.login(USER, PASSWORD)
    for n in range(3):
        assert b"a OK" in other.send("a " + _append("INBOX", n) + "\r\n")
    assert b"n OK" in watcher.send("n " + NOTIFY)
    watcher.send("s SELECT INBOX")
    out = watcher.send("i IDLE")
    assert out.startswith(b"+ ")
    for n, command in enumerate(CHANGES):
        assert f"c{n} OK".encode() in other.send(f"c{n} {command}\r\n")
    out = watcher.take() + watcher.send("DONE") + watcher.send("x NOOP") + watcher.send("y CHECK")
    assert out.endswith(b"\r\n") and b"\r\ny OK " in out, out
    return out


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    if dovecot_binary() is None:
        pytest.skip("Dovecot is not installed")
    try:
        server = DovecotServer(Path(tmp_path_factory.mktemp("dovecot-notify")), {USER: PASSWORD}).start()
    except DovecotUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


def test_no_message_events_for_the_selected_mailbox_as_dovecot(dovecot: DovecotServer) -> None:
    expected = [b"* STATUS Trash"]
    assert _unsolicited(theirs(dovecot)) == expected  # the reference behaves as this test assumes
    assert _unsolicited(ours()) == expected
