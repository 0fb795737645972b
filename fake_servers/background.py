"""A domain server's background work: deliveries that outlive the SMTP session that started them, policy timers,
bounces; one set of tasks the lab can wait for (`wait_idle`) and cancel last (`stop`).

Why its own module: a message must never be left half delivered, whatever happens to the caller (a client that
drops the connection cancels the SMTP session's task). `run_protected` guarantees that without costing a task for
the common case; the trick (driving a coroutine eagerly, then handing it to a task) lives here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundTasks:
    """The tracked tasks of one domain (named "<domain>: <what>" for debugging)."""

    def __init__(self, domain: str) -> None:
        self.domain = domain
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """Background work of a policy (services.spawn): Lab.wait_idle() awaits it, stop() cancels it."""
        return self.track(coro, name or "policy task")

    def track(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.domain}: {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def run_protected(self, coro: Coroutine[Any, Any, T], name: str) -> T:
        """Run a delivery to its end whatever happens to the caller (a client dropping the connection cancels
        the SMTP session's task): a message must never be left half delivered.

        Eagerly: the coroutine runs in the caller's task until it first suspends. Most deliveries never do
        (policies decide, the store appends, the relay queue takes the message, all synchronously), and as nothing
        else can run meanwhile, no cancellation can reach them; they cost no task, no shield and no extra turns
        of the event loop (about a tenth of the delivery path's CPU time). A delivery that does suspend
        (an internal submit, a policy waiting for something) continues in a tracked task (Lab.wait_idle awaits
        it, stop() cancels it last), which the caller awaits through asyncio.shield as before. Caveat for policy
        authors: code before a policy's first suspension runs in the SMTP session's task, so bind timeouts
        with asyncio.wait_for, not asyncio.timeout (which binds to the current task).
        """
        try:
            first = coro.send(None)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        return await asyncio.shield(self.track(_resume(coro, first), name))

    async def wait(self) -> bool:
        """Until no task is left (tasks may start others); True if there was any."""
        waited = False
        while self._tasks:
            waited = True
            await asyncio.wait(set(self._tasks))
        return waited

    async def stop(self, grace: float = 5.0) -> None:
        """Let the tasks finish for `grace` seconds, then cancel the rest and wait for them to end."""
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class _Resumed:
    """Awaitable that goes on driving a coroutine which already yielded `first` outside any task (see
    BackgroundTasks.run_protected): it passes what the coroutine yields to the task, and what the task sends or
    throws (a wake-up, a cancellation) back into it, as `await` itself would."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self._coro, self._first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    value = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as done:
                    return done.value


async def _resume(coro: Coroutine[Any, Any, T], first: Any) -> T:
    return await _Resumed(coro, first)  # type: ignore[no-any-return]


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a policy's own timer task and wait until it has ended (None: there is none). The policies' stop()
    hooks use it, so a stopped domain never has a timer firing into a closed store."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
