"""What many sessions of one user cost: a cap on logged-in sessions per user, and idle pushes written once per
turn of the event loop instead of once per change.

Why: every session with a mailbox selected takes every change to it. 1,000 idling sessions and one STORE over
2,000 messages were 2 million separate writes (232 s of work, other clients waited 4.3 s), and 300 selected
sessions turned one EXPUNGE of 10,000 messages into 386 MB of pending notices.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap.server import ImapServer
from recall_lab.fake_servers.imap.session import ImapSession, SessionConfig
from recall_lab.fake_servers.store.memory import MemoryStore

from .conftest import ALICE, ALICE_PW, USERS, make_message
from .rawclient import Raw


@pytest.fixture
async def capped(store: MemoryStore, accounts: Accounts):
    server = ImapServer(store, accounts, max_user_sessions=3, guard=None)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def _login(server: ImapServer, user: str = ALICE) -> tuple[Raw, bytes]:
    raw = await Raw.connect(server.host, server.port)
    lines = await raw.command(b"a", f'LOGIN "{user}" "{USERS[user]}"'.encode())
    return raw, lines[-1]


async def test_a_user_may_have_only_so_many_sessions(capped: ImapServer) -> None:
    sessions = []
    for _ in range(3):
        raw, answer = await _login(capped)
        assert answer.startswith(b"a OK"), answer
        sessions.append(raw)
    start = time.perf_counter()
    extra, answer = await _login(capped)
    assert answer.startswith(b"a NO [LIMIT]"), answer
    assert time.perf_counter() - start < 1.0, "the password was right: no failed-login delay"
    other, answer = await _login(capped, "bob@corp.example")
    assert answer.startswith(b"a OK"), "another user is not affected"
    await sessions[0].command(b"z", b"LOGOUT")
    for _ in range(100):  # the server counts the LOGOUT when it has processed it; that is before its reply
        answer = (await extra.command(b"b", f'LOGIN "{ALICE}" "{ALICE_PW}"'.encode()))[-1]
        if answer.startswith(b"b OK"):
            break
        await asyncio.sleep(0.01)
    assert answer.startswith(b"b OK"), answer
    await sessions[1].close()  # a dropped connection frees its place too
    for _ in range(200):
        if capped.user_sessions.count(ALICE) == 2:
            break
        await asyncio.sleep(0.01)
    assert capped.user_sessions.count(ALICE) == 2
    for raw in (*sessions[1:], extra, other):
        await raw.close()


class _LoopIO:
    """A SessionIO whose `wake` runs when the test says (one turn of the loop), counting writes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.woken = 0
        self.session: ImapSession | None = None

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        pass

    def start_tls(self) -> None:
        pass

    def hold(self, seconds: float) -> None:
        pass

    def wake(self) -> None:
        self.woken += 1

    def turn(self) -> None:
        assert self.session is not None
        self.session.wake()


def test_an_idler_is_sent_a_burst_of_changes_in_one_write(store: MemoryStore, accounts: Accounts) -> None:
    for n in range(300):
        store.deliver(ALICE, make_message(n))
    io = _LoopIO()
    idler = ImapSession(store, accounts, io, SessionConfig())
    io.session = idler
    idler.feed(f'a LOGIN "{ALICE}" "{ALICE_PW}"\r\nb SELECT INBOX\r\nc IDLE\r\n'.encode())
    io.writes.clear()
    other = ImapSession(store, accounts, _LoopIO(), SessionConfig())
    other.feed(f'a LOGIN "{ALICE}" "{ALICE_PW}"\r\nb SELECT INBOX\r\nc STORE 1:* +FLAGS (\\Flagged)\r\n'.encode())
    assert io.woken == 1 and io.writes == [], "nothing written during the other session's command"
    io.turn()
    assert len(io.writes) == 1
    assert io.writes[0].count(b"FETCH") == 300
