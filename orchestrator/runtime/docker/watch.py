"""Docker's side of `ContainerRuntime.watch`: the event stream turned into relist/upsert/delete.

Order matters and is kept: subscribe first, then list (the relist), then apply what the stream
delivered meanwhile. Each event is resolved by inspecting the container (one call for a burst:
events are drained and deduplicated by id first), so what the view stores is the engine's state
*after* the event, never a guess from the event's text. A destroyed container is a delete.
The stream runs in a thread on its own client (a stream holds its connection for ever).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

from orchestrator.core.errors import OrchestratorError
from orchestrator.core.models import ContainerInfo, ContainerStatus
from orchestrator.rules.naming import Label
from orchestrator.core.retry import Backoff
from orchestrator.runtime import WatchEvent

log = logging.getLogger(__name__)

# health_status is fuzzy-matched by the daemon ("health_status: healthy"); exec_* (every healthcheck) is left out.
_ACTIONS = ["create", "start", "restart", "die", "stop", "kill", "destroy", "rename", "health_status",
            "pause", "unpause", "oom", "update"]


class _Engine(Protocol):
    async def get(self, name: str) -> ContainerInfo | None: ...
    async def list_managed(self, *, scope: str) -> list[ContainerInfo]: ...
    def open_event_stream(self, filters: dict[str, Any]) -> tuple[Iterator[dict[str, Any]], Callable[[], None]]: ...


class _StreamEnded(Exception):
    """The daemon closed the stream or it broke: relist after reconnecting."""


class _Pump:
    """Reads the blocking event stream in a thread and hands events to the loop through a queue."""

    def __init__(self, open_stream: Callable[[], tuple[Iterator[dict[str, Any]], Callable[[], None]]]) -> None:
        self._open = open_stream
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._closers: list[Callable[[], None]] = []
        self._stopped = threading.Event()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        put = lambda item: loop.call_soon_threadsafe(self._queue.put_nowait, item)  # noqa: E731

        def run() -> None:
            try:
                stream, close = self._open()
                self._closers.append(close)
                put(("open", None))
                for ev in stream:
                    if self._stopped.is_set():
                        return
                    put(("event", ev))
                put(("end", None))
            except Exception as exc:  # daemon down or restarting, socket closed by close()
                if not self._stopped.is_set():
                    put(("end", exc))

        threading.Thread(target=run, name="docker-watch", daemon=True).start()

    async def opened(self) -> None:
        kind, payload = await self._queue.get()
        if kind != "open":
            raise _StreamEnded(repr(payload))

    async def batch(self) -> list[dict[str, Any]]:
        """At least one event; everything already queued comes along (a burst costs one resolve)."""
        items = [await self._queue.get()]
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        events = []
        for kind, payload in items:
            if kind != "event":
                raise _StreamEnded(repr(payload))
            events.append(payload)
        return events

    def close(self) -> None:
        self._stopped.set()
        for close in self._closers:
            try:
                close()
            except Exception:  # already closed
                pass


async def _resolve(engine: _Engine, events: list[dict[str, Any]]) -> list[WatchEvent]:
    """The newest event per container, each resolved to the container's state now (inspect)."""
    last: dict[str, dict[str, Any]] = {}
    note = getattr(engine, "note_exit", None)
    for ev in events:
        attrs = (ev.get("Actor") or {}).get("Attributes") or {}
        if note is not None and str(ev.get("Action") or ev.get("status")) == "die" and str(attrs.get("exitCode", "")).isdigit():
            # Docker may restart it before we inspect (resetting its exit code): remember why it died, even when a
            # newer event of the same container replaces this one below.
            note(attrs.get("name", ""), int(attrs["exitCode"]))
        cid = ev.get("id") or (ev.get("Actor") or {}).get("ID")
        if cid:
            last.pop(cid, None)
            last[cid] = ev  # keeps the order of each container's newest event

    async def one(cid: str, ev: dict[str, Any]) -> WatchEvent:
        seq = ev.get("timeNano")
        attrs = (ev.get("Actor") or {}).get("Attributes") or {}
        gone = WatchEvent(
            kind="delete", seq=seq,
            info=ContainerInfo(id=cid, name=attrs.get("name", ""), status=ContainerStatus.dead, labels={}),
        )
        if str(ev.get("Action") or ev.get("status")) == "destroy":
            return gone
        info = await engine.get(cid)
        return gone if info is None else WatchEvent(kind="upsert", info=info, seq=seq)

    return list(await asyncio.gather(*(one(cid, ev) for cid, ev in last.items())))


async def watch_docker(engine: _Engine, *, scope: str) -> AsyncIterator[WatchEvent]:
    """Relist, then changes; after a break: `broken`, backoff, reconnect, relist. Ends when the consumer closes it."""
    filters = {"type": "container", "label": [f"{Label.MANAGED}=true", f"{Label.SCOPE}={scope}"], "event": _ACTIONS}
    backoff = Backoff()
    while True:
        pump = _Pump(lambda: engine.open_event_stream(filters))
        try:
            pump.start()
            await pump.opened()
            yield WatchEvent(kind="relist", items=tuple(await engine.list_managed(scope=scope)))
            backoff.reset()
            while True:
                for change in await _resolve(engine, await pump.batch()):
                    yield change
        except (_StreamEnded, OrchestratorError) as exc:
            log.warning("docker watch for scope %s broke (%s); reconnecting", scope, exc)
        finally:
            pump.close()
        yield WatchEvent(kind="broken")
        await asyncio.sleep(backoff.next())
