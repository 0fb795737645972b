"""The abuse limits of the IMAP server: connection caps, the delay after a failed login, the pre-login budget.

Why both sans-I/O and sockets: the session only asks its adapter to hold a failed login's answer (`io.hold`),
and the sans-I/O tests prove what it holds (the answer and every command behind it) without a clock; the socket
tests prove that the adapter's timer makes a guesser wait while the rightful user, on a fresh connection, does
not. Delays and budgets are tiny and the assertions are order and lower bounds, never "fast enough".
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from recall_lab.fake_servers.guard import ConnectionGuard, FailureVerdict, GuardLimits, LoginThrottle
from recall_lab.fake_servers.imap.server import ImapServer
from recall_lab.fake_servers.imap.session import ImapSession, SessionConfig

from .conftest import ALICE, ALICE_PW
from .rawclient import Raw
from .sansio import FakeIO


class Clock:
    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def server(store, accounts, clock=None, **limits) -> AsyncIterator[ImapServer]:
    srv = ImapServer(store, accounts, name="corp.example",
                     guard=ConnectionGuard(GuardLimits(**limits), clock=clock or time.monotonic))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def connect(srv: ImapServer, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(srv.host, srv.port, local_addr=(source, 0))


async def read_all(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 10)


def plain(user: str, password: str, authz: str = "") -> bytes:
    return base64.b64encode(f"{authz}\0{user}\0{password}".encode())


# -- sans-I/O: what a failed login holds back -------------------------------------------------------------
class HoldingIO(FakeIO):
    def __init__(self) -> None:
        super().__init__()
        self.holds: list[float] = []

    def hold(self, seconds: float) -> None:
        self.holds.append(seconds)


def session(store, accounts, verdicts, penalties=()):
    io = HoldingIO()
    failures = iter(verdicts)
    waits = iter(penalties)
    throttle = LoginThrottle(penalty=lambda: next(waits, 0.0), failed=lambda: next(failures))
    s = ImapSession(store, accounts, io, SessionConfig(), throttle=throttle)
    s.greeting()
    io.out.clear()
    return s, io


def test_a_failed_login_holds_its_answer_and_every_command_behind_it(store, accounts):
    s, io = session(store, accounts, [FailureVerdict(2.0, False)])
    s.feed(b"a1 LOGIN alice@corp.example wrong\r\na2 NOOP\r\n")
    assert io.holds == [2.0] and bytes(io.out) == b""
    assert s.backlogged and not s.runnable  # the adapter reads nothing more meanwhile
    s.feed(b"a3 CAPABILITY\r\n")
    assert bytes(io.out) == b""
    s.release_hold()
    out = bytes(io.out)
    assert out.startswith(b"a1 NO [AUTHENTICATIONFAILED]"), out
    assert b"a2 OK" in out and out.endswith(b"a3 OK Capability completed.\r\n"), out
    assert not s.backlogged


def test_the_last_allowed_failure_says_bye_and_closes(store, accounts):
    s, io = session(store, accounts, [FailureVerdict(0.5, False), FailureVerdict(0.5, True)])
    s.feed(b"a1 LOGIN alice@corp.example wrong\r\n")
    s.release_hold()
    s.feed(b"a2 AUTHENTICATE PLAIN " + plain(ALICE, "wrong") + b"\r\n"
           b"a3 LOGIN alice@corp.example alice-password\r\n")
    assert io.holds == [0.5, 0.5] and not io.closed
    s.release_hold()
    out = bytes(io.out)
    assert b"a2 NO [AUTHENTICATIONFAILED]" in out and out.endswith(b"* BYE Too many failed logins\r\n"), out
    assert b"a3" not in out and io.closed and s.closed


@pytest.mark.parametrize("attempt", [
    b"a1 LOGIN alice@corp.example wrong\r\n",
    b"a1 LOGIN nobody@corp.example wrong\r\n",
    b"a1 AUTHENTICATE PLAIN " + plain(ALICE, "wrong") + b"\r\n",
    b"a1 AUTHENTICATE PLAIN\r\n" + plain(ALICE, "wrong") + b"\r\n",
    b"a1 AUTHENTICATE PLAIN " + plain(ALICE, ALICE_PW, authz="bob@corp.example") + b"\r\n",
])
def test_every_kind_of_failed_login_is_held(store, accounts, attempt):
    s, io = session(store, accounts, [FailureVerdict(1.0, False)])
    s.feed(attempt)
    assert io.holds == [1.0]
    assert b"a1 NO" not in bytes(io.out)
    s.release_hold()
    assert b"a1 NO [" in bytes(io.out)


@pytest.mark.parametrize("attempt", [
    b"a1 LOGIN alice@corp.example alice-password\r\n",
    b"a1 AUTHENTICATE PLAIN " + plain(ALICE, ALICE_PW) + b"\r\n",
    b"a1 AUTHENTICATE PLAIN !!!\r\n",
    b"a1 AUTHENTICATE PLAIN\r\n*\r\n",
    b"a1 AUTHENTICATE CRAM-MD5\r\n",
    b"a1 LOGIN alice@corp.example\r\n",
])
def test_what_tests_no_password_is_answered_at_once(store, accounts, attempt):
    s, io = session(store, accounts, [])
    s.feed(attempt)
    assert io.holds == [] and b"a1 " in bytes(io.out)


@pytest.mark.parametrize("attempt", [
    b"a1 LOGIN alice@corp.example alice-password\r\n",
    b"a1 AUTHENTICATE PLAIN\r\n" + plain(ALICE, ALICE_PW) + b"\r\n",
])
def test_under_penalty_even_the_right_password_waits_unchecked(store, accounts, attempt):
    s, io = session(store, accounts, [], penalties=[3.0])
    s.feed(attempt + b"a2 NOOP\r\n")
    assert io.holds == [3.0]
    assert b"a1 " not in bytes(io.out) and s.state == "not authenticated"  # not even checked yet
    s.release_hold()
    out = bytes(io.out)
    assert b"a1 OK [CAPABILITY" in out and out.endswith(b"a2 OK NOOP completed.\r\n"), out
    assert io.holds == [3.0]  # checked once, after the wait: no second penalty


def test_under_penalty_a_wrong_password_waits_then_is_held_again(store, accounts):
    s, io = session(store, accounts, [FailureVerdict(1.0, False)], penalties=[3.0])
    s.feed(b"a1 LOGIN alice@corp.example wrong\r\n")
    s.release_hold()  # the penalty is over: checked, wrong, its answer held for the failure delay
    assert io.holds == [3.0, 1.0] and b"a1" not in bytes(io.out)
    s.release_hold()
    assert bytes(io.out).startswith(b"a1 NO [AUTHENTICATIONFAILED]")


# -- sockets: the caps ---------------------------------------------------------------------------------------
async def test_over_the_caps_a_connection_gets_bye_unavailable_and_the_log_one_line_per_episode(
        store, accounts, caplog):
    caplog.set_level(logging.INFO)
    clock = Clock()
    async with server(store, accounts, clock, max_connections=3, max_connections_per_ip=2) as srv:
        kept = [await Raw.connect(srv.host, srv.port, local_addr=("127.0.0.1", 0)) for _ in range(2)]
        for _ in range(3):
            reader, writer = await connect(srv)
            answer = await read_all(reader)  # the whole answer, then the server closes
            assert answer.startswith(b"* BYE [UNAVAILABLE] Too many connections from your address"), answer
            assert answer.count(b"\r\n") == 1
            writer.close()
        other = await Raw.connect(srv.host, srv.port, local_addr=("127.0.0.2", 0))
        assert (await other.command(b"o1", f"LOGIN {ALICE} {ALICE_PW}".encode()))[-1].startswith(b"o1 OK")
        reader, writer = await connect(srv, "127.0.0.3")
        assert (await read_all(reader)).startswith(b"* BYE [UNAVAILABLE] Too many connections, try again later")
        writer.close()
        assert srv.connections == 3
        await kept[0].command(b"q", b"LOGOUT")
        await kept[0].close()
        for _ in range(400):
            if srv.guard.connections < 3:
                break
            await asyncio.sleep(0.005)
        clock.now += 10  # ten quiet seconds end the episode
        again = await Raw.connect(srv.host, srv.port, local_addr=("127.0.0.3", 0))
        for raw in (kept[1], other, again):
            await raw.close()
    notes = [r.getMessage() for r in caplog.records
             if r.name == "recall_lab.fake_servers.imap" and "connections" in r.getMessage()]
    assert len(notes) == 2, notes
    assert notes[0].startswith("refusing connections to corp.example IMAP from 127.0.0.1"), notes
    assert notes[1].startswith("accepting connections again (4 refused"), notes
    assert not any(r.exc_info for r in caplog.records)


# -- sockets: failed logins ----------------------------------------------------------------------------------
async def test_wrong_logins_are_throttled_and_the_last_one_disconnects(store, accounts):
    delay, allowed = 0.05, 4
    async with server(store, accounts, auth_failure_delay=delay, max_auth_failures=allowed) as srv:
        reader, writer = await connect(srv)
        assert (await reader.readline()).startswith(b"* OK")
        start = time.monotonic()
        # all pipelined in one write: each guess must wait for the answer to the one before
        writer.write(b"".join(f"a{i} LOGIN {ALICE} guess{i}\r\n".encode() for i in range(allowed))
                     + b"b1 LOGIN " + ALICE.encode() + b" " + ALICE_PW.encode() + b"\r\n")
        answer = await read_all(reader)
        elapsed = time.monotonic() - start
        lines = answer.split(b"\r\n")
        assert [line[:5] for line in lines[:allowed]] == [f"a{i} NO".encode() for i in range(allowed)], lines
        assert lines[allowed] == b"* BYE Too many failed logins", lines
        assert b"b1" not in answer  # the connection was closed before the next guess was read
        assert elapsed >= allowed * delay, elapsed
        writer.close()


async def test_the_rightful_user_logs_in_at_once_while_a_guesser_waits(store, accounts):
    delay = 0.5
    async with server(store, accounts, auth_failure_delay=delay) as srv:
        guesser = await Raw.connect(srv.host, srv.port)
        await guesser.send(b"g1 AUTHENTICATE PLAIN " + plain(ALICE, "guess") + b"\r\n")
        pending = asyncio.ensure_future(guesser.until_tagged(b"g1", timeout=10))
        alice = await Raw.connect(srv.host, srv.port)
        start = time.monotonic()
        assert (await alice.command(b"r1", f"LOGIN {ALICE} {ALICE_PW}".encode()))[-1].startswith(b"r1 OK")
        assert time.monotonic() - start < delay and not pending.done()
        assert (await pending)[-1].startswith(b"g1 NO [AUTHENTICATIONFAILED]")
        # the guesser's connection still works: a right password after a wrong one is not refused either
        assert (await guesser.command(b"g2", f"LOGIN {ALICE} {ALICE_PW}".encode()))[-1].startswith(b"g2 OK")
        for raw in (guesser, alice):
            await raw.close()


async def test_authenticate_with_continuation_is_throttled(store, accounts):
    delay = 0.05
    async with server(store, accounts, auth_failure_delay=delay, max_auth_failures=2) as srv:
        raw = await Raw.connect(srv.host, srv.port)
        start = time.monotonic()
        for tag in (b"x1", b"x2"):
            await raw.send(tag + b" AUTHENTICATE PLAIN\r\n")
            assert (await raw.line()).startswith(b"+")
            await raw.send(plain(ALICE, "nope") + b"\r\n")
            assert (await raw.line()).startswith(tag + b" NO [AUTHENTICATIONFAILED]")
        assert (await raw.line()).startswith(b"* BYE Too many failed logins")
        assert await raw.line() == b""
        assert time.monotonic() - start >= 2 * delay
        await raw.close()


async def test_a_guesser_who_hangs_up_early_learns_nothing_and_alice_gets_in(store, accounts):
    """Hanging up when the answer is late would tell "wrong" from "right" (a right password is answered at
    once), so past `auth_penalty_after` failures an address waits before its password is even checked: the
    right one is not answered at once either, and silence says nothing."""
    delay = 0.05
    async with server(store, accounts, auth_failure_delay=delay, auth_failure_delay_max=0.4,
                      auth_penalty_after=3) as srv:
        raw = await Raw.connect(srv.host, srv.port)
        for i in range(3):
            assert (await raw.command(f"g{i}".encode(), f"LOGIN {ALICE} guess{i}".encode()))[-1].startswith(
                f"g{i} NO".encode())
        await raw.close()
        assert srv.guard.recent_failures("127.0.0.1") == 3
        for i in range(10):  # an impatient guesser: one try per connection, gone after 10 ms of silence
            raw = await Raw.connect(srv.host, srv.port)
            password = ALICE_PW if i == 9 else f"guess{i}"
            await raw.send(f"h{i} LOGIN {ALICE} {password}\r\n".encode())
            with pytest.raises(TimeoutError):
                await raw.line(timeout=0.01)  # not even the right password (the last) is answered at once
            await raw.close()
        # the rightful user from the same address waits the penalty, but is never locked out
        alice = await Raw.connect(srv.host, srv.port)
        start = time.monotonic()
        assert (await alice.command(b"r1", f"LOGIN {ALICE} {ALICE_PW}".encode()))[-1].startswith(b"r1 OK")
        assert time.monotonic() - start >= delay
        await alice.close()
        # another address is not penalised
        bob = await Raw.connect(srv.host, srv.port, local_addr=("127.0.0.2", 0))
        start = time.monotonic()
        assert (await bob.command(b"b1", f"LOGIN {ALICE} {ALICE_PW}".encode()))[-1].startswith(b"b1 OK")
        assert time.monotonic() - start < delay
        await bob.close()


# -- sockets: the pre-login budget ---------------------------------------------------------------------------
async def test_a_dribbling_client_is_cut_off_at_the_budget(store, accounts):
    budget = 0.5
    async with server(store, accounts, login_timeout=budget) as srv:
        reader, writer = await connect(srv)
        assert (await reader.readline()).startswith(b"* OK")
        start = time.monotonic()
        answer = b""
        for byte in b"a1 NOOP\r\n" * 100:  # one byte every 50 ms: each would have reset an inactivity timer
            writer.write(bytes([byte]))
            try:
                chunk = await asyncio.wait_for(reader.read(4096), 0.05)
            except TimeoutError:
                continue
            if not chunk:
                break
            answer += chunk
        elapsed = time.monotonic() - start
        assert b"* BYE" in answer and b"a1 OK" in answer, answer
        assert budget * 0.9 <= elapsed < budget + 3, elapsed
        writer.close()


async def test_after_login_the_budget_no_longer_applies(store, accounts):
    budget = 0.3
    async with server(store, accounts, login_timeout=budget) as srv:
        raw = await Raw.connect(srv.host, srv.port)
        assert (await raw.command(b"a", f"LOGIN {ALICE} {ALICE_PW}".encode()))[-1].startswith(b"a OK")
        await asyncio.sleep(budget * 2)
        assert (await raw.command(b"b", b"NOOP"))[-1].startswith(b"b OK")
        await raw.close()
