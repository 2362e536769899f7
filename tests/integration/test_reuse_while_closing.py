"""A trigger that arrives while a pass closes its room (grace expired) gets a fresh agent or keeps the room —
never "reused" followed by the removal of that container."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import datetime, timezone
from collections.abc import Callable
from typing import Any

import docker
import httpx
import pytest
from livekit import api as lkapi
from livekit import rtc

from orchestrator.livekit.client import LiveKitGateway, agent_token
from orchestrator.core.models import LiveKitCredentials
from orchestrator.rules import room_metadata
from orchestrator.runtime.docker.runtime import DockerRuntime
from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID, app_client
from devtools.agent_room import eventually
from devtools.livekit_server import LiveKitServer

pytestmark = [pytest.mark.docker, pytest.mark.livekit]


class StopRacingRuntime(DockerRuntime):
    """At the first `stop` (the closing pass is removing the agent) a trigger for the same key starts."""

    during_stop: Callable[[], Any] | None = None
    trigger_task: asyncio.Task[httpx.Response] | None = None

    async def stop(self, name: str, *, timeout_s: int) -> None:
        start, self.during_stop = self.during_stop, None
        if start is not None:
            self.trigger_task = asyncio.create_task(start())
            # Let the trigger run as far as it can while this container is still running (bounded: with the
            # fix the trigger waits for the close, so it never finishes before we go on).
            await asyncio.wait({self.trigger_task}, timeout=3)
        await super().stop(name, timeout_s=timeout_s)


async def _room_exists(livekit: LiveKitServer, name: str) -> bool:
    async with lkapi.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        return bool((await lk.room.list_rooms(lkapi.ListRoomsRequest(names=[name]))).rooms)


async def _stamped(livekit: LiveKitServer, name: str) -> bool:
    async with lkapi.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        [room] = (await lk.room.list_rooms(lkapi.ListRoomsRequest(names=[name]))).rooms
    return room_metadata.triggered(room.metadata) is not None


async def _agents_in(livekit: LiveKitServer, name: str) -> int:
    async with lkapi.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        people = (await lk.room.list_participants(lkapi.ListParticipantsRequest(room=name))).participants
    return sum(p.kind == lkapi.ParticipantInfo.Kind.AGENT for p in people)


async def test_trigger_during_grace_expiry_removal_is_never_reused_then_removed(
    make_settings: Callable[..., Settings], docker_client: docker.DockerClient, livekit_server: LiveKitServer
) -> None:
    room = f"closing-{secrets.token_hex(4)}"
    body = {"agent_slug": "farah", "room_name": room, "user_id": "u", "client_id": CLIENT_ID}
    creds = LiveKitCredentials(url=livekit_server.url, api_key=livekit_server.api_key, api_secret=livekit_server.api_secret)  # type: ignore[arg-type]
    runtime = StopRacingRuntime()
    stand_in = rtc.Room()  # the tiny image never joins LiveKit: a participant of kind agent stands in for it
    settings = make_settings(grace_period_s=0, agent_startup_timeout_s=0)
    try:
        async with app_client(settings, runtime=runtime) as c:
            old = await c.post("/api/v1/trigger-agent", json=body)
            assert old.status_code == 201, old.text
            await stand_in.connect(creds.url, agent_token(creds, slug="farah", name="Farah", room=room, ttl_s=600))
            await eventually(lambda: _agents_in(livekit_server, room), timeout=10, what="the agent in the room", interval=0.05)

            runtime.during_stop = lambda: c.post("/api/v1/trigger-agent", json=body)
            report = (await c.post("/api/v1/admin/reconcile")).json()
            assert runtime.trigger_task is not None, f"the pass removed nothing: {report}"
            racing = await runtime.trigger_task
            assert racing.status_code in (200, 201), racing.text  # reused or created: both are checked below
            answer = racing.json()

            container = docker_client.containers.get(answer["container_id"])  # NotFound = reused, then removed
            assert container.status == "running", (answer["status"], container.status)
            assert await _room_exists(livekit_server, room), f"{answer['status']} but the room was deleted: {report}"
            if answer["status"] == "created":
                assert answer["container_id"] != old.json()["container_id"]
            rooms = (await c.get("/api/v1/admin/rooms")).json()["rooms"]
            assert [r["state"] for r in rooms if r["room"] == room] in (["starting"], ["grace_period"], ["active"])
    finally:
        await stand_in.disconnect()


class ListRacingRuntime(DockerRuntime):
    """Runs `before_list` once, as the pass starts observing (after it took its observation time)."""

    before_list: Callable[[], Any] | None = None

    async def list_managed(self, *, scope: str):  # type: ignore[no-untyped-def]
        step, self.before_list = self.before_list, None
        if step is not None:
            await step()
        return await super().list_managed(scope=scope)


async def test_trigger_in_another_process_keeps_the_room_it_reused(
    make_settings: Callable[..., Settings], docker_client: docker.DockerClient, livekit_server: LiveKitServer
) -> None:
    """Process A reuses the agent of a room in grace while process B's pass is about to close it: B sees A's
    stamp in the room metadata and keeps the room (and the agent A answered with)."""
    room = f"twoproc-{secrets.token_hex(4)}"
    body = {"agent_slug": "farah", "room_name": room, "user_id": "u", "client_id": CLIENT_ID}
    creds = LiveKitCredentials(url=livekit_server.url, api_key=livekit_server.api_key, api_secret=livekit_server.api_secret)  # type: ignore[arg-type]
    stand_in = rtc.Room()
    b_runtime = ListRacingRuntime()
    try:
        async with app_client(make_settings()) as a, app_client(make_settings(grace_period_s=0, agent_startup_timeout_s=0), runtime=b_runtime) as b:
            first = await a.post("/api/v1/trigger-agent", json=body)
            assert first.status_code == 201, first.text
            await stand_in.connect(creds.url, agent_token(creds, slug="farah", name="Farah", room=room, ttl_s=600))
            await eventually(lambda: _agents_in(livekit_server, room), timeout=10, what="the agent in the room", interval=0.05)
            # The room has been in grace for an hour, as B (and any process) can read from its metadata.
            async with lkapi.LiveKitAPI(livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret) as lk:
                [lk_room] = (await lk.room.list_rooms(lkapi.ListRoomsRequest(names=[room]))).rooms
                meta = {**json.loads(lk_room.metadata), "orchestrator_grace_started_at": "2020-01-01T00:00:00+00:00"}
                await lk.room.update_room_metadata(lkapi.UpdateRoomMetadataRequest(room=room, metadata=json.dumps(meta)))

            answers: list[httpx.Response] = []

            async def trigger_in_a() -> None:
                answers.append(await a.post("/api/v1/trigger-agent", json=body))
                # A repeated its trigger seconds after its own claim, so its claim may follow its answer
                # (rules.rooms.claim_may_follow); B reads the room once that claim stamped it, as any close would:
                # none can come due within the seconds that rule allows.
                await eventually(lambda: _stamped(livekit_server, room), timeout=10, what="A's trigger stamp", interval=0.02)

            b_runtime.before_list = trigger_in_a
            report = (await b.post("/api/v1/admin/reconcile")).json()
            [again] = answers
            assert again.status_code == 200 and again.json()["status"] == "reused", again.text
            assert docker_client.containers.get(again.json()["container_id"]).status == "running", report
            assert await _room_exists(livekit_server, room), report
            assert any(r.get("skipped") for r in report["actions"]), report
    finally:
        await stand_in.disconnect()


class HeldCreateRoom(LiveKitGateway):
    """The real gateway, but CreateRoom waits for `release` once it is set (LiveKit slow, or far away)."""

    release: asyncio.Event | None = None
    calls = 0

    async def ensure_room(self, creds: LiveKitCredentials, **kw: Any) -> Any:  # type: ignore[override]
        self.calls += 1
        if self.release is not None:
            await self.release.wait()
        return await super().ensure_room(creds, **kw)


async def test_a_reload_before_anyone_joined_answers_before_its_room_claim_which_follows(
    make_settings: Callable[..., Settings], livekit_server: LiveKitServer
) -> None:
    """A trigger repeated seconds after our own claim, nobody in the room yet, answers `reused` without waiting on
    LiveKit; its claim follows under the room's lock and stamps the trigger once the room is in grace."""
    room = f"reload-{secrets.token_hex(4)}"
    body = {"agent_slug": "farah", "room_name": room, "user_id": "u", "client_id": CLIENT_ID}
    gateway = HeldCreateRoom()
    # The orchestrator's clock stands still: "seconds after our own claim" holds on a loaded machine too.
    at = datetime.now(timezone.utc)
    async with app_client(make_settings(), livekit=gateway, clock=lambda: at) as c:
        first = await c.post("/api/v1/trigger-agent", json=body)
        assert first.status_code == 201, first.text
        assert gateway.calls == 1
        # The room in grace, as another process may have persisted it: the following claim must stamp the trigger.
        async with lkapi.LiveKitAPI(livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret) as lk:
            [lk_room] = (await lk.room.list_rooms(lkapi.ListRoomsRequest(names=[room]))).rooms
            meta = {**json.loads(lk_room.metadata), "orchestrator_grace_started_at": "2020-01-01T00:00:00+00:00"}
            await lk.room.update_room_metadata(lkapi.UpdateRoomMetadataRequest(room=room, metadata=json.dumps(meta)))
        gateway.release = release = asyncio.Event()  # LiveKit "hangs" from now on
        try:
            again = await asyncio.wait_for(c.post("/api/v1/trigger-agent", json=body), timeout=5)
            assert again.status_code == 200 and again.json()["status"] == "reused", again.text
            assert again.json()["container_id"] == first.json()["container_id"]
            assert not await _stamped(livekit_server, room)  # answered while its claim still waits on LiveKit

            async def following_claim_asked() -> bool:
                return gateway.calls == 2

            await eventually(following_claim_asked, timeout=5, what="the following claim's CreateRoom", interval=0.01)
        finally:
            release.set()  # also on failure: the app's shutdown waits for the following claim
        await eventually(lambda: _stamped(livekit_server, room), timeout=10, what="the trigger stamp", interval=0.02)
