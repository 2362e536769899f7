"""The informer on the real engine: changes made behind the orchestrator's back are in the view within 1 s."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Iterator

import docker
import pytest

from orchestrator.services.informer import Informer
from orchestrator.core.models import ContainerStatus
from orchestrator.rules.naming import Label
from orchestrator.runtime.docker.runtime import DockerRuntime
from devtools.agent_room import eventually
from devtools.docker_helpers import TINY_IMAGE
from devtools.private_dockerd import PrivateDockerd, private_engine

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]


@contextlib.asynccontextmanager
async def informing(scope: str, *, base_url: str | None = None) -> AsyncIterator[Informer]:
    runtime = DockerRuntime(base_url=base_url, retries=1)
    informer = Informer(runtime=runtime, scope=scope, resync_s=3600)
    task = asyncio.create_task(informer.run_forever())
    try:
        assert await informer.wait_synced(timeout_s=15), "the first relist never came"
        yield informer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        runtime.close()


def by_hand(client: docker.DockerClient, scope: str, name: str) -> docker.models.containers.Container:
    """A container someone made with our labels but not through the orchestrator."""
    labels = {Label.MANAGED: "true", Label.SCOPE: scope, Label.CLIENT_ID: "c", Label.AGENT_SLUG: "a", Label.ROOM: name}
    return client.containers.run(TINY_IMAGE, ["sleep", "300"], name=name, labels=labels, detach=True)


async def seen(informer: Informer, what: str, probe) -> float:  # type: ignore[no-untyped-def]
    t = time.monotonic()

    async def check() -> bool:
        return bool(probe(informer.view.state))

    await eventually(check, timeout=5, what=what, interval=0.01)
    return time.monotonic() - t


async def test_created_killed_renamed_removed_behind_our_back(docker_client: docker.DockerClient, scope: str) -> None:
    name = f"hand-{secrets.token_hex(3)}"
    async with informing(scope) as informer:
        c = await asyncio.to_thread(by_hand, docker_client, scope, name)
        times = {"created": await seen(informer, "a hand-made container", lambda s: (i := s.named(name)) and i.status is ContainerStatus.running)}
        await asyncio.to_thread(c.kill)
        times["killed"] = await seen(informer, "the kill", lambda s: (i := s.named(name)) and i.status is ContainerStatus.exited)
        await asyncio.to_thread(c.rename, name + "-x")
        times["renamed"] = await seen(informer, "the rename", lambda s: s.named(name + "-x") and s.named(name) is None)
        await asyncio.to_thread(c.remove, force=True)
        times["removed"] = await seen(informer, "the removal", lambda s: c.id not in s.by_id)
        print(f"\nseen after: {', '.join(f'{k} {v * 1000:.0f} ms' for k, v in times.items())}")
        assert all(v < 1.0 for v in times.values()), times


@pytest.fixture
def engine(docker_client: docker.DockerClient) -> Iterator[PrivateDockerd]:
    with private_engine("inf", docker_client) as d:
        yield d


async def test_daemon_restart_ends_with_a_correct_view(engine: PrivateDockerd) -> None:
    dc = engine.client()
    scope = "inf-restart"
    keep = await asyncio.to_thread(by_hand, dc, scope, "keep")
    async with informing(scope, base_url=engine.url) as informer:
        first = informer.relists
        await asyncio.to_thread(engine.stop)
        await eventually(lambda: _true(not informer.view.synced), timeout=15, what="the view to stop trusting itself")
        await asyncio.to_thread(engine.start)
        # live-restore keeps `keep` running; a container made right after the restart must show up too.
        late = await asyncio.to_thread(by_hand, dc, scope, "late")
        await eventually(lambda: _true(informer.view.synced and informer.relists > first), timeout=30, what="a relist after reconnect")
        await seen(informer, "both containers after the restart", lambda s: s.named("keep") and s.named("late"))
        assert {c.id for c in informer.view.state.containers()} == {keep.id, late.id}
        await asyncio.to_thread(late.remove, force=True)
        await seen(informer, "a removal after the restart", lambda s: s.named("late") is None)
    dc.close()


async def _true(value: bool) -> bool:
    return value
