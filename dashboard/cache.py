"""The dashboard process's memory of collector replies it has already fetched.

Browsers keep only small keys (run, version) in their dcc.Stores; the points stay here, so a
change of colour, layer filter or selection redraws without sending thousands of points from
the browser to the server and back, and without asking the collector again.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable

from acestep_viz.dashboard.hover import HoverTexts

DEFAULT_ENTRIES = 64


class ReplyCache:
    """A small thread-safe LRU of replies, keyed by anything hashable, and the hover labels of the
    latest snapshots (``hover``: reused for the rows a new snapshot shares with the one before)."""

    def __init__(self, entries: int = DEFAULT_ENTRIES):
        self.entries = entries
        self.hover = HoverTexts()
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.entries:
                self._items.popitem(last=False)

    def get(self, key: Hashable) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            return None

    def fetch(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """The cached reply, or ``load()``'s (outside the lock: a slow collector blocks no one else)."""
        found = self.get(key)
        if found is None:
            found = load()
            self.put(key, found)
        return found

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
        self.hover.clear()
