"""Sans-I/O: the session stops running commands while its output is over the mark or its time slice is spent,
and resumes them in order, with the same bytes as if it had never stopped.

Why sans-I/O: the order of responses, the EXPUNGE deferral (RFC 3501 7.4.1) and what happens to a command cut
short are properties of the session's state machine; a fake transport and a fake clock make every stop and
every interleaving with another session exact and repeatable.
"""

from __future__ import annotations

import re

import pytest

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap.session import ImapSession, SessionConfig
from recall_lab.fake_servers.store.memory import MemoryStore
from recall_lab.fake_servers.transcript import TranscriptRecorder

from .conftest import ALICE, ALICE_PW, USERS, make_message
from .sansio import Client

KB = 1024


class Tick:
    """A clock that advances `step` seconds each time it is read: a time slice lasts a known number of reads."""

    def __init__(self, step: float = 0.001) -> None:
        self.step = step
        self.now = 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class MarkedIO:
    """A transport with a write buffer the test drains by hand; over `mark` octets it tells the session to pause,
    as asyncio's pause_writing does."""

    def __init__(self, mark: int | None = None) -> None:
        self.mark = mark
        self.buffer = bytearray()  # written, not yet "sent"
        self.sent = bytearray()
        self.closed = False
        self.tls_requested = False
        self.session: ImapSession | None = None
        self.most = 0

    def write(self, data: bytes) -> None:
        self.buffer += data
        self.most = max(self.most, len(self.buffer))
        if self.mark is not None and len(self.buffer) > self.mark and self.session is not None:
            self.session.pause_output()

    def drain(self) -> bytes:
        """The client reads everything; the session may go on."""
        data = bytes(self.buffer)
        self.sent += data
        self.buffer.clear()
        assert self.session is not None
        if self.session.output_paused:
            self.session.resume_output()
        return data

    def close(self) -> None:
        self.closed = True

    def start_tls(self) -> None:
        self.tls_requested = True


