"""Keeps an AgentView current from `ContainerRuntime.watch`: the informer loop and its health.

The stream is reopened every `resync_s` (a fresh relist: the slow safety net against a missed
event), and whenever it breaks the view is marked unsynced, so readers go to the engine until the
next relist. `on_change(event, before)` hears every event with the container's previous state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from orchestrator.core.clock import utcnow
from orchestrator.core.models import ContainerInfo
from orchestrator.runtime import ContainerRuntime, WatchEvent
from orchestrator.rules.view import AgentView

log = logging.getLogger(__name__)


class Informer:
    def __init__(
        self,
        *,
        runtime: ContainerRuntime,
        scope: str,
        view: AgentView | None = None,
        resync_s: float = 300.0,
        clock: Callable[[], datetime] = utcnow,
        on_change: Callable[[WatchEvent, ContainerInfo | None], None] | None = None,
    ) -> None:
        self.view = view or AgentView()
        self._runtime = runtime
        self._scope = scope
        self._resync_s = resync_s
        self._clock = clock
        self._on_change = on_change
        self.relists = 0

    async def run_forever(self) -> None:
        while True:
            try:
                await self._follow_until_resync()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in a runtime's stream must not end the informer
                log.exception("informer stream failed; reopening")
                self.view.invalidate()
                await asyncio.sleep(1.0)

    async def _follow_until_resync(self) -> None:
        stream = self._runtime.watch(scope=self._scope)
        try:
            async with asyncio.timeout(self._resync_s):
                async for event in stream:
                    before = self.view.state.by_id.get(event.info.id) if event.info is not None else None
                    self.view.apply(event, now=self._clock())
                    self.relists += event.kind == "relist"
                    if self._on_change is not None:
                        self._on_change(event, before)
        except TimeoutError:
            pass  # time for a fresh relist: the view keeps answering meanwhile
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]

    async def wait_synced(self, *, timeout_s: float) -> bool:
        """For start-up and tests: True once the first relist has been applied."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.view.synced:
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def health(self, *, now: datetime) -> dict[str, object]:
        """What /healthz and /metrics show: synced, the view's age and the last event time."""
        last = self.view.last_event_at
        return {
            "synced": self.view.synced,
            "age_s": self.view.age_s(now=now),
            "last_event_at": last.isoformat() if last else None,
            "containers": len(self.view.state.by_id),
        }
