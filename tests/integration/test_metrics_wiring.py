"""Metrics move when reconcile actions, crashes and restarts happen; CPU/memory come from the background sampler.

Real Docker engine and real livekit-server; a real participant stands in for the human.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import docker
import httpx
import pytest
from livekit import rtc
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.rules.naming import Label
from orchestrator.runtime.docker.runtime import DockerRuntime
from orchestrator.services.sampler import UsageSampler
from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID, app_client
from devtools.agent_room import eventually
from devtools.docker_helpers import TINY_IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.livekit]


async def samples(api: httpx.AsyncClient) -> list[Any]:
    r = await api.get("/metrics")
    assert r.status_code == 200, r.text
    return [s for family in text_string_to_metric_families(r.text) for s in family.samples]


async def value(api: httpx.AsyncClient, name: str, **labels: str) -> float:
    for s in await samples(api):
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return 0.0



async def trigger(api: httpx.AsyncClient, room: str, slug: str = "farah") -> dict[str, Any]:
    r = await api.post("/api/v1/trigger-agent", json={"agent_slug": slug, "room_name": room, "user_id": "u", "client_id": CLIENT_ID})
    assert r.status_code in (200, 201), r.text
    return r.json()


@pytest.fixture
async def people() -> AsyncIterator[list[rtc.Room]]:
    rooms: list[rtc.Room] = []
    yield rooms
    for r in rooms:
        await r.disconnect()


async def test_reconcile_actions_duration_and_orphans_move(make_settings: Callable[..., Settings], scope: str, docker_client: docker.DockerClient) -> None:
    async with app_client(make_settings(usage_sampling_enabled=False)) as api:
        assert await value(api, "orchestrator_reconcile_seconds_count") == 0
        # An orphan: our scope label but no client/agent/room (a hand-made or half-labelled container).
        orphan = docker_client.containers.run(
            TINY_IMAGE, name=f"{scope}-orphan", detach=True, labels={Label.MANAGED: "true", Label.SCOPE: scope}
        )
        report = (await api.post("/api/v1/admin/reconcile")).json()
        assert [(a["kind"], a["name"], a["ok"]) for a in report["actions"]] == [("RemoveContainer", orphan.name, True)]
        assert await value(api, "orchestrator_reconcile_actions_total", action="RemoveContainer", result="ok") == 1
        assert await value(api, "orchestrator_reconcile_removals_total", reason="orphan") == 1
        assert await value(api, "orchestrator_reconcile_seconds_count") == 1
        # A dry run plans but changes nothing, so it counts no action and no duration.
        await api.post("/api/v1/admin/reconcile?dry_run=true")
        assert await value(api, "orchestrator_reconcile_seconds_count") == 1
        # The lifecycle feed tells the same story.
        events = (await api.get("/api/v1/admin/events")).json()["events"]
        assert any(e["kind"] == "reconcile" and e.get("container") == orphan.name and e["ok"] for e in events), events


async def test_crash_with_human_present_counts_a_restart(
    make_settings: Callable[..., Settings], docker_client: docker.DockerClient, people: list[rtc.Room]
) -> None:
    settings = make_settings(agent_restart_policy="no", agent_startup_timeout_s=0, usage_sampling_enabled=False)
    async with app_client(settings) as api:
        room = f"crash-{secrets.token_hex(3)}"
        out = await trigger(api, room)
        assert await value(api, "orchestrator_rooms", state="starting") == 1  # launched, no agent joined yet
        human = rtc.Room()
        await human.connect(out["livekit_url"], out["user_token"])
        people.append(human)
        await asyncio.to_thread(docker_client.api.kill, out["container_name"])

        async def exited() -> bool:
            return (await asyncio.to_thread(lambda: docker_client.containers.get(out["container_name"]).status)) == "exited"

        await eventually(exited, timeout=10, what="container exited", interval=0.05)
        assert await value(api, "orchestrator_agent_restarts_total") == 0
        report = (await api.post("/api/v1/admin/reconcile")).json()
        assert [(a["kind"], a["ok"]) for a in report["actions"]] == [("RestartAgent", True)], report
        assert await value(api, "orchestrator_agent_restarts_total") == 1
        assert await value(api, "orchestrator_reconcile_actions_total", action="RestartAgent", result="ok") == 1
        new = await asyncio.to_thread(docker_client.containers.get, out["container_name"])
        assert new.id != out["container_id"] and new.status == "running"


async def test_agent_cpu_and_memory_come_from_the_background_sampler(
    make_settings: Callable[..., Settings], docker_client: docker.DockerClient
) -> None:
    async with app_client(make_settings(usage_sample_interval_s=0.2)) as api:
        names = [(await trigger(api, f"usage-{i}-{secrets.token_hex(2)}"))["container_name"] for i in range(3)]

        async def all_sampled() -> list[Any] | None:
            got = [s for s in await samples(api) if s.name in ("orchestrator_agent_cpu_ratio", "orchestrator_agent_memory_bytes")]
            ok = all(any(s.name == n and s.labels["container"] == c for s in got)
                     for c in names for n in ("orchestrator_agent_cpu_ratio", "orchestrator_agent_memory_bytes"))
            return got if ok else None

        got = await eventually(all_sampled, timeout=15, what="cpu and memory of every agent", interval=0.05)
        for s in got:
            assert s.labels["client_id"] == CLIENT_ID and s.labels["agent"] == "farah"
            assert s.value >= 0
        assert all(s.value > 0 for s in got if s.name == "orchestrator_agent_memory_bytes")
        assert await value(api, "orchestrator_usage_sample_age_seconds") < 5
        rows = {c["name"]: c for c in (await api.get("/api/v1/admin/containers")).json()["containers"]}
        assert all(rows[n]["memory_bytes"] and rows[n]["age_s"] is not None for n in names)
        # A removed container's series disappears (no flat line for a dead agent).
        await asyncio.to_thread(docker_client.api.remove_container, names[0], force=True)

        async def gone() -> bool:
            return not any(s.labels.get("container") == names[0] for s in await samples(api))

        await eventually(gone, timeout=10, what="series of the removed container gone", interval=0.05)


class CountingRuntime(DockerRuntime):
    """The real Docker runtime, counting how many stats calls are in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls = 0

    async def stats(self, name: str) -> dict[str, Any] | None:
        self.in_flight += 1
        self.calls += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.05)  # widen the window so overlapping calls are visible to the counter
            return await super().stats(name)
        finally:
            self.in_flight -= 1


