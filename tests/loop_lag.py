"""Measuring how long the event loop was held, for tests that bound it.

CPU time, not wall time: a machine busy with other processes (CI, another test worker) delays a timer without
anyone in this loop holding it, and that is not what these tests measure. Objects earlier tests left behind
are frozen out of the cyclic collector meanwhile: a full collection over them takes a hundred milliseconds or
more, and it is the server's work that is being measured, not that.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator

import pytest


async def lag_while(work: asyncio.Task) -> float:
    """The most CPU time this process spent between two turns of a 2 ms timer while `work` runs."""
    worst = 0.0
    while not work.done():
        start = time.process_time()
        await asyncio.sleep(0.002)
        worst = max(worst, time.process_time() - start)
    await work
    return worst


@pytest.fixture
def quiet_heap() -> Iterator[None]:
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
