"""The simulated user behind a client: sees a notification, maybe has a rule, opens the message later.

Why a model: whether a recall "works" depends mostly on the person. If they opened the message before the
recall arrived, nothing can unsee it. Open delays come from a seeded distribution so a trial is reproducible
from its seed; the default is a log-normal (most people glance within a minute or two, a long tail waits
hours), a common model of e-mail response times.

Delay distributions (seconds):

| class | parameters | meaning |
|---|---|---|
| `LogNormalDelay(median=60, sigma=1.0)` | ln(delay) ~ Normal(ln(median), sigma) | default: median one minute |
| `ExponentialDelay(mean=120)` | rate 1/mean | memoryless: "reads at some random moment" |
| `FixedDelay(seconds)` | | scripted scenarios |
| `NeverOpens()` | | always `math.inf`: the recipient is away |
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from recall_lab.harness.clients.preview import Preview


class DelayModel(Protocol):
    def sample(self, rng: random.Random) -> float: ...


@dataclass(frozen=True)
class LogNormalDelay:
    median: float = 60.0
    sigma: float = 1.0

    def sample(self, rng: random.Random) -> float:
        return rng.lognormvariate(math.log(self.median), self.sigma)


@dataclass(frozen=True)
class ExponentialDelay:
    mean: float = 120.0

    def sample(self, rng: random.Random) -> float:
        return rng.expovariate(1.0 / self.mean)


@dataclass(frozen=True)
class FixedDelay:
    seconds: float

    def sample(self, rng: random.Random) -> float:
        return self.seconds


@dataclass(frozen=True)
class NeverOpens:
    def sample(self, rng: random.Random) -> float:
        return math.inf


@dataclass(frozen=True)
class MoveRule:
    """A rule such as "messages from alice go to Projects" (the article's "moved by a rule")."""

    folder: str
    match: Callable[[Preview], bool] = field(default=lambda preview: True)


class MailView(Protocol):
    """What a user needs of a client (DesktopClient and WebClient both have it)."""

    name: str

    def preview(self, message_id: str) -> Preview | None: ...

    def has_message_id(self, message_id: str) -> bool: ...

    async def open(self, message_id: str) -> object: ...

    async def move(self, message_id: str, folder: str) -> None: ...


class SimulatedUser:
    """One recipient. `shows_preview`: whether their client shows a notification on arrival (a desktop client
    does; a web page that is not open does not)."""

    def __init__(self, address: str, client: MailView, *, seed: int, open_delay: DelayModel | None = None,
                 shows_preview: bool = True, rule: MoveRule | None = None) -> None:
        self.address = address.strip().lower()
        self.client = client
        self.seed = seed
        self.rng = random.Random(seed)
        self.open_delay: DelayModel = open_delay or LogNormalDelay()
        self.shows_preview = shows_preview
        self.rule = rule
        self.previews: dict[str, Preview] = {}
        self.opened: list[str] = []
        self.moved: list[tuple[str, str]] = []

    def sample_open_delay(self) -> float:
        """Seconds from arrival to opening; the n-th call for a given seed always returns the same value."""
        return self.open_delay.sample(self.rng)

    def on_arrival(self, message_id: str, preview: Preview | None = None) -> Preview | None:
        """The notification: subject and first line, if the client shows one and has the message."""
        if not self.shows_preview:
            return None
        preview = preview or self.client.preview(message_id)
        if preview is not None:
            self.previews[message_id] = preview
        return preview

    def saw_preview(self, message_id: str) -> bool:
        return message_id in self.previews

    def has_read(self, message_id: str) -> bool:
        return message_id in self.opened

    def rule_applies(self, message_id: str) -> bool:
        if self.rule is None:
            return False
        preview = self.client.preview(message_id)
        return preview is not None and self.rule.match(preview)

    async def apply_rule(self, message_id: str) -> bool:
        """Move the message if the rule matches; True when it moved."""
        if self.rule is None or not self.rule_applies(message_id):
            return False
        await self.client.move(message_id, self.rule.folder)
        self.moved.append((message_id, self.rule.folder))
        return True

    async def open(self, message_id: str) -> object:
        """Open it in the client: FETCH BODY[] sets \\Seen; from now on the content has been read."""
        result = await self.client.open(message_id)
        self.opened.append(message_id)
        return result

    async def run(self, message_id: str, *, arrived: Callable[[], Awaitable[None]] | None = None,
                  wait: Callable[[float], Awaitable[None]] | None = None) -> float:
        """The user's whole life with one message in real time (the `--realtime` demo): await its arrival,
        see the preview, apply the rule, wait the sampled delay with `wait` (asyncio.sleep by default),
        open it. Returns the delay used; never opens when the delay is infinite."""
        if arrived is not None:
            await arrived()
        self.on_arrival(message_id)
        await self.apply_rule(message_id)
        delay = self.sample_open_delay()
        if math.isinf(delay):
            return delay
        await (wait or asyncio.sleep)(delay)
        if self.client.has_message_id(message_id):
            await self.open(message_id)
        return delay
