"""Swarm's side of `ContainerRuntime.watch`: a relist, then diffs of the two list calls, woken by manager events.

A mixin of the runtime (it calls the runtime's list and client); nothing else uses it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import docker

from orchestrator.core.errors import OrchestratorError
from orchestrator.core.models import ContainerInfo, WatchEvent
from orchestrator.core.retry import Backoff
from orchestrator.core.waiting import wait_event
from orchestrator.rules.naming import Label

log = logging.getLogger(__name__)


class ServiceWatch:
    """`watch` for the Swarm runtime."""

    _poll_s: float

    if TYPE_CHECKING:  # provided by the runtime and DockerAPI
        async def list_managed(self, *, scope: str) -> list[ContainerInfo]: ...

        def new_client(self) -> docker.DockerClient: ...

    async def watch(self, *, scope: str) -> AsyncIterator[WatchEvent]:
        """A relist, then upserts/deletes from diffing the two list calls every `poll_s` (and right after a
        service or container event from the manager). Task changes on other nodes raise no manager event,
        hence the poll. A failed list yields `broken`, and the next successful one a fresh `relist`.
        Events come from one loop in order, so `seq` is left unset."""
        known: dict[str, ContainerInfo] | None = None
        backoff = Backoff(first_s=0.5)
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        stop_events = self._follow_service_events(scope, lambda: loop.call_soon_threadsafe(wake.set))
        try:
            while True:
                try:
                    items = await self.list_managed(scope=scope)
                except OrchestratorError as exc:
                    delay = backoff.next()
                    log.warning("swarm watch: list failed (%s); relisting after %.1fs", exc.message, delay)
                    if known is not None:
                        yield WatchEvent(kind="broken")  # stop trusting the view until the relist below
                    known = None
                    await asyncio.sleep(delay)
                    continue
                backoff.reset()
                now = {i.id: i for i in items}
                if known is None:
                    yield WatchEvent(kind="relist", items=tuple(items))
                else:
                    for sid, info in now.items():
                        if known.get(sid) != info:
                            yield WatchEvent(kind="upsert", info=info)
                    for sid, info in known.items():
                        if sid not in now:
                            yield WatchEvent(kind="delete", info=info)
                known = now
                wake.clear()
                await wait_event(wake, timeout_s=self._poll_s)
        finally:
            stop_events()

    def _follow_service_events(self, scope: str, poke: Callable[[], None]) -> Callable[[], None]:
        """A thread on its own client reading the manager's service events (create/update/remove) of our scope."""
        stopped = threading.Event()
        current: list[Any] = []
        filters = {"type": ["service", "container"], "label": [f"{Label.MANAGED}=true", f"{Label.SCOPE}={scope}"]}

        def follow() -> None:
            while not stopped.is_set():
                client = None
                try:
                    client = self.new_client()
                    stream = client.api.events(decode=True, filters=filters)
                    current[:] = [stream]
                    poke()  # (re)connected: whatever happened meanwhile is picked up by a list now
                    for _ in stream:
                        poke()
                except Exception as exc:
                    if not stopped.is_set():
                        log.warning("swarm event stream broke (%s); reconnecting", type(exc).__name__)
                        stopped.wait(1.0)
                finally:
                    if client is not None:
                        client.close()

        def stop() -> None:
            stopped.set()
            for stream in current:
                try:
                    stream.close()
                except Exception:
                    pass

        threading.Thread(target=follow, name=f"swarm-events-{scope}", daemon=True).start()
        return stop
