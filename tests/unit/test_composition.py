"""The composition root on the fake tier: it starts what the settings ask, stops and closes everything,
refuses settings that cannot work, and /healthz sees a first pass that never ends."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import httpx
import pytest
from pydantic import ValidationError

from api.app import create_app
from orchestrator.composition import Orchestrator
from orchestrator.core.errors import ConfigurationError
from orchestrator.settings import Settings, settings_error_line
from devtools.fakes import T0, FakeRooms, FakeRuntime, tenants

QUIET = {"scope": "unit", "usage_sampling_enabled": False, "docker_events_enabled": False}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class MisconfiguredRuntime(FakeRuntime):
    async def preflight(self, *, network: str) -> None:
        raise ConfigurationError(f"ORCH_AGENT_NETWORK={network!r}: no such network")


async def test_running_builds_starts_and_closes_every_adapter() -> None:
    rt, rooms, store = FakeRuntime(), FakeRooms(), tenants()
    async with Orchestrator.running(Settings(**QUIET, reconcile_interval_s=60), runtime=rt, livekit=rooms, tenants=store) as engine:
        assert engine.trigger is not None and [t.get_name() for t in engine._tasks] == ["reconciler"]
        await asyncio.wait_for(_until(lambda: engine.reconciler.passes >= 1), 5)
    assert rt.closed and rooms.closed and store.closed
    assert engine._tasks == []


async def test_without_loops_nothing_runs_in_the_background() -> None:
    async with Orchestrator.running(Settings(**QUIET), loops=False, runtime=FakeRuntime(), livekit=FakeRooms(),
                              tenants=tenants()) as engine:
        assert engine._tasks == [] and engine.reconciler.started_at is None


async def test_a_setting_the_engine_refuses_stops_start_up_and_still_closes() -> None:
    rt, rooms, store = MisconfiguredRuntime(), FakeRooms(), tenants()
    with pytest.raises(ConfigurationError, match="ORCH_AGENT_NETWORK"):
        async with Orchestrator.running(Settings(**QUIET, agent_network="nope"), runtime=rt, livekit=rooms, tenants=store):
            raise AssertionError("must not start")
    assert rt.closed and rooms.closed and store.closed


@pytest.mark.parametrize(("variable", "value"), [
    ("agent_memory", "lots"), ("agent_memory", "0"), ("agent_memory", "1k"), ("agent_network", "bad net"),
])
def test_bad_resource_settings_fail_at_start_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(**{variable: value})
    line = settings_error_line(info.value)
    assert line.startswith(f"invalid settings: ORCH_{variable.upper()}: not a") and value not in line.split(": ", 2)[2]


async def test_healthz_is_503_when_the_first_pass_never_completes() -> None:
    rt, clock = FakeRuntime(), Clock()
    rt.list_gate = asyncio.Event()  # the first pass's list never answers
    app = create_app(Settings(**QUIET, reconcile_interval_s=1), runtime=rt, livekit=FakeRooms(), tenants=tenants(),
                     clock=clock)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
            await _until(lambda: rt.listing == 1)
            first = await http.get("/healthz")
            assert (first.status_code, first.json()["reconciler"]) == (200, "starting")
            assert (await http.get("/livez")).status_code == 200
            clock.now = T0 + timedelta(seconds=14)  # past 3 intervals + 10 s without a completed pass
            stalled = await http.get("/healthz")
            assert (stalled.status_code, stalled.json()["reconciler"]) == (503, "stalled")
            # A stuck loop is the one thing a restart can fix: liveness says so, readiness too.
            live = await http.get("/livez")
            assert (live.status_code, live.json()) == (503, {"status": "stalled", "reconciler": "stalled"})
            assert (await http.get("/readyz")).status_code == 503
        rt.list_gate.set()


async def _until(probe, *, rounds: int = 10_000) -> None:  # type: ignore[no-untyped-def]
    for _ in range(rounds):
        if probe():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def test_the_fake_runtime_watch_keeps_the_protocols_order() -> None:
    """relist first, then upserts/deletes of this scope in order with growing seq; broken → relist."""
    from orchestrator.rules.naming import Label

    rt = FakeRuntime()
    rt.put("a", labels={Label.SCOPE: "unit"})
    stream = rt.watch(scope="unit")
    first = await anext(stream)
    rt.put("b", labels={Label.SCOPE: "other"})
    rt.put("c", labels={Label.SCOPE: "unit"})
    await rt.remove("a")
    rt.break_stream()
    seen = [await anext(stream) for _ in range(4)]
    assert (first.kind, [c.name for c in first.items]) == ("relist", ["a"])
    assert [(e.kind, e.info.name if e.info else None) for e in seen] == [
        ("upsert", "c"), ("delete", "a"), ("broken", None), ("relist", None)]
    assert [c.name for c in seen[3].items] == ["c"]
    assert seen[0].seq < seen[1].seq < seen[3].seq
    rt.close()


async def test_the_engine_follows_the_watch_and_a_death_wakes_a_pass() -> None:
    from orchestrator.core.models import ContainerKey, ContainerStatus, Mode
    from orchestrator.rules.naming import container_labels, container_name, spec_hash
    from devtools.fakes import FARAH

    rt = FakeRuntime()
    key = ContainerKey(client_id="c1", agent_slug="farah", room="r1")
    labels = container_labels(key, agent=FARAH, mode=Mode.voice, scope="unit", created_at=T0,
                              spec=spec_hash(FARAH, image="x", mode=Mode.voice))
    settings = Settings(scope="unit", usage_sampling_enabled=False, reconcile_interval_s=3600)
    async with Orchestrator.running(settings, runtime=rt, livekit=FakeRooms(), tenants=tenants()) as engine:
        assert await engine.informer.wait_synced(timeout_s=5)
        await _soon(lambda: engine.reconciler.passes >= 1)
        info = rt.put(container_name(key), labels=labels)
        await _soon(lambda: engine.view.state.named(info.name) is not None)
        passes = engine.reconciler.passes
        rt._set(info, status=ContainerStatus.paused)  # frozen by someone: serves nobody, like a death
        await _soon(lambda: engine.reconciler.passes > passes)  # woken, not the 1 h interval
        assert any(e.to_dict().get("event") == "die" for e in engine.telemetry.feed.recent())


async def _soon(probe, *, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    """Poll a condition other tasks make true through real waits (the reconciler coalesces wake-ups for 50 ms)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not probe():
        assert loop.time() < deadline, "condition never held"
        await asyncio.sleep(0.01)
