"""Rooms kept by webhooks: a lost webhook is repaired by the slow sweep, not left wrong for ever."""

from __future__ import annotations

import time
from collections.abc import Callable

import docker
import pytest
from livekit import rtc

from orchestrator.core.models import LiveKitCredentials
from orchestrator.settings import Settings
from tests.integration.test_lifecycle import GRACE_S, active_room, creds, hook_settings, orchestrators, participants, status_of  # noqa: F401
from devtools.agent_room import eventually
from devtools.orchestrator_server import OrchestratorServer, start_orchestrator

pytestmark = [pytest.mark.docker, pytest.mark.livekit]
RESYNC_S = 3.0


async def test_lost_participant_left_is_repaired_by_the_sweep(
    hook_settings: Callable[..., Settings], orchestrators: list[OrchestratorServer], participants: list[rtc.Room],
    creds: LiveKitCredentials, docker_client: docker.DockerClient,
) -> None:
    srv = await start_orchestrator(hook_settings(room_resync_s=RESYNC_S, reconcile_interval_s=0.5))
    orchestrators.append(srv)
    room, out, human = await active_room(srv, creds, participants)
    intake = srv.app.state.webhooks
    dropped: list[str] = []
    accept = intake.accept

    def lossy(notice, **kw):  # type: ignore[no-untyped-def]
        if notice.event == "participant_left" and notice.room == room:
            dropped.append(notice.identity)  # lost on the way, on purpose
            return True
        return accept(notice, **kw)

    intake.accept = lossy
    left_at = time.monotonic()
    await human.disconnect()
    await eventually(lambda: _true(bool(dropped)), timeout=10, what="the participant_left webhook (to drop it)")
    await eventually(
        lambda: _true(status_of(docker_client, out["container_name"]) is None),
        timeout=RESYNC_S + GRACE_S + 10, what="the sweep to see the human gone and close the room after its grace",
        interval=0.1,
    )
    took = time.monotonic() - left_at
    print(f"\nlost webhook repaired: container removed {took:.2f}s after the human left (sweep {RESYNC_S}s + grace {GRACE_S}s)")
    assert took >= GRACE_S  # the grace still ran in full, from when the sweep saw the room empty


async def test_rooms_kept_by_webhooks_cost_no_livekit_calls(
    hook_settings: Callable[..., Settings], orchestrators: list[OrchestratorServer], participants: list[rtc.Room],
    creds: LiveKitCredentials,
) -> None:
    srv = await start_orchestrator(hook_settings(room_resync_s=3600))
    orchestrators.append(srv)
    await active_room(srv, creds, participants)
    reconciler, livekit = srv.app.state.reconciler, srv.app.state.reconciler._livekit
    await reconciler.run_once(fresh=False)  # this room's first poll (after the trigger it was never observed)
    calls: list[str] = []
    observe = livekit.observe_rooms

    async def counted(creds, *, names, **kw):  # type: ignore[no-untyped-def]
        calls.extend(names)
        return await observe(creds, names=names, **kw)

    livekit.observe_rooms = counted
    report = await reconciler.run_once(fresh=False)
    assert report.rooms == 1 and calls == [], (report.to_dict(), calls)


async def _true(value: bool) -> bool:
    return value
