"""Memory that a client's literals hold in the IMAP server, over real sockets.

Why: a literal is kept in pieces until its command is complete. A client that sends most of a big APPEND and
hangs up must not leave those pieces behind: the session and its connection reference each other, so only
Python's cyclic collector would free them, and it seldom runs a full collection in a process holding a large
store (three rounds of ten 49 MB literals cut off by a disconnect left 1.5 GB in a running `recall-lab serve`).
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from .conftest import ALICE, ALICE_PW, Lab
from .rawclient import Raw

MB = 1024 * 1024


@pytest.fixture
def traced() -> Iterator[None]:
    """tracemalloc on and the cyclic collector off: what is freed is freed by the server, not by luck."""
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()
        gc.enable()


async def _until(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


@pytest.mark.usefixtures("traced")
async def test_a_literal_cut_off_by_a_disconnect_is_freed_at_once(imap: Lab) -> None:
    baseline = tracemalloc.get_traced_memory()[0]
    raw = await Raw.connect(imap.host, imap.port)
    await raw.command(b"a", f'LOGIN "{ALICE}" "{ALICE_PW}"'.encode())
    await raw.send(b"b APPEND INBOX {31457280}\r\n")
    assert (await raw.line()).startswith(b"+")
    piece = b"y" * MB
    for _ in range(20):
        await raw.send(piece)
    await _until(lambda: tracemalloc.get_traced_memory()[0] > baseline + 19 * MB, "the server got the 20 MB")
    await raw.close()
    await _until(lambda: imap.server.connections == 0, "the server saw the client go")
    held = (tracemalloc.get_traced_memory()[0] - baseline) / MB
    assert held < 5, f"{held:.0f} MB of a literal cut off by a disconnect still held"
