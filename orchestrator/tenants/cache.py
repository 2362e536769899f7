"""A TTL cache that can bridge an outage: fresh entries are served, stale ones only when the source is down."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from ..errors import DependencyUnavailable
from ..locks import KeyedLocks

log = logging.getLogger(__name__)

V = TypeVar("V")


class OutageCache(Generic[V]):
    """Entries younger than `ttl_s` are fresh; older ones (up to `max_stale_s`) only stand in during an outage.

    Only successful lookups are cached: a NotFound goes back to the source next time, so a
    newly added agent is found at once. Concurrent misses of one key share one fetch.
    """

    def __init__(self, *, ttl_s: float, max_stale_s: float, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_s
        self._max_stale = max_stale_s
        self._what = what
        self._clock = clock
        self._entries: dict[Hashable, tuple[float, V]] = {}
        self._locks = KeyedLocks()
        # After a failed refresh, stale entries are served without asking again until this time,
        # so a slow source costs one timeout per back-off period, not one per request.
        self._down_until = float("-inf")

    def age(self, key: Hashable) -> float | None:
        """Seconds since `key` was last fetched; None when it is not cached."""
        return self._age(key)

    def _age(self, key: Hashable) -> float | None:
        entry = self._entries.get(key)
        return None if entry is None else self._clock() - entry[0]

    async def get(self, key: Hashable, fetch: Callable[[], Awaitable[V]], *, label: str) -> V:
        age = self._age(key)
        if age is not None and age < self._ttl:
            return self._entries[key][1]
        if age is not None and age <= self._ttl + self._max_stale and self._clock() < self._down_until:
            return self._entries[key][1]
        async with self._locks.hold(key):
            age = self._age(key)
            if age is not None and age < self._ttl:
                return self._entries[key][1]  # another waiter refreshed it
            try:
                value = await fetch()
            except DependencyUnavailable as exc:
                self._down_until = self._clock() + exc.retry_after
                if age is not None and age <= self._ttl + self._max_stale:
                    log.warning(
                        "%s unreachable (%s); serving the cached %s from %.0f s ago",
                        self._what, exc.message, label, age, extra={"cache_age_s": round(age, 1)},
                    )
                    return self._entries[key][1]
                raise DependencyUnavailable(
                    f"cannot load {label} and there is no cached copy: {exc.message}",
                    retry_after=exc.retry_after,
                ) from exc
            self._entries[key] = (self._clock(), value)
            self._down_until = float("-inf")
            return value

    def invalidate(self, match: Callable[[Hashable], bool] | None = None) -> int:
        """Expire every entry (or those whose key matches): the next lookup re-reads the source.

        Expired entries are kept as the outage fallback, so an invalidation during an outage
        does not turn a warm cache cold. Returns how many entries were expired.
        """
        expired_at = self._clock() - self._ttl
        keys = [k for k in self._entries if match is None or match(k)]
        for k in keys:
            self._entries[k] = (min(self._entries[k][0], expired_at), self._entries[k][1])
        return len(keys)

    def __len__(self) -> int:
        return len(self._entries)
