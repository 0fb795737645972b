"""An LRU of parsed messages (MessageView) shared by every session of one server.

Why: mail clients re-fetch the same messages (headers, then structure, then bodies); parsing MIME once per
message instead of once per FETCH item keeps FETCH of thousands of messages fast. The key carries UIDVALIDITY,
so a mailbox deleted and created again never serves a stale view.

Why bounded in bytes as well as in views: a view keeps its raw message (up to the largest literal the server
takes) and, once parsed, its MIME tree and remembered answers (up to MimeLimits' worth); a count alone would
let 20,000 large or hostile messages pin gigabytes. A view grows after the cache handed it out (when it is
first parsed), so each view tells the cache when it does, and the cache evicts then.

The server's SORT/THREAD key cache (imap/sort_keys.py) hangs off its ViewCache (`sort_keys`): every session
of a server shares its ViewCache, and keys are cached under the same message keys.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any

from .tree import DEFAULT_LIMITS, MimeLimits


def _message_view_class() -> Any:
    from .view import MessageView  # imported late: message_view imports the serialiser stack

    return MessageView


class ViewCache:
    """Views by key, least recently used dropped first when there are more than `size` of them or they
    weigh more than `max_bytes` together (the most recently used one is never dropped). Views are built with
    `limits` (the server's MimeLimits)."""

    def __init__(self, size: int = 20000, limits: MimeLimits = DEFAULT_LIMITS,
                 max_bytes: int = 64 * 1024 * 1024) -> None:
        self.size = size
        self.limits = limits
        self.max_bytes = max_bytes
        self._views: OrderedDict[tuple, Any] = OrderedDict()
        self._weights: dict[tuple, int] = {}
        self._total = 0
        self._cls: Any = None
        self._sort_keys: Any = None

    @property
    def sort_keys(self) -> Any:
        """The SortKeyCache of the same messages (made on first use)."""
        if self._sort_keys is None:
            from ..sort_keys import SortKeyCache  # imported late: sort_keys imports the search stack

            self._sort_keys = SortKeyCache()
        return self._sort_keys

    @property
    def total_weight(self) -> int:
        """What the cached views weigh together (bytes, roughly)."""
        return self._total

    def get(self, key: tuple, load: Callable[[], bytes]) -> Any:
        view = self._views.get(key)
        if view is not None:
            self._views.move_to_end(key)
            return view
        if self._cls is None:
            self._cls = _message_view_class()
        view = self._cls(load(), self.limits, on_grow=partial(self._grew, key))
        self._views[key] = view
        self._weights[key] = weight = view.weight
        self._total += weight
        self._evict()
        return view

    def _grew(self, key: tuple, delta: int) -> None:
        if key in self._weights:
            self._weights[key] += delta
            self._total += delta
            self._evict()

    def _evict(self) -> None:
        while len(self._views) > 1 and (len(self._views) > self.size or self._total > self.max_bytes):
            old, _ = self._views.popitem(last=False)
            self._total -= self._weights.pop(old)

    def clear(self) -> None:
        """Forget every view (their memory goes back at once, unless a session still holds one)."""
        self._views.clear()
        self._weights.clear()
        self._total = 0
        if self._sort_keys is not None:
            self._sort_keys.clear()
