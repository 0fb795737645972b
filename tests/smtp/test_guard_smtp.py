"""The abuse limits on the MX and submission listeners, over real sockets: connection caps, the delay after a
wrong password, and the pre-login time budget.

Why through a DomainServer: the caps are shared by a domain's listeners (one guard), so the tests open
connections to MX and submission alike. Delays and budgets are tiny (tens of ms) and the assertions are about
order and lower bounds, so a slow machine makes the tests slower, never wrong.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from recall_lab.fake_servers.domain import DomainServer, DomainSpec, Endpoint
from recall_lab.fake_servers.guard import ConnectionGuard, GuardLimits
from recall_lab.fake_servers.store.memory import MemoryStore

USERS = {"alice@corp.example": "alice-password", "bob@corp.example": "bob-password"}


class Clock:
    """The guard's clock, moved by hand (only episodes and failure memory read it in these tests)."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def domain(clock: Clock | None = None, **limits: object) -> AsyncIterator[DomainServer]:
    guard = ConnectionGuard(GuardLimits(**limits), clock=clock or time.monotonic)  # type: ignore[arg-type]
    server = DomainServer(DomainSpec("corp.example", "organisation", USERS), MemoryStore(), imap=False,
                          guard=guard)
    await server.open()
    await server.run()
    try:
        yield server
    finally:
        await server.stop()


