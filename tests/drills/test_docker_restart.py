"""Drill: the Docker daemon restarts while triggers arrive → clear 503s during the outage, recovery on its own.

The daemon restarted is a private one (tests/support/private_dockerd.py), started like scripts/provision
starts the shared one: restarting the shared engine would stop other people's containers.
It runs with `--live-restore`, which is what we recommend in production: running agents (calls in
progress) survive a daemon restart or upgrade. Without it the daemon stops them, and with our
`on-failure` policy Docker would not start them again; the reconciler would then replace the ones
with humans present and remove the rest — calls would drop for a few seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import docker
import pytest

from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID, app_client
from tests.drills.conftest import assert_tidy
from devtools.agent_room import eventually
from devtools.private_dockerd import PrivateDockerd, private_engine

pytestmark = [pytest.mark.docker, pytest.mark.livekit, pytest.mark.timeout(120)]


@pytest.fixture
def engine(docker_client: docker.DockerClient) -> Iterator[PrivateDockerd]:
    with private_engine("dd", docker_client) as d:
        yield d


def body(room: str) -> dict[str, str]:
    return {"agent_slug": "farah", "room_name": room, "user_id": "drill", "client_id": CLIENT_ID}


async def test_daemon_restart_gives_503_then_recovers_without_restarting_us(
    make_settings: Callable[..., Settings], engine: PrivateDockerd
) -> None:
    # agent_host_filter off: the private engine's bridges live in its own network namespace, out of our iptables' reach.
    settings = make_settings(docker_host=engine.url, docker_retries=2, reconcile_enabled=True, agent_host_filter=False,
                             reconcile_interval_s=60, agent_startup_timeout_s=0, usage_sampling_enabled=False,
                             max_agents_per_client=500, max_agents_total=500)  # the 429 path has its own drill
    dc = engine.client()
    results: list[tuple[str, str, int, dict[str, str], str]] = []  # phase (at send and answer), room, status, headers, detail
    phase = "up"
    async with app_client(settings) as api:
        a = await api.post("/api/v1/trigger-agent", json=body("dd-a"))
        assert a.status_code == 201, a.text

        async def fire() -> None:
            i = 0
            while phase != "done" and i < 400:
                room, sent_in = f"dd-{i}", phase
                r = await api.post("/api/v1/trigger-agent", json=body(room))
                # A request whose Docker retries outlast the outage may rightly succeed: only one sent and
                # answered while the daemon was down counts as "down"; one spanning the restart is "edge".
                results.append((sent_in if phase == sent_in else "edge", room, r.status_code, dict(r.headers), r.text))
                i += 1
                await asyncio.sleep(0.05)

        firing = asyncio.create_task(fire())

        def count(p: str, status: int | None = None) -> int:
            return sum(1 for ph, _, st, _, _ in results if ph == p and (status is None or st == status))

        try:
            await eventually(lambda: _true(count("up") >= 3), timeout=20, what="triggers before the outage")
            phase = "stopping"
            await asyncio.to_thread(engine.stop)
            phase = "down"
            await eventually(lambda: _true(count("down") >= 4), timeout=30, what="triggers during the outage")
            health = await api.get("/healthz")
            assert health.status_code == 503, health.text
            phase = "starting"
            await asyncio.to_thread(engine.start)
            phase = "back"
            await eventually(lambda: _true(count("back") >= 3), timeout=30, what="triggers after the restart")
        finally:
            phase = "done"
            await firing

        statuses = {st for _, _, st, _, _ in results}
        assert statuses <= {201, 503}, [r for r in results if r[2] not in (201, 503)]
        down = [r for r in results if r[0] == "down"]
        assert down and all(st == 503 for _, _, st, _, _ in down), down
        for _, _, _, headers, detail in down:
            assert int(headers["retry-after"]) > 0 and "Docker engine" in detail, detail
        assert all(st == 201 for ph, _, st, _, _ in results if ph == "back"), [r for r in results if r[0] == "back"]
        print(f"\ntriggers: {len(results)}; during the outage {len(down)} × 503; after it {count('back', 201)} × 201")

        # Recovery without restarting us: health, a clean reconcile pass, and the refused callers' retries work.
        assert (await api.get("/healthz")).status_code == 200
        # The event follower reconnected and asked for a catch-up pass (deaths during the outage were never sent).
        async def caught_up() -> bool:
            events = (await api.get("/api/v1/admin/events", params={"limit": 1000})).json()["events"]
            return any(e.get("event") == "reconnected" for e in events)

        await eventually(caught_up, timeout=15, what="the Docker event follower to reconnect and ask for a catch-up pass")
        report = (await api.post("/api/v1/admin/reconcile")).json()
        assert report["observe_error"] is None and report["failed"] == 0, report
        refused = sorted({room for _, room, st, _, _ in results if st != 201})
        for room in refused:
            r = await api.post("/api/v1/trigger-agent", json=body(room))
            assert r.status_code in (200, 201), r.text
        rooms = {"dd-a"} | {room for _, room, _, _, _ in results}
        kept = assert_tidy(dc, settings.scope, rooms=rooms)
        # live-restore: the agent that was running through the restart is the same container, still up.
        assert kept["dd-a"].id == a.json()["container_id"]

        # Docker's event stream is followed again: a death is noticed at once (the poll is 60 s away).
        killed = kept["dd-a"].name
        dc.api.kill(killed)
        t = time.monotonic()

        async def gone() -> bool:
            return not await asyncio.to_thread(lambda: dc.api.containers(all=True, filters={"name": f"^/{killed}$"}))

        await eventually(gone, timeout=15, what="the reconciler, woken by Docker's die event, to remove the dead agent")
        print(f"dead agent removed {time.monotonic() - t:.2f}s after docker kill (event stream re-established)")
    dc.close()


async def _true(value: bool) -> bool:
    return value
