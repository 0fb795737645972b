"""The servers' activity feed: what the lab's domains did, as a stream anyone above may follow.

Why a feed of its own: the store's events say what changed in a mailbox, but not why or on which hop: a message
accepted at submission, handed to another domain's MX, held by delayed send, a recall honoured or refused. A
teacher's console and a test waiting for "the relay hop happened" need those in the order they happened, pushed
to them rather than polled. One `Activity` is shared by every domain of a lab (passed in, like the clock), so its
sequence numbers order events across domains.

Listeners run synchronously on the event loop's thread, like the store's; one that raises is logged and the
others still hear the event. The history is bounded (`keep` entries): a lab that runs for days does not grow.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

ActivityEntry = dict[str, Any]
ActivityListener = Callable[[ActivityEntry], None]


class Activity:
    """A bounded, ordered feed of server events; see the module docstring."""

    def __init__(self, *, keep: int = 10_000, wallclock: Callable[[], float] = time.time) -> None:
        self._entries: deque[ActivityEntry] = deque(maxlen=max(1, keep))
        self._listeners: list[ActivityListener] = []
        self._seq = itertools.count(1)
        self._wallclock = wallclock

    def publish(self, domain: str, event: str, **fields: Any) -> ActivityEntry:
        """Record one event; every listener hears it before this returns."""
        entry: ActivityEntry = {"seq": next(self._seq),
                                "at": datetime.fromtimestamp(self._wallclock(), UTC).isoformat(),
                                "domain": domain, "event": event, **fields}
        self._entries.append(entry)
        for listener in tuple(self._listeners):
            try:
                listener(entry)
            except Exception:  # noqa: BLE001 - one bad listener must not hide the event from the others
                log.exception("activity listener %r failed on %r", listener, entry)
        return entry

    def subscribe(self, listener: ActivityListener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: ActivityListener) -> None:
        """Unknown listeners are ignored (a closing page may unsubscribe twice)."""
        try:
            self._listeners.remove(listener)
        except ValueError:
            pass

    def since(self, seq: int = 0) -> list[ActivityEntry]:
        """The kept entries after `seq`, oldest first."""
        return [e for e in self._entries if e["seq"] > seq]

    def __len__(self) -> int:
        return len(self._entries)