async def test_sampler_bounds_concurrent_stats_calls(scope: str, docker_client: docker.DockerClient) -> None:
    labels = {Label.MANAGED: "true", Label.SCOPE: scope, Label.CLIENT_ID: CLIENT_ID, Label.AGENT_SLUG: "farah"}
    made = [docker_client.containers.run(TINY_IMAGE, name=f"{scope}-u{i}", detach=True, labels={**labels, Label.ROOM: f"r{i}"})
            for i in range(6)]
    runtime = CountingRuntime()
    try:
        sampler = UsageSampler(runtime=runtime, scope=scope, interval_s=1, concurrency=2)
        started = time.monotonic()
        await sampler.sample_once()
        await sampler.sample_once()
        took = time.monotonic() - started
    finally:
        runtime.close()
    assert runtime.calls == 12 and runtime.max_in_flight == 2
    assert set(sampler.latest) == {c.name for c in made}
    assert all(u.memory_bytes and u.cpu_ratio is not None for u in sampler.latest.values())
    print(f"\n2 sampling passes over 6 containers with concurrency 2: {took:.2f}s")


async def test_spawn_counts_like_a_trigger(make_settings: Callable[..., Settings]) -> None:
    async with app_client(make_settings(usage_sampling_enabled=False)) as api:
        r = await api.post("/api/v1/agents/agent-farah/spawn", json={"client_id": CLIENT_ID})
        assert r.status_code == 200, r.text
        assert (await api.post("/api/v1/agents/agent-nope/spawn", json={"client_id": CLIENT_ID})).status_code == 404
        assert await value(api, "orchestrator_triggers_total", outcome="created") == 1
        assert await value(api, "orchestrator_triggers_total", outcome="not_found") == 1
        events = [e for e in (await api.get("/api/v1/admin/events")).json()["events"] if e["kind"] == "trigger"]
        assert [(e["outcome"], e.get("room")) for e in events] == [("created", r.json()["room_name"]), ("not_found", None)]
