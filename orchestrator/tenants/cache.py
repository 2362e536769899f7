"""A TTL cache that can bridge an outage: fresh entries are served, stale ones only while their source is down."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from orchestrator.core.errors import DependencyUnavailable, PermanentError, TemporaryError
from orchestrator.core.locks import KeyedLocks

log = logging.getLogger(__name__)

V = TypeVar("V")


class OutageCache(Generic[V]):
    """Entries younger than `ttl_s` are fresh; older ones (up to `max_stale_s`) only stand in during an outage.

    Only successful lookups are cached: a NotFound goes back to the source next time, so a
    newly added agent is found at once. Concurrent misses of one key share one fetch.

    An outage is a *temporary* failure (transport, timeout, 5xx) and belongs to the key whose fetch
    failed: other keys keep asking their source. A *permanent* failure (a row that cannot be
    decrypted, a deactivated client) is never bridged: the entry is dropped and the error raised.
    """

    def __init__(self, *, ttl_s: float, max_stale_s: float, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_s
        self._max_stale = max_stale_s
        self._what = what
        self._clock = clock
        self._entries: dict[Hashable, tuple[float, V]] = {}
        self._locks = KeyedLocks()
        # After a failed refresh of a key, its stale entry is served without asking again until
        # then, so a slow source costs one timeout per back-off period, not one per request.
        # Only keys with an entry are recorded, so this is bounded by the entries.
        self._down_until: dict[Hashable, float] = {}

    def age(self, key: Hashable) -> float | None:
        """Seconds since `key` was last fetched; None when it is not cached."""
        return self._age(key)

    def _age(self, key: Hashable) -> float | None:
        entry = self._entries.get(key)
        return None if entry is None else self._clock() - entry[0]

    def _bridgeable(self, age: float | None) -> bool:
        return age is not None and age <= self._ttl + self._max_stale

    async def get(self, key: Hashable, fetch: Callable[[], Awaitable[V]], *, label: str) -> V:
        age = self._age(key)
        if age is not None and age < self._ttl:
            return self._entries[key][1]
        if self._bridgeable(age) and self._clock() < self._down_until.get(key, float("-inf")):
            return self._entries[key][1]
        async with self._locks.hold(key):
            age = self._age(key)
            if age is not None and age < self._ttl:
                return self._entries[key][1]  # another waiter refreshed it
            try:
                value = await fetch()
            except TemporaryError as exc:
                if self._bridgeable(age):
                    self._down_until[key] = self._clock() + exc.retry_after
                    log.warning(
                        "%s unavailable (%s); serving the cached %s from %.0f s ago",
                        self._what, exc.message, label, age, extra={"cache_age_s": round(age or 0.0, 1)},
                    )
                    return self._entries[key][1]
                raise DependencyUnavailable(
                    f"cannot load {label} and there is no cached copy: {exc.message}",
                    retry_after=exc.retry_after,
                ) from exc
            except PermanentError:
                self._forget(key)
                raise
            self._entries[key] = (self._clock(), value)
            self._down_until.pop(key, None)
            return value

    def _forget(self, key: Hashable) -> None:
        self._entries.pop(key, None)
        self._down_until.pop(key, None)

    def invalidate(self, match: Callable[[Hashable], bool] | None = None) -> int:
        """Expire every entry (or those whose key matches): the next lookup re-reads the source.

        Expired entries are kept as the outage fallback, so an invalidation during an outage
        does not turn a warm cache cold; their back-off is cleared, so the re-read always happens.
        Returns how many entries were expired.
        """
        expired_at = self._clock() - self._ttl
        keys = [k for k in self._entries if match is None or match(k)]
        for k in keys:
            self._entries[k] = (min(self._entries[k][0], expired_at), self._entries[k][1])
            self._down_until.pop(k, None)
        return len(keys)

    def __len__(self) -> int:
        return len(self._entries)
