"""Room lifecycle end to end: real Docker engine, real livekit-server whose webhooks hit a real orchestrator port."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from livekit import api, rtc

from orchestrator.livekit.client import agent_token, user_token
from orchestrator.core.models import ContainerKey, LiveKitCredentials
from orchestrator.rules.naming import Label, container_labels, container_name
from orchestrator.core.models import Agent, Mode
from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID, write_tenants
from devtools.agent_room import eventually
from devtools.docker_helpers import TINY_IMAGE, remove_scope
from devtools.livekit_server import LiveKitServer
from devtools.orchestrator_server import OrchestratorServer, start_orchestrator

pytestmark = [pytest.mark.docker, pytest.mark.livekit]
GRACE_S = 4.0


@pytest.fixture
def creds(hooked_livekit: LiveKitServer) -> LiveKitCredentials:
    return LiveKitCredentials(url=hooked_livekit.url, api_key=hooked_livekit.api_key, api_secret=hooked_livekit.api_secret)  # type: ignore[arg-type]


@pytest.fixture
def hook_settings(scope: str, tmp_path: Path, hooked_livekit: LiveKitServer, orch_port: int) -> Callable[..., Settings]:
    tenants = write_tenants(tmp_path / "tenants.yaml", hooked_livekit)

    def make(**overrides: object) -> Settings:
        base: dict[str, object] = {
            "scope": scope, "tenants_file": tenants, "agent_image": TINY_IMAGE, "agent_memory": "64m",
            "agent_cpus": 0.2, "agent_stop_timeout_s": 2, "port": orch_port, "grace_period_s": GRACE_S,
            # The tiny image never joins LiveKit; tests stand a participant in for the agent instead.
            "agent_startup_timeout_s": 0, "reconcile_interval_s": 30,
        }
        return Settings(**{**base, **overrides})  # type: ignore[arg-type]

    return make


@pytest.fixture
async def orchestrators(request: pytest.FixtureRequest, hooked_livekit: LiveKitServer) -> AsyncIterator[list[OrchestratorServer]]:
    """Servers a test starts are stopped at its end (the LiveKit log is printed on failure)."""
    started: list[OrchestratorServer] = []
    yield started
    for s in started:
        await s.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"\n==== livekit-server log ====\n{hooked_livekit.log_tail()}")


@pytest.fixture
async def participants() -> AsyncIterator[list[rtc.Room]]:
    rooms: list[rtc.Room] = []
    yield rooms
    for r in rooms:
        await r.disconnect()



async def join(url: str, token: str, rooms: list[rtc.Room]) -> rtc.Room:
    room = rtc.Room()
    await room.connect(url, token)
    rooms.append(room)
    return room


async def admin_room(base: str, room: str) -> dict[str, Any] | None:
    async with httpx.AsyncClient() as c:
        rows = (await c.get(f"{base}/api/v1/admin/rooms")).json()["rooms"]
    return next((r for r in rows if r["room"] == room), None)


def state_is(base: str, room: str, state: str) -> Callable[[], Awaitable[dict[str, Any] | None]]:
    async def check() -> dict[str, Any] | None:
        row = await admin_room(base, room)
        return row if row and row["state"] == state else None

    return check


def status_of(dc: docker.DockerClient, name: str) -> str | None:
    try:
        return dc.containers.get(name).status
    except docker.errors.NotFound:
        return None


async def trigger(base: str, room: str, slug: str = "farah") -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(f"{base}/api/v1/trigger-agent",
                         json={"agent_slug": slug, "room_name": room, "user_id": "alice", "client_id": CLIENT_ID})
    assert r.status_code in (200, 201), r.text
    return r.json()


async def active_room(srv: OrchestratorServer, creds: LiveKitCredentials, people: list[rtc.Room]) -> tuple[str, dict[str, Any], rtc.Room]:
    """Trigger an agent, stand a participant in for it (kind agent), join a human; wait for ACTIVE."""
    room = f"room-{secrets.token_hex(3)}"
    out = await trigger(srv.base_url, room)
    await join(creds.url, agent_token(creds, slug="farah", name="Farah", room=room, ttl_s=600), people)
    human = await join(creds.url, out["user_token"], people)
    await eventually(state_is(srv.base_url, room, "active"), timeout=10, what="room active", interval=0.05)
    # Both test tenants share one LiveKit key: the room metadata names the owner, so only it gets an entry.
    async with httpx.AsyncClient() as c:
        owners = [r["client_id"] for r in (await c.get(f"{srv.base_url}/api/v1/admin/rooms")).json()["rooms"] if r["room"] == room]
    assert owners == [CLIENT_ID]
    return room, out, human


async def test_leave_stops_after_grace_not_before(hook_settings, orchestrators, participants, creds, docker_client) -> None:
    srv = await start_orchestrator(hook_settings())
    orchestrators.append(srv)
    room, out, human = await active_room(srv, creds, participants)
    name = out["container_name"]

    left_at = time.monotonic()
    await human.disconnect()
    await eventually(state_is(srv.base_url, room, "grace_period"), timeout=5, what="grace period", interval=0.05)
    while time.monotonic() < left_at + GRACE_S - 0.3:  # all through the grace the agent stays
        assert status_of(docker_client, name) == "running", "container stopped before the grace period ended"
        await asyncio.sleep(0.1)
    await eventually(lambda: asyncio.to_thread(lambda: status_of(docker_client, name) is None), timeout=GRACE_S + 5, what="container removed", interval=0.05)
    closed_after = time.monotonic() - left_at
    print(f"\nclosed {closed_after:.2f}s after the human left (grace {GRACE_S}s)")
    assert closed_after >= GRACE_S
    async with api.LiveKitAPI(creds.url.replace("ws", "http"), creds.api_key, creds.api_secret.get_secret_value()) as lk:
        async def room_gone() -> bool:  # the close removes the agent, then deletes the room (a CI run saw it lag)
            return not (await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))).rooms

        await eventually(room_gone, timeout=10, what="the LiveKit room deleted with the agent", interval=0.1)


async def test_rejoin_within_grace_keeps_agent(hook_settings, orchestrators, participants, creds, docker_client) -> None:
    srv = await start_orchestrator(hook_settings())
    orchestrators.append(srv)
    room, out, human = await active_room(srv, creds, participants)
    left_at = time.monotonic()
    await human.disconnect()
    await eventually(state_is(srv.base_url, room, "grace_period"), timeout=5, what="grace period", interval=0.05)
    await join(creds.url, user_token(creds, identity="alice", room=room, ttl_s=600), participants)
    await eventually(state_is(srv.base_url, room, "active"), timeout=5, what="active again", interval=0.05)
    while time.monotonic() < left_at + GRACE_S + 2:  # well past the cancelled deadline
        assert status_of(docker_client, out["container_name"]) == "running"
        await asyncio.sleep(0.2)


async def test_killed_agent_with_human_is_replaced_within_seconds(hook_settings, orchestrators, participants, creds, docker_client) -> None:
    srv = await start_orchestrator(hook_settings(reconcile_interval_s=60))  # the poll is far away: events must do it
    orchestrators.append(srv)
    room, out, _ = await active_room(srv, creds, participants)
    name, old_id = out["container_name"], out["container_id"]
    await asyncio.sleep(0.3)  # let the follower's stream settle is not needed for correctness; the poll below decides
    killed_at = time.monotonic()
    await asyncio.to_thread(lambda: docker_client.api.kill(name))

    def replaced() -> bool:
        try:
            c = docker_client.containers.get(name)
        except docker.errors.NotFound:
            return False
        return c.id != old_id and c.status == "running"

    await eventually(lambda: asyncio.to_thread(replaced), timeout=10, what="a new container", interval=0.05)
    print(f"\nreplacement running {time.monotonic() - killed_at:.2f}s after docker kill")
    assert time.monotonic() - killed_at < 5


async def test_duplicates_and_foreign_scope(hook_settings, orchestrators, creds, docker_client, scope) -> None:
    srv = await start_orchestrator(hook_settings())
    orchestrators.append(srv)
    room = f"room-{secrets.token_hex(3)}"
    out = await trigger(srv.base_url, room)
    key = ContainerKey(client_id=CLIENT_ID, agent_slug="farah", room=room)
    agent = Agent(id="agent-farah", slug="farah", name="Farah")

    def labelled(scope_value: str) -> dict[str, str]:
        from datetime import datetime, timezone
        return container_labels(key, agent=agent, mode=Mode.voice, scope=scope_value, spec="x", created_at=datetime.now(timezone.utc))

    # Same key labels, another name: what old naming or a manual `docker run` leaves behind.
    dup = docker_client.containers.run(TINY_IMAGE, name=f"legacy-{scope}", labels=labelled(scope), detach=True, network_mode="host")
    other_scope = f"{scope}-other"
    try:
        foreign = docker_client.containers.run(TINY_IMAGE, name=f"foreign-{scope}", labels=labelled(other_scope),
                                               detach=True, command=["sh", "-c", "exit 3"])
        await eventually(lambda: asyncio.to_thread(lambda: status_of(docker_client, foreign.name) == "exited"), timeout=10, what="foreign exited", interval=0.05)
        async with httpx.AsyncClient(timeout=30) as c:
            report = (await c.post(f"{srv.base_url}/api/v1/admin/reconcile")).json()
        assert [(a["kind"], a["name"]) for a in report["actions"]] == [("RemoveContainer", dup.name)], report
        assert all(a["ok"] for a in report["actions"])
        left = docker_client.containers.list(all=True, filters={"label": f"{Label.SCOPE}={scope}"})
        assert [c.name for c in left] == [out["container_name"]] == [container_name(key)]
        assert status_of(docker_client, foreign.name) == "exited", "another scope's container was touched"
    finally:
        remove_scope(docker_client, other_scope)


async def test_forged_webhooks_are_401(hook_settings, orchestrators, hooked_livekit) -> None:
    srv = await start_orchestrator(hook_settings())
    orchestrators.append(srv)
    body = json.dumps({"event": "room_finished", "id": "EV_forged", "room": {"name": "x"}})
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()

    def signed(key: str, secret: str, payload_hash: str = digest) -> str:
        return api.AccessToken(key, secret).with_sha256(payload_hash).to_jwt()

    url = f"{srv.base_url}/api/v1/livekit/webhook"
    async with httpx.AsyncClient() as c:
        cases = {
            "no header": {},
            "garbage": {"Authorization": "not-a-jwt"},
            "wrong secret, right key": {"Authorization": signed(hooked_livekit.api_key, "x" * 64)},
            "unknown key": {"Authorization": signed("nobody", "y" * 64)},
            "body hash mismatch": {"Authorization": signed(hooked_livekit.api_key, hooked_livekit.api_secret,
                                                            base64.b64encode(b"\0" * 32).decode())},
        }
        for what, headers in cases.items():
            r = await c.post(url, content=body, headers={"Content-Type": "application/webhook+json", **headers})
            assert r.status_code == 401, (what, r.text)
            assert hooked_livekit.api_secret not in r.text
        good = await c.post(url, content=body, headers={"Authorization": signed(hooked_livekit.api_key, hooked_livekit.api_secret)})
        assert good.status_code == 200 and good.json()["duplicate"] is False
        again = await c.post(url, content=body, headers={"Authorization": signed(hooked_livekit.api_key, hooked_livekit.api_secret)})
        assert again.json()["duplicate"] is True  # same event id: applied once


async def test_restart_mid_grace_neither_loses_nor_closes_early(hook_settings, orchestrators, participants, creds, docker_client) -> None:
    grace = 6.0
    settings = hook_settings(grace_period_s=grace)
    srv = await start_orchestrator(settings)
    orchestrators.append(srv)
    room, out, human = await active_room(srv, creds, participants)
    name = out["container_name"]
    left_at = time.monotonic()
    await human.disconnect()
    before = await eventually(state_is(srv.base_url, room, "grace_period"), timeout=5, what="grace period", interval=0.05)

    async def persisted() -> bool:  # the grace start reached LiveKit's room metadata
        async with api.LiveKitAPI(creds.url.replace("ws", "http"), creds.api_key, creds.api_secret.get_secret_value()) as lk:
            rooms = (await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))).rooms
        return bool(rooms) and "orchestrator_grace_started_at" in rooms[0].metadata

    await eventually(persisted, timeout=3, what="grace start persisted", interval=0.05)
    await srv.stop()
    orchestrators.remove(srv)
    await asyncio.sleep(1.0)  # the orchestrator is down for a while: the human does not come back
    srv2 = await start_orchestrator(settings)
    orchestrators.append(srv2)
    after = await eventually(state_is(srv2.base_url, room, "grace_period"), timeout=5, what="room rebuilt in grace", interval=0.05)
    assert after["since"] == before["since"], "the rebuilt grace must start when the first one did"
    while time.monotonic() < left_at + grace - 0.3:
        assert status_of(docker_client, name) == "running", "closed early after the restart"
        await asyncio.sleep(0.1)
    await eventually(lambda: asyncio.to_thread(lambda: status_of(docker_client, name) is None), timeout=grace + 5, what="closed after the grace", interval=0.05)
    print(f"\nclosed {time.monotonic() - left_at:.2f}s after the human left, across a restart (grace {grace}s)")
