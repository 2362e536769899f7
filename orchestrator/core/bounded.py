"""A map that keeps only its newest entries: for what is remembered per container or per room in a long-lived process."""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Newest(Generic[K, V]):
    """At most `cap` entries; a put makes its key the newest and drops the oldest over the cap, and, with `max_age`,
    those put longer than that before it (memory then follows the rate of puts, not the history).

    Thread-safe (the Docker runtime writes from its worker threads and the event loop): a key that is
    never removed again (a late event after a removal, a room never seen again) costs nothing for ever.
    """

    def __init__(self, *, cap: int, max_age: timedelta | None = None) -> None:
        if cap < 1:
            raise ValueError("cap must be at least 1")
        self.cap = cap
        self.max_age = max_age
        self._items: OrderedDict[K, tuple[V, datetime | None]] = OrderedDict()  # key → (value, put at), oldest first
        self._lock = threading.Lock()

    def put(self, key: K, value: V, *, now: datetime | None = None) -> None:
        """`now` is needed for the age bound (entries put without it never expire by age)."""
        with self._lock:
            self._items[key] = (value, now)
            self._items.move_to_end(key)
            while self._items:
                _, at = next(iter(self._items.values()))
                expired = self.max_age is not None and now is not None and at is not None and now - at >= self.max_age
                if len(self._items) <= self.cap and not expired:
                    break
                self._items.popitem(last=False)

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        return item[0] if item is not None else None

    def pop(self, key: K) -> V | None:
        with self._lock:
            item = self._items.pop(key, None)
        return item[0] if item is not None else None

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)
