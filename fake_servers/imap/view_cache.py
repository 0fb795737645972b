"""An LRU of parsed messages (MessageView) shared by every session of one server.

Why: mail clients re-fetch the same messages (headers, then structure, then bodies); parsing MIME once per
message instead of once per FETCH item keeps FETCH of thousands of messages fast. The key carries UIDVALIDITY,
so a mailbox deleted and created again never serves a stale view.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any


def _message_view_class() -> Any:
    from .message_view import MessageView  # imported late: written by another module owner

    return MessageView


class ViewCache:
    def __init__(self, size: int = 20000) -> None:
        self.size = size
        self._views: OrderedDict[tuple, Any] = OrderedDict()
        self._cls: Any = None

    def get(self, key: tuple, load: Callable[[], bytes]) -> Any:
        view = self._views.get(key)
        if view is not None:
            self._views.move_to_end(key)
            return view
        if self._cls is None:
            self._cls = _message_view_class()
        view = self._cls(load())
        self._views[key] = view
        if len(self._views) > self.size:
            self._views.popitem(last=False)
        return view