class Conn:
    """A raw SMTP connection from a chosen loopback source address."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, greeting: str) -> None:
        self.reader = reader
        self.writer = writer
        self.greeting = greeting

    @classmethod
    async def open(cls, ep: Endpoint, source: str = "127.0.0.1") -> Conn:
        reader, writer = await asyncio.open_connection(ep.host, ep.port, local_addr=(source, 0))
        conn = cls(reader, writer, "")
        conn.greeting = await conn.reply()
        return conn

    async def reply(self) -> str:
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 10)
            if not line:
                raise ConnectionError("closed")
            text = line.decode().rstrip("\r\n")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return "\n".join(lines)

    async def cmd(self, line: str) -> str:
        self.writer.write(line.encode() + b"\r\n")
        return await self.reply()

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), 10) == b""

    def close(self) -> None:
        self.writer.close()


def plain(user: str, password: str) -> str:
    return "AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()


# -- connection caps ---------------------------------------------------------------------------------------
async def test_over_the_caps_a_connection_gets_421_and_the_log_one_line_per_episode(caplog):
    caplog.set_level(logging.INFO)
    clock = Clock()
    async with domain(clock, max_connections=3, max_connections_per_ip=2, episode_quiet=10.0) as server:
        a = await Conn.open(server.mx)
        b = await Conn.open(server.submission)
        assert a.greeting.startswith("220") and b.greeting.startswith("220")
        # a third from the same address: over the per-address cap, on either listener
        for ep in (server.mx, server.submission, server.mx):
            extra = await Conn.open(ep)
            assert extra.greeting.startswith("421 4.7.0") and "your address" in extra.greeting, extra.greeting
            assert await extra.closed()
            extra.close()
        # another address still gets in, up to the total cap
        c = await Conn.open(server.mx, source="127.0.0.2")
        assert c.greeting.startswith("220")
        assert (await c.cmd("EHLO other.example")).startswith("250")
        over = await Conn.open(server.submission, source="127.0.0.3")
        assert over.greeting.startswith("421 4.7.0 corp.example Too many connections"), over.greeting
        assert await over.closed()
        over.close()
        assert server.mx_listener.sessions + server.submission_listener.sessions == 3
        # closing one lets the next one in
        assert (await a.cmd("QUIT")).startswith("221")
        assert await a.closed()
        a.close()
        for _ in range(200):
            if server.guard.connections < 3:
                break
            await asyncio.sleep(0.005)
        clock.now += 10  # ten quiet seconds end the episode
        again = await Conn.open(server.mx, source="127.0.0.3")
        assert again.greeting.startswith("220"), again.greeting
        for conn in (b, c, again):
            conn.close()
    lines = [r.getMessage() for r in caplog.records if "connections" in r.getMessage()
             and r.name.startswith("recall_lab.fake_servers")]
    assert len([m for m in lines if m.startswith("refusing connections")]) == 1, lines
    assert len([m for m in lines if m.startswith("accepting connections again")]) == 1, lines
    assert "(4 refused" in lines[-1], lines


async def test_a_flood_of_refused_connections_is_one_log_line(caplog):
    caplog.set_level(logging.INFO)
    async with domain(max_connections=2, max_connections_per_ip=2) as server:
        keep = [await Conn.open(server.mx) for _ in range(2)]
        for _ in range(40):
            extra = await Conn.open(server.submission)
            assert extra.greeting.startswith("421 4.7.0")
            extra.close()
        for conn in keep:
            conn.close()
    refusals = [r for r in caplog.records if "refusing connections" in r.getMessage()]
    assert len(refusals) == 1
    assert not any(r.exc_info for r in caplog.records)


# -- wrong passwords ---------------------------------------------------------------------------------------
async def test_wrong_passwords_are_answered_slowly_and_the_third_closes_the_connection():
    delay = 0.05
    async with domain(auth_failure_delay=delay, max_auth_failures=3) as server:
        conn = await Conn.open(server.submission)
        await conn.cmd("EHLO attacker.example")
        start = time.monotonic()
        # pipelined: the connection must not read the next guess before answering the last one
        conn.writer.write("".join(plain("alice@corp.example", f"guess{i}") + "\r\n" for i in range(5)).encode())
        replies = [await conn.reply() for _ in range(3)]
        elapsed = time.monotonic() - start
        assert replies[0].startswith("535 5.7.8") and replies[1].startswith("535 5.7.8"), replies
        assert replies[2].startswith("421 4.7.0"), replies
        assert await conn.closed()
        assert elapsed >= 3 * delay, elapsed
        conn.close()
        # AUTH LOGIN is throttled alike
        conn = await Conn.open(server.submission)
        await conn.cmd("EHLO attacker.example")
        start = time.monotonic()
        assert (await conn.cmd("AUTH LOGIN")).startswith("334")
        assert (await conn.cmd(base64.b64encode(b"alice@corp.example").decode())).startswith("334")
        assert (await conn.cmd(base64.b64encode(b"nope").decode())).startswith("535 5.7.8")
        assert time.monotonic() - start >= delay
        conn.close()


async def test_the_rightful_user_logs_in_at_once_while_a_guesser_waits():
    delay = 0.5
    async with domain(auth_failure_delay=delay) as server:
        guesser = await Conn.open(server.submission)
        await guesser.cmd("EHLO attacker.example")
        for i in range(2):  # a connection's worth of failures from this address first
            assert (await guesser.cmd(plain("alice@corp.example", f"guess{i}"))).startswith("535")
        guesser.writer.write(plain("alice@corp.example", "guess-again").encode() + b"\r\n")
        pending = asyncio.ensure_future(guesser.reply())
        alice = await Conn.open(server.submission)
        await alice.cmd("EHLO alice.example")
        start = time.monotonic()
        assert (await alice.cmd(plain("alice@corp.example", "alice-password"))).startswith("235")
        assert time.monotonic() - start < delay and not pending.done()
        assert (await pending).startswith("421 4.7.0")
        assert (await alice.cmd("MAIL FROM:<alice@corp.example>")).startswith("250")
        for conn in (guesser, alice):
            conn.close()


async def test_past_the_penalty_threshold_even_the_right_password_waits_but_gets_in():
    delay = 0.1
    async with domain(auth_failure_delay=delay, auth_failure_delay_max=0.4, auth_penalty_after=2) as server:
        guesser = await Conn.open(server.submission)
        await guesser.cmd("EHLO attacker.example")
        for i in range(2):
            assert (await guesser.cmd(plain("alice@corp.example", f"guess{i}"))).startswith("535")
        guesser.close()
        impatient = await Conn.open(server.submission)  # silence must not mean "wrong": the right one waits too
        await impatient.cmd("EHLO attacker.example")
        impatient.writer.write(plain("alice@corp.example", "alice-password").encode() + b"\r\n")
        try:
            early = await asyncio.wait_for(impatient.reader.readline(), delay / 2)
        except TimeoutError:
            early = b""
        assert early == b"", early
        assert (await impatient.reply()).startswith("235")  # never locked out
        impatient.close()
        other = await Conn.open(server.submission, source="127.0.0.2")
        await other.cmd("EHLO other.example")
        start = time.monotonic()
        assert (await other.cmd(plain("bob@corp.example", "bob-password"))).startswith("235")
        assert time.monotonic() - start < delay
        other.close()


async def test_malformed_auth_tests_no_password_and_is_not_delayed():
    async with domain(auth_failure_delay=5.0, max_auth_failures=1) as server:
        conn = await Conn.open(server.submission)
        await conn.cmd("EHLO client.example")
        start = time.monotonic()
        assert (await conn.cmd("AUTH PLAIN !!!notbase64")).startswith("501")
        assert (await conn.cmd("AUTH LOGIN")).startswith("334")
        assert (await conn.cmd("*")).startswith("501")
        assert time.monotonic() - start < 2.0
        assert (await conn.cmd(plain("alice@corp.example", "alice-password"))).startswith("235")
        conn.close()


async def test_mx_offers_no_auth_to_guess_against():
    async with domain(auth_failure_delay=5.0) as server:
        conn = await Conn.open(server.mx)
        await conn.cmd("EHLO other.example")
        assert (await conn.cmd(plain("alice@corp.example", "x"))).startswith("502 5.5.1")
        conn.close()


# -- the pre-login time budget -----------------------------------------------------------------------------
async def test_a_dribbling_client_is_cut_off_at_the_budget_on_both_listeners():
    budget = 0.5
    async with domain(login_timeout=budget) as server:
        for ep in (server.mx, server.submission):
            conn = await Conn.open(ep)
            start = time.monotonic()
            payload = b"EHLO dribble.example\r\n" + b"NOOP\r\n" * 100
            answer = b""
            for byte in payload:  # one byte every 50 ms: each keeps the line "active", none may buy time
                conn.writer.write(bytes([byte]))
                try:
                    chunk = await asyncio.wait_for(conn.reader.read(4096), 0.05)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                answer += chunk
            elapsed = time.monotonic() - start
            assert b"421 4.4.2 corp.example Error: timeout exceeded" in answer, answer
            assert budget * 0.9 <= elapsed < budget + 3, elapsed
            conn.close()


async def test_the_budget_ends_at_auth_and_restarts_after_each_message_on_mx():
    """Submission: a successful AUTH ends the budget. MX has no login: an accepted MAIL does not end it (a
    command every few minutes would hold the connection slot forever), a delivered message starts it afresh."""
    budget = 1.5
    async with domain(login_timeout=budget) as server:
        sub = await Conn.open(server.submission)
        await sub.cmd("EHLO client.example")
        assert (await sub.cmd(plain("bob@corp.example", "bob-password"))).startswith("235")
        idle = await Conn.open(server.mx)
        await idle.cmd("EHLO other.example")
        assert (await idle.cmd("MAIL FROM:<x@other.example>")).startswith("250")
        sender = await Conn.open(server.mx)
        await sender.cmd("EHLO other.example")
        await asyncio.sleep(budget * 0.5)  # the message is delivered late in the first budget
        for line in ("MAIL FROM:<x@other.example>", "RCPT TO:<bob@corp.example>", "DATA"):
            assert (await sender.cmd(line))[:1] in "23"
        assert (await sender.cmd("From: x@other.example\r\nSubject: s\r\n\r\nhi\r\n.")).startswith("250")
        await asyncio.sleep(budget * 0.7)  # past the first budget, inside the fresh one
        assert (await sender.cmd("NOOP")).startswith("250"), "a fresh budget after the delivered message"
        assert (await sub.cmd("NOOP")).startswith("250"), "past login, only the command timeout counts"
        assert "421 4.4.2" in await idle.reply(), "an MX session that sent no message is cut at its budget"
        assert await idle.closed()
        assert "421 4.4.2" in await sender.reply(), "and so is one that delivered, once its fresh budget ends"
        for conn in (idle, sender, sub):
            conn.close()
