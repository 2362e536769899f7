"""The one retry policy (tenacity) for engine calls and the backoff of every watch and reconnect loop.

Jitter everywhere: many agents' calls and several processes' watches fail together when an engine hiccups,
and retries in lockstep would hit it together again.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

from tenacity import AsyncRetrying, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential


def engine_retry(*, attempts: int, transient: Callable[[BaseException], bool], cap_s: float = 2.0) -> Retrying:
    """A blocking call retried on transient errors only, `attempts` in all, the last error re-raised."""
    return Retrying(
        retry=retry_if_exception(transient), stop=stop_after_attempt(max(1, attempts)),
        wait=wait_random_exponential(multiplier=0.1, max=cap_s), reraise=True,
    )


def async_engine_retry(*, attempts: int, transient: Callable[[BaseException], bool], cap_s: float = 2.0) -> AsyncRetrying:
    """The same policy for an awaitable call (the Kubernetes client is async)."""
    return AsyncRetrying(
        retry=retry_if_exception(transient), stop=stop_after_attempt(max(1, attempts)),
        wait=wait_random_exponential(multiplier=0.1, max=cap_s), reraise=True,
    )


class Backoff:
    """Delays for a loop that reconnects forever: random exponential (full jitter, tenacity's), reset on success."""

    def __init__(self, *, first_s: float = 0.2, cap_s: float = 10.0) -> None:
        self._wait = wait_random_exponential(multiplier=first_s, max=cap_s)
        self._failures = 0

    def next(self) -> float:
        """The delay before the next attempt after one more failure."""
        self._failures += 1
        return float(self._wait(SimpleNamespace(attempt_number=self._failures)))  # type: ignore[arg-type]

    def reset(self) -> None:
        self._failures = 0

    @property
    def failures(self) -> int:
        return self._failures