def _store(n: int, size: int = 0) -> MemoryStore:
    store = MemoryStore()
    for user in USERS:
        store.ensure_user(user)
    for i in range(1, n + 1):
        body = None if not size else (f"{i:05d} " + "x" * 70 + "\n") * (size // 77 + 1)
        store.deliver(ALICE, make_message(i, body=body))
    return store


def _session(store: MemoryStore, io: MarkedIO, clock=None, time_slice: float | None = None, **config):
    session = ImapSession(store, Accounts(USERS), io, SessionConfig(time_slice=time_slice, **config),
                          **({"clock": clock} if clock is not None else {}))
    io.session = session
    session.greeting()
    return session


def _login_select(session: ImapSession, io: MarkedIO) -> None:
    session.feed(f"l LOGIN {ALICE} {ALICE_PW}\r\ns SELECT INBOX\r\n".encode())
    out = io.drain()
    assert b"s OK [READ-WRITE]" in out, out


def _run_out(session: ImapSession, io: MarkedIO, limit: int = 100000) -> tuple[bytes, int]:
    """Drain and proceed until the session has nothing left: (everything written, number of proceeds)."""
    out = bytearray(io.drain())
    rounds = 0
    while session.backlogged and not session.closed:
        assert rounds < limit, "the session never finished"
        if session.runnable:
            session.proceed()
        out += io.drain()
        rounds += 1
    out += io.drain()
    return bytes(out), rounds


def _normalise(data: bytes) -> bytes:
    return re.sub(rb"(UIDVALIDITY|COPYUID) \d+", rb"\1 N", data)


def test_over_the_mark_the_session_stops_and_resumes_in_order_with_the_same_bytes():
    pipeline = (b"a FETCH 1:* (BODY.PEEK[])\r\nb NOOP\r\nc UID FETCH 3:5 (FLAGS RFC822.SIZE)\r\n"
                b"d FETCH 2 (BODY.PEEK[]<100.70000>)\r\ne LOGOUT\r\nf NOOP\r\n")
    # the same pipeline on a session that never stops: the bytes every stop-and-go must reproduce
    ref_io = MarkedIO()
    ref = _session(_store(12, 200 * KB), ref_io)
    _login_select(ref, ref_io)
    ref.feed(pipeline)
    expected = ref_io.drain()
    assert expected.count(b" FETCH (BODY[] {") == 12 and expected.endswith(b"e OK Logout completed.\r\n")

    mark = 256 * KB
    io = MarkedIO(mark)
    session = _session(_store(12, 200 * KB), io)
    _login_select(session, io)
    session.feed(pipeline)
    # stopped after the piece that crossed the mark: nothing beyond it was built, nothing else answered
    assert session.output_paused and not session.runnable and session.backlogged
    assert b"a OK" not in io.buffer and b"b OK" not in io.buffer
    assert len(io.buffer) <= mark + 64 * KB + 1024
    stops = 0
    got = bytearray()
    while not session.closed:
        got += io.drain()
        assert session.runnable or session.closed
        session.proceed()
        stops += 1
        assert stops < 1000
    got += io.drain()
    assert stops > 5  # 2.4 MB of answers through a 256 KB window
    assert io.most <= mark + 64 * KB + 1024
    assert bytes(got) == expected
    assert b"f OK" not in got and io.closed


@pytest.mark.parametrize("command", [
    "FETCH 1:* (BODY.PEEK[])",
    "UID FETCH 1:* (ENVELOPE FLAGS)",
    "FETCH 1:* (BODY[TEXT])",  # sets \Seen batch by batch, and FLAGS shows it
    "SEARCH TEXT nowhere",
    "UID SEARCH BODY 00040",
    "SORT (REVERSE SUBJECT) UTF-8 ALL",
    "UID SORT (SIZE) UTF-8 ALL",
    "STORE 1:* +FLAGS (\\Flagged)",
    "UID STORE 1:* FLAGS.SILENT ($Hot)",
    "COPY 1:* Trash",
    "UID COPY 1:* Trash",
])
def test_a_long_command_runs_in_time_slices_and_gives_the_same_answer(command: str):
    """With a 5 ms slice on a clock that ticks 1 ms a read, every command over 700 messages must stop (the
    adapter runs the other clients then) and still answer exactly as in one go."""
    pipeline = f"a {command}\r\nb NOOP\r\n".encode()
    ref_io = MarkedIO()
    ref = _session(_store(700, KB), ref_io)
    _login_select(ref, ref_io)
    ref.feed(pipeline)
    expected = ref_io.drain()
    assert b"\r\nb OK NOOP completed.\r\n" in expected

    io = MarkedIO()
    session = _session(_store(700, KB), io, clock=Tick(0.001), time_slice=0.005)
    _login_select(session, io)
    session.feed(pipeline)
    assert session.runnable, "the command ran to its end in one slice"
    assert b"a OK" not in io.buffer and b"b OK" not in io.buffer
    got, rounds = _run_out(session, io)
    assert rounds >= 1
    assert _normalise(got) == _normalise(expected)


def test_a_client_gone_mid_command_drops_it_and_a_cut_copy_is_taken_back():
    store = _store(200, 2 * KB)
    io = MarkedIO()
    session = _session(store, io, clock=Tick(0.001), time_slice=0.005)
    _login_select(session, io)
    trash_before = len(store.messages(ALICE, "Trash"))
    session.feed(b"a COPY 1:* Trash\r\nb FETCH 1:* (BODY.PEEK[])\r\n")
    assert session.runnable
    io.drain()
    assert len(store.messages(ALICE, "Trash")) > trash_before  # some batches were copied
    session.shutdown()  # the connection is gone
    assert not session.backlogged and not session.runnable
    assert len(store.messages(ALICE, "Trash")) == trash_before  # all or nothing (RFC 3501 6.4.7)
    session.proceed()
    assert io.drain() == b""

    io = MarkedIO(64 * KB)
    session = _session(_store(5, 500 * KB), io)
    _login_select(session, io)
    session.feed(b"a FETCH 1:* (BODY.PEEK[])\r\n")
    assert session.output_paused and session.backlogged
    session.shutdown()
    assert not session.backlogged
    session.resume_output()
    session.proceed()
    assert b"a OK" not in io.drain()


def test_no_expunge_during_a_fetch_that_stopped_and_keywords_announced_before_shown():
    store = _store(40, 2 * KB)
    io = MarkedIO()
    session = _session(store, io, clock=Tick(0.001), time_slice=0.005)
    _login_select(session, io)
    other = Client(store, Accounts(USERS))
    other.login()
    other.send("s SELECT INBOX")
    session.feed(b"a FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
    assert session.runnable
    first = io.drain()
    done = first.count(b" FETCH (")
    assert 0 < done < 30
    # between two slices another session expunges one message already answered and one not yet, delivers one
    # more and sets a brand-new keyword on a message still to come
    out = other.send("x STORE 1,35 +FLAGS (\\Deleted)\r\ny EXPUNGE\r\nz STORE 37 +FLAGS ($Urgent)")
    assert b"z OK" in out
    store.deliver(ALICE, make_message(99))
    got, _ = _run_out(session, io)
    tagged = got.index(b"a NO [EXPUNGEISSUED]")
    assert b"EXPUNGE\r\n" not in got[:tagged]  # RFC 3501 7.4.1: not during FETCH
    assert b"* 1 FETCH (FLAGS" in first  # answered before it went
    assert b"* 35 FETCH (" not in got  # its content is gone
    flags_line = got.index(b"* FLAGS (")
    assert b"$Urgent" in got[flags_line:got.index(b"\r\n", flags_line)]
    assert flags_line < got.index(b"* 37 FETCH (FLAGS (") < tagged
    assert b"$Urgent" in got[got.index(b"* 37 FETCH (FLAGS ("):]
    session.feed(b"n NOOP\r\n")
    after = io.drain()
    assert b"* 35 EXPUNGE\r\n* 1 EXPUNGE\r\n" in after or b"* 1 EXPUNGE\r\n* 34 EXPUNGE\r\n" in after
    assert after.endswith(b"n OK NOOP completed.\r\n")
    assert b"* 41 EXISTS\r\n" in got[:tagged]  # EXISTS may come at any time, the new message with it


def test_an_idle_push_waits_while_the_client_does_not_read():
    store = _store(3)
    io = MarkedIO()
    session = _session(store, io)
    _login_select(session, io)
    session.feed(b"i IDLE\r\n")
    assert io.drain() == b"+ idling\r\n"
    session.pause_output()
    other = Client(store, Accounts(USERS))
    other.login()
    other.send("s SELECT INBOX")
    other.send("x STORE 2 +FLAGS (\\Flagged)")
    store.deliver(ALICE, make_message(4))
    assert io.buffer == b""  # nothing is built while the client is not reading
    session.resume_output()
    pushed = io.drain()
    assert b"* 2 FETCH (FLAGS (\\Flagged \\Recent))" in pushed and b"* 4 EXISTS" in pushed
    session.feed(b"DONE\r\n")
    assert io.drain() == b"i OK IDLE terminated.\r\n"


def test_starttls_queued_behind_a_stop_drops_what_followed_it_in_plaintext():
    io = MarkedIO()
    session = _session(_store(1), io, tls_available=True)
    io.drain()
    session.pause_output()
    session.feed(b"a CAPABILITY\r\nb STARTTLS\r\nc LOGIN alice@corp.example alice-password\r\n")
    assert io.buffer == b"" and session.backlogged
    got, _ = _run_out(session, io)
    assert b"a OK" in got and got.endswith(b"b OK Begin TLS negotiation now.\r\n")
    assert io.tls_requested and not session.backlogged
    session.tls_started()
    session.feed(b"d NOOP\r\n")
    assert io.drain() == b"d OK NOOP completed.\r\n"


def test_logout_in_a_pipeline_ends_it_after_a_sliced_command():
    io = MarkedIO()
    session = _session(_store(60, 2 * KB), io, clock=Tick(0.001), time_slice=0.005)
    _login_select(session, io)
    session.feed(b"a FETCH 1:* (BODY.PEEK[])\r\nb LOGOUT\r\nc NOOP\r\n")
    got, _ = _run_out(session, io)
    assert got.count(b" FETCH (BODY[] {") == 60
    assert got.endswith(b"a OK Fetch completed.\r\n* BYE Logging out\r\nb OK Logout completed.\r\n")
    assert io.closed and session.closed


def test_a_streamed_literal_is_exact_and_recorded_once():
    store = _store(2, 300 * KB)
    raw = store.fetch_raw(ALICE, "INBOX", 2)
    transcript = TranscriptRecorder()
    io = MarkedIO(100 * KB)
    session = ImapSession(store, Accounts(USERS), io, SessionConfig(), transcript=transcript)
    io.session = session
    session.greeting()
    _login_select(session, io)
    session.feed(b"a UID FETCH 2 (RFC822.SIZE BODY.PEEK[] RFC822.HEADER)\r\n")
    got, _ = _run_out(session, io)
    header = raw[:raw.index(b"\r\n\r\n") + 4]
    assert got == (b"* 2 FETCH (UID 2 RFC822.SIZE %d BODY[] {%d}\r\n%b RFC822.HEADER {%d}\r\n%b)\r\n"
                   b"a OK Fetch completed.\r\n" % (len(raw), len(raw), raw, len(header), header))
    texts = [line.text for line in transcript.lines if line.direction == "S"]
    tail = texts[texts.index(f"* 2 FETCH (UID 2 RFC822.SIZE {len(raw)} BODY[] {{{len(raw)}}}"):]
    assert tail[:2] == [f"* 2 FETCH (UID 2 RFC822.SIZE {len(raw)} BODY[] {{{len(raw)}}}", f"<{len(raw)} octets>"]
    assert tail[-1] == "a OK Fetch completed."
    assert not any("xxxxxxxxxx" in t for t in texts)  # no piece of the literal taken for a line


def test_many_items_of_one_big_message_are_made_one_at_a_time():
    """300 different 1 MB pieces of one message are 300 MB of answer: made and sent one piece at a time, as
    the client reads, and an item named twice is answered once (as Dovecot does)."""
    store = _store(1, 2048 * KB)
    raw = store.fetch_raw(ALICE, "INBOX", 1)
    items = " ".join(f"BODY.PEEK[TEXT]<{k}.{1024 * KB}>" for k in range(300))
    io = MarkedIO(256 * KB)
    session = _session(store, io, max_line=65536)
    _login_select(session, io)
    session.feed(f"a FETCH 1 ({items} BODY.PEEK[TEXT]<0.{1024 * KB}>)\r\n".encode())
    assert session.output_paused and session.backlogged
    assert io.most <= 256 * KB + 64 * KB + 1024
    for _ in range(40):  # the client reads 40 windows' worth: still bounded, still in order
        io.drain()
        session.proceed()
        assert io.most <= 256 * KB + 64 * KB + 1024
    session.shutdown()
    assert not session.backlogged

    io = MarkedIO()
    session = _session(store, io)
    _login_select(session, io)
    session.feed(b"a FETCH 1 (BODY.PEEK[HEADER] UID BODY.PEEK[HEADER] UID)\r\n")
    header = raw[:raw.index(b"\r\n\r\n") + 4]
    assert io.drain() == (b"* 1 FETCH (BODY[HEADER] {%d}\r\n%b UID 1)\r\na OK Fetch completed.\r\n"
                          % (len(header), header))
    session.feed(b"b FETCH 1 (BODY.PEEK[HEADER] BODY[HEADER])\r\n")  # one response item; \\Seen is set
    assert io.drain() == (b"* 1 FETCH (FLAGS (\\Seen) BODY[HEADER] {%d}\r\n%b)\r\nb OK Fetch completed.\r\n"
                          % (len(header), header))
