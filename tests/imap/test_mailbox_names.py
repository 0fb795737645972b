"""Mailbox names and LIST patterns a client can make expensive: bounded names, linear pattern matching, CREATE
and LIST that do not slow down with the number of mailboxes.

Why: CREATE of a 30,000-level name held the server for minutes (every ancestor is created), a LIST pattern like
`*a*a*a*a*a*a*a*b` took exponential time in the regular expression it was compiled to, and LIST and CREATE each
looked at every mailbox once per mailbox (5,000 CREATEs took 44 s, a LIST of them 2 s in one piece).
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.imap.names import ListPattern, MailboxNameLimits
from tests.loop_lag import lag_while, quiet_heap  # noqa: F401 (a fixture)

from .conftest import ALICE, ALICE_PW, Lab
from .rawclient import Raw


def _regex(pattern: str) -> re.Pattern[str]:
    """RFC 3501 6.3.8 as a regular expression: the meaning ListPattern must keep (fine for short inputs)."""
    out = [".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in pattern]
    return re.compile("".join(out), re.DOTALL)


@settings(max_examples=500, deadline=None)
@given(pattern=st.text("ab/*%.", max_size=12), name=st.text("ab/.", max_size=14))
def test_list_pattern_means_what_rfc_3501_says(pattern: str, name: str) -> None:
    assert ListPattern(pattern).match(name) == bool(_regex(pattern).fullmatch(name))


def test_a_backtracking_pattern_is_matched_in_linear_time() -> None:
    pattern = ListPattern("*a" * 300 + "*b")
    start = time.perf_counter()
    for _ in range(100):
        assert not pattern.match("a" * 1000)
        assert pattern.match("a" * 400 + "b")
    assert time.perf_counter() - start < 2.0


def test_name_limits() -> None:
    limits = MailboxNameLimits()
    assert limits.create_problem("/".join(["d"] * 32)) is None
    assert "levels" in (limits.create_problem("/".join(["d"] * 33)) or "")
    assert "level over" in (limits.create_problem("x" * 256) or "")
    assert "too long" in (limits.create_problem("/".join(["y" * 200] * 6)) or "")


async def _login(imap: Lab) -> Raw:
    raw = await Raw.connect(imap.host, imap.port)
    await raw.command(b"a", f'LOGIN "{ALICE}" "{ALICE_PW}"'.encode())
    return raw


async def test_names_over_the_limits_are_refused_at_once(imap: Lab) -> None:
    raw = await _login(imap)
    try:
        for name in ("/".join(["d"] * 30_000), "n" * 60_000, "/".join(["e"] * 33), "f" * 256):
            start = time.perf_counter()
            tagged = (await raw.command(b"c", b"CREATE " + name.encode(), ))[-1]
            assert tagged.startswith(b"c NO [CANNOT]"), tagged
            assert time.perf_counter() - start < 1.0
        for command in (b"SELECT ", b"STATUS ", b"DELETE "):
            suffix = b" (MESSAGES)" if command == b"STATUS " else b""
            tagged = (await raw.command(b"s", command + b"g" * 5000 + suffix))[-1]
            assert tagged.startswith(b"s NO [CANNOT]"), tagged
        assert (await raw.command(b"d", b"CREATE " + "/".join(["h"] * 32).encode()))[-1].startswith(b"d OK")
        tagged = (await raw.command(b"r", b"RENAME h " + "/".join(["i"] * 40).encode()))[-1]
        assert tagged.startswith(b"r NO [CANNOT]"), tagged
    finally:
        await raw.close()






@pytest.mark.usefixtures("quiet_heap")
async def test_list_does_not_hold_the_loop_over_thousands_of_mailboxes(imap: Lab) -> None:
    raw = await _login(imap)
    try:
        count = 4000
        start = time.process_time()  # the server runs in this process: its CPU time, whatever else the machine does
        raw.writer.write(b"".join(b"c%d CREATE box%05d/sub\r\n" % (i, i) for i in range(count)))
        await raw.until_tagged(b"c%d" % (count - 1), timeout=60)
        per_create = (time.process_time() - start) / count
        assert per_create < 0.002, f"CREATE took {per_create * 1000:.1f} ms with thousands of mailboxes"

        async def listing() -> list[bytes]:
            return await raw.command(b"l", b'LIST "" "*"')

        task = asyncio.create_task(listing())
        worst = await lag_while(task)
        lines = task.result()
        assert lines[-1].startswith(b"l OK")
        assert len([line for line in lines if b'"/" box' in line]) == 2 * count  # every box and its child
        assert b'* LIST (\\HasChildren) "/" box00001\r\n' in lines
        assert b'* LIST (\\HasNoChildren) "/" box00001/sub\r\n' in lines
        assert worst < 0.15, f"LIST held the event loop for {worst * 1000:.0f} ms"

        task = asyncio.create_task(raw.command(b"p", b'LIST "" "' + b"*b" * 200 + b'*z"'))
        worst = await lag_while(task)
        assert task.result()[-1].startswith(b"p OK")
        assert worst < 0.15, f"a backtracking pattern held the event loop for {worst * 1000:.0f} ms"
    finally:
        await raw.close()
