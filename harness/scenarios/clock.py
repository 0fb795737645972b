"""The two clocks a trial can run on: simulated (jump to the next event) or the wall clock (`--realtime`).

Why a clock object rather than `time.monotonic()` everywhere: a trial's events are planned in simulated seconds;
the engine only ever asks the clock to "advance to t". Simulated time jumps there at once (a 15-minute recall
delay costs nothing), the wall clock waits `(t - now) / speed` real seconds, so the same plan can be watched
live. Server-side timers that must agree with the trial (the retention purge's "age in Trash") read `now()`.
"""

from __future__ import annotations

import asyncio
import time


class SimClock:
    """Simulated seconds. `base` lets one lab-wide clock run many trials one after another without going back
    in time (each trial starts at the previous trial's end)."""

    realtime = False

    def __init__(self) -> None:
        self.base = 0.0
        self.t = 0.0

    def now(self) -> float:
        """Absolute simulated time (what server-side policies read)."""
        return self.base + self.t

    def start_trial(self) -> None:
        self.base += self.t + 1.0
        self.t = 0.0

    async def advance_to(self, t: float) -> None:
        if t > self.t:
            self.t = t


class WallClock(SimClock):
    """Real seconds, `speed` times faster than life (speed 60: a simulated minute per real second)."""

    realtime = True

    def __init__(self, speed: float = 1.0) -> None:
        super().__init__()
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._started = time.monotonic()

    def start_trial(self) -> None:
        super().start_trial()
        self._started = time.monotonic()

    async def advance_to(self, t: float) -> None:
        wait = (t / self.speed) - (time.monotonic() - self._started)
        if wait > 0:
            await asyncio.sleep(wait)
        await super().advance_to(t)
