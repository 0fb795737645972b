"""The store's listener list: synchronous, in-order delivery of every change to every subscriber.

Why isolate it: a listener that raises (a half-closed IMAP session, a buggy policy) must not undo or hide a
change that already happened, nor keep later listeners from hearing it; the error is logged instead.
"""

from __future__ import annotations

import logging

from recall_lab.fake_servers.store.base import Listener, StoreEvent

log = logging.getLogger(__name__)


class EventBus:
    __slots__ = ("_listeners",)

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Removes the listener; unknown listeners are ignored (a session may unsubscribe twice on close)."""
        try:
            self._listeners.remove(listener)
        except ValueError:
            pass

    def publish(self, event: StoreEvent) -> None:
        # Iterate over a copy: a listener may unsubscribe itself (or subscribe another) while hearing an event.
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - one bad listener must not break the store for the others
                log.exception("store listener %r failed on %r", listener, event)

    def __len__(self) -> int:
        return len(self._listeners)
