"""A real test participant (livekit rtc SDK) and bounded polling, for tests that meet agents in rooms."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from livekit import rtc

if TYPE_CHECKING:
    import httpx

T = TypeVar("T")
CHAT_TOPIC = "lk.chat"


async def eventually(probe: Callable[[], Awaitable[T | None]], *, timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `probe` until it returns something truthy, or fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass(frozen=True)
class Message:
    sender: str
    topic: str
    text: str


class Participant:
    """Joins a room as a human would and records what agents send it (tracks, text streams, data)."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.room = rtc.Room()  # inside the running loop: Room binds to the current loop
        self.texts: asyncio.Queue[Message] = asyncio.Queue()
        self.data: asyncio.Queue[Message] = asyncio.Queue()
        self.tracks: asyncio.Queue[tuple[str, rtc.Track]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> "Participant":
        room = self.room

        def on_text(reader: rtc.TextStreamReader, sender: str) -> None:
            async def read() -> None:
                self.texts.put_nowait(Message(sender, reader.info.topic, await reader.read_all()))

            task = asyncio.ensure_future(read())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        room.register_text_stream_handler(CHAT_TOPIC, on_text)
        room.on("data_received", lambda p: self.data.put_nowait(
            Message(p.participant.identity if p.participant else "", p.topic or "", p.data.decode(errors="replace"))
        ))
        room.on("track_subscribed", lambda track, pub, part: self.tracks.put_nowait((part.identity, track)))
        await asyncio.wait_for(room.connect(self.url, self.token), timeout=15)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.wait_for(self.room.disconnect(), timeout=5)

    async def next_text(self, *, sender: str | None = None, timeout: float = 10) -> Message:
        return await _next(self.texts, sender=sender, timeout=timeout, what="a text stream")

    async def next_data(self, *, sender: str | None = None, timeout: float = 10) -> Message:
        return await _next(self.data, sender=sender, timeout=timeout, what="a data packet")

    async def track_from(self, identity: str, *, timeout: float = 15) -> rtc.Track:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no track from {identity} within {timeout}s")
            who, track = await asyncio.wait_for(self.tracks.get(), timeout=left)
            if who == identity:
                return track


async def _next(queue: "asyncio.Queue[Message]", *, sender: str | None, timeout: float, what: str) -> Message:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {what} from {sender or 'anyone'} within {timeout}s")
        try:
            msg = await asyncio.wait_for(queue.get(), timeout=left)
        except asyncio.TimeoutError:
            raise AssertionError(f"no {what} from {sender or 'anyone'} within {timeout}s") from None
        if sender is None or msg.sender == sender:
            return msg


async def loudest_sample(track: rtc.Track, *, timeout: float, enough: int) -> int:
    """Read the track's audio until a sample reaches `enough` (the chime) or the time is up."""
    stream = rtc.AudioStream(track, sample_rate=24000, num_channels=1)
    peak = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and peak < enough:
            try:
                event = await asyncio.wait_for(stream.__anext__(), timeout=max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
            peak = max(peak, max((abs(s) for s in event.frame.data), default=0))
    finally:
        await stream.aclose()
    return peak


async def view_sees(api: "httpx.AsyncClient", container_id: str, *, status: str, timeout: float = 5.0) -> None:
    """Wait until an in-process app's watch-fed view holds `container_id` in `status` ("gone": absent) (a change made behind
    the orchestrator's back reaches the view within milliseconds, not instantly)."""
    view = api._transport.app.state.informer.view  # type: ignore[attr-defined]  # the app under test (app_client)

    async def caught_up() -> bool:
        info = view.state.by_id.get(container_id)
        return info is None if status == "gone" else (info is not None and info.status.value == status)

    await eventually(caught_up, timeout=timeout, what=f"the view to see {container_id[:12]} {status}", interval=0.01)
