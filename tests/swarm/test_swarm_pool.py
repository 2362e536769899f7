"""The warm pool on the real 3-node swarm with the real agent image and the real LiveKit: a trigger claims a member
and the agent joins its room (heard), members are hardened exactly like cold agents, two claimants racing for one
member give exactly one winner, and a fresh runtime on another manager finds the claimed agent by its key.
Warm and cold trigger → agent listed are measured side by side in the same run (printed; the issue's goal is a
p50 ≤ 400 ms warm on Swarm)."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import closing

import docker
import pytest

from devtools.agent_room import Participant, eventually, loudest_sample
from devtools.docker_helpers import TINY_IMAGE
from devtools.swarm_cluster import SwarmCluster
from orchestrator.core.models import ContainerInfo, ContainerKey, LiveKitCredentials, Mode, TriggerOutcome
from orchestrator.livekit.client import LiveKitGateway
from orchestrator.rules import pool as rules
from orchestrator.rules.naming import Label, container_name
from orchestrator.runtime import ContainerSpec, MemberGone, NameTaken
from orchestrator.runtime.swarm.pool import PooledSwarmRuntime
from orchestrator.runtime.swarm.rules import service_name
from orchestrator.composition import Orchestrator
from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID
from tests.swarm.conftest import AGENT_IMAGE
from tests.swarm.helpers import AGENT_KIND, identities, manager, services

pytestmark = [pytest.mark.docker, pytest.mark.livekit, pytest.mark.timeout(900)]
# The agent image tag is shared by every worktree on this engine: ORCH_TEST_POOL_IMAGE names another build of it
# (e.g. `AGENT_IMAGE=agent-orchestrator/agent:swarm-pool scripts/build-agent-image`), loaded onto the nodes here.
POOL_IMAGE = os.environ.get("ORCH_TEST_POOL_IMAGE", AGENT_IMAGE)
AGENT = dict(agent_image=POOL_IMAGE, agent_memory="256m", agent_cpus=0.2, agent_stop_timeout_s=5)
POOL = dict(pool_min=3, pool_max=3, pool_sweep_s=1.0, pool_refill_concurrency=3)
ROUNDS = int(os.environ.get("ORCH_TEST_POOL_ROUNDS", "3"))  # warm and cold starts measured, alternating


@pytest.fixture(scope="module")
def pool_image(swarm: SwarmCluster, docker_client: docker.DockerClient) -> str:
    if POOL_IMAGE != AGENT_IMAGE:
        swarm.load_images(docker_client, [POOL_IMAGE])
    return POOL_IMAGE


@pytest.fixture
async def pooled(swarm: SwarmCluster, pool_image: str) -> AsyncIterator[Callable[..., PooledSwarmRuntime]]:
    made: list[PooledSwarmRuntime] = []

    def make(k: int = 0) -> PooledSwarmRuntime:
        rt = PooledSwarmRuntime(base_url=swarm.nodes[k].url)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


async def _listed(gw: LiveKitGateway, creds: LiveKitCredentials, room: str, *, started: float, timeout: float = 45) -> float:
    async def agent_in_room() -> bool:
        return ("agent-farah", AGENT_KIND) in await identities(gw, creds, room)

    await eventually(agent_in_room, timeout=timeout, what=f"the agent in {room}", interval=0.01)
    return time.monotonic() - started


async def test_a_trigger_claims_a_hardened_member_whose_agent_joins_and_is_found_by_key(
    swarm: SwarmCluster, sw_settings: Callable[..., Settings], pooled: Callable[..., PooledSwarmRuntime],
    trigger_service: Callable[..., object], livekit_gateway: LiveKitGateway, sw_creds: LiveKitCredentials, scope: str,
) -> None:
    """Through the composition root, as deployed: the watch-fed view answers limits, the pool runs its loop."""
    settings = sw_settings(**AGENT, **POOL)
    orch = Orchestrator(settings, runtime=pooled(0), livekit=LiveKitGateway())
    # The same deployment without its pool: the same run's cold baseline.
    cold_orch = Orchestrator(settings.model_copy(update={"pool_max": 0}), runtime=pooled(0), livekit=LiveKitGateway())
    runtime, pool, svc, cold_svc = orch.runtime, orch.pool, orch.trigger, cold_orch.trigger
    assert isinstance(runtime, PooledSwarmRuntime) and pool is not None
    stages = _timed(runtime, "claim_member") | _timed(pool._lobby, "hand_over")  # type: ignore[arg-type]
    remove_member = runtime.remove_member

    async def remove_and_tell(member: ContainerInfo) -> None:  # a member given up on: what did it see?
        if _claimed_name(member.name):
            print(f"\n--- member {member.id[:12]} given up on ---\n{await runtime.logs_tail(member.id, lines=40)}")
        await remove_member(member)

    runtime.remove_member = remove_and_tell  # type: ignore[method-assign]
    await orch.start()
    await cold_orch.start()
    loop = next(t for t in orch._tasks if t.get_name() == "warm-pool")
    try:
        answered: dict[str, float] = {}  # trigger → its answer, per room (the rest is the agent joining)

        async def start(room: str, via: object = svc) -> tuple[float, object]:
            started = time.monotonic()
            result = await via.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="alice", room_name=room)  # type: ignore[attr-defined]
            assert result.outcome is TriggerOutcome.created
            answered[room[len(scope) + 1:]] = round((time.monotonic() - started) * 1000)
            return await _listed(livekit_gateway, sw_creds, room, started=started), result

        # The first start is cold and teaches the pool its domain; then the pool fills.
        cold: list[float] = [(await start(f"{scope}-cold0"))[0]]
        assert pool.outcomes["cold"] == 1
        assert pool.snapshot()["pools"], (
            f"{POOL_IMAGE} does not list {rules.LOBBY_PROTOCOL} in its {rules.WARM_MODE} label: rebuild it (scripts/build-images)")

        async def filled() -> bool:
            if loop.done():
                loop.result()  # the pool's loop died: its error is the failure
            return sum(p["idle"] for p in pool.snapshot()["pools"]) >= POOL["pool_min"]

        try:
            await eventually(filled, timeout=240, what=f"{POOL['pool_min']} idle members in their lobby")
        except AssertionError:
            print(f"\npool: {pool.snapshot()}")
            for m in services(swarm, scope):
                print(m["Spec"]["Name"], await runtime.logs_tail(m["ID"], lines=30))
            raise
        members = [s for s in services(swarm, scope) if rules.POOL in s["Spec"]["Labels"]]
        [agent] = [s for s in services(swarm, scope) if rules.POOL not in s["Spec"]["Labels"]]
        _same_isolation(members[0], agent)
        print(f"\nidle member memory (MiB, from its node's engine): {await asyncio.to_thread(_member_memory, swarm, scope)}")

        warm: list[float] = []
        rooms: list[str] = []
        fell_back: list[float] = []  # a member that missed its handover bound (seen only under heavy load): cold, yet listed
        for i in range(ROUNDS):
            await eventually(filled, timeout=240, what="the pool refilled")
            before = pool.outcomes["warm"]
            listed_s, got = await start(f"{scope}-warm{i}")
            if pool.outcomes["warm"] == before + 1:
                warm.append(listed_s)
                rooms.append(f"{scope}-warm{i}")
                result = got
            else:
                fell_back.append(listed_s)
            if i < ROUNDS - 1:
                cold.append((await start(f"{scope}-cold{i + 1}", via=cold_svc))[0])
        assert warm and len(warm) >= len(fell_back), f"warm {warm}, fell back to cold {fell_back}: {pool.snapshot()}"
        print(f"\nswarm trigger → agent listed (same run): warm p50 {statistics.median(warm) * 1000:.0f} ms {[round(w * 1000) for w in warm]}"
              f", cold p50 {statistics.median(cold) * 1000:.0f} ms {[round(c * 1000) for c in cold]}; fell back {fell_back}; trigger answered (ms) {answered}"
              f"; of which claim (ms) {stages['claim_member']}, handover (ms) {stages['hand_over']}")

        # The claimed member is heard like any agent.
        async with Participant(sw_creds.url, result.user_token) as human:  # type: ignore[attr-defined]
            track = await human.track_from("agent-farah", timeout=30)
            assert await loudest_sample(track, timeout=15, enough=5000) >= 5000

        # Its task was never replaced by the claim (service-level labels only), and no secret sits in its spec.
        key_name = container_name(ContainerKey(client_id=CLIENT_ID, agent_slug="farah", room=rooms[-1]))
        with closing(manager(swarm).client()) as c:
            alias = c.api.inspect_service(service_name(key_name))
            member = c.api.inspect_service(alias["Spec"]["Labels"]["orchestrator.pool-alias-of"] if False else alias["Spec"]["Labels"][next(k for k in alias["Spec"]["Labels"] if k.endswith("pool-alias-of"))])
            assert alias["Spec"]["Mode"]["Replicated"]["Replicas"] == 0
            tasks = c.api.tasks(filters={"service": member["ID"]})
            assert len(tasks) == 1, "the claim replaced the member's task"
            spec = json.dumps(member["Spec"])
            assert "eyJ" not in spec, "a token in the member's service spec"

        # A fresh runtime on another manager (a restarted orchestrator, a second process) finds it by key.
        fresh = pooled(1)
        found = await fresh.get(key_name)
        assert found is not None and found.id == member["ID"] and found.name == service_name(key_name)
        assert found.labels[Label.ROOM] == rooms[-1] and found.labels[Label.MANAGED] == "true" and found.status.value == "running"
        listed = {i.name for i in await fresh.list_managed(scope=scope)}
        assert service_name(key_name) in listed and not any(n.startswith(rules.MEMBER_PREFIX) for n in listed)
        again = await trigger_service(settings, fresh).trigger(  # type: ignore[attr-defined]
            client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="bob", room_name=rooms[-1])
        assert again.outcome is TriggerOutcome.reused and again.container.id == member["ID"]
        # ... and removes it with its alias: the key's name is free again.
        await fresh.remove(key_name)
        assert await fresh.get(key_name) is None
    finally:
        await orch.stop()
        await cold_orch.stop()


def _member_memory(swarm: SwarmCluster, scope: str) -> list[float]:
    """What each idle member's container uses now (its cgroup's memory usage, as `docker stats` shows it)."""
    found = []
    for node in swarm.nodes:
        with closing(node.client()) as c:
            for ctr in c.containers.list(filters={"label": [rules.POOL, f"{Label.SCOPE}={scope}"]}):
                mem = ctr.stats(stream=False).get("memory_stats") or {}
                found.append(round((mem.get("usage", 0) - (mem.get("stats") or {}).get("inactive_file", 0)) / 2**20, 1))
    return found


def _claimed_name(name: str) -> bool:
    return name.startswith("agent_")


def _timed(obj: object, method: str) -> dict[str, list[int]]:
    """Wrap obj.method to record how long each call took (ms): the warm path's stages, printed with the figures."""
    took: list[int] = []
    inner = getattr(obj, method)

    async def timed(*args: object, **kw: object) -> object:
        t = time.monotonic()
        try:
            return await inner(*args, **kw)
        finally:
            took.append(round((time.monotonic() - t) * 1000))

    setattr(obj, method, timed)
    return {method: took}


def _same_isolation(member: dict, agent: dict) -> None:
    """A member's task is the cold agent's but for its tenant fields: same hardening, overlay, resources, placement."""
    m, a = member["Spec"]["TaskTemplate"], agent["Spec"]["TaskTemplate"]
    for k in ("Resources", "Placement", "Networks", "LogDriver"):
        assert m.get(k) == a.get(k), k
    for k in ("User", "ReadOnly", "CapabilityDrop", "Init", "Mounts", "Image"):
        assert m["ContainerSpec"].get(k) == a["ContainerSpec"].get(k), k
    assert Label.MANAGED not in member["Spec"]["Labels"] and Label.ROOM not in member["Spec"]["Labels"]
    env = dict(e.split("=", 1) for e in m["ContainerSpec"]["Env"])
    assert not {"LIVEKIT_TOKEN", "LIVEKIT_ROOM", "AGENT_CONFIG", "AGENT_LOBBY_TOKEN", "OPENAI_API_KEY"} & set(env), env
    assert env["AGENT_LOBBY_ROOM"].startswith("orch-lobby-")
    assert [s["File"]["Name"] for s in m["ContainerSpec"]["Secrets"]] == ["AGENT_LOBBY_TOKEN"]


async def test_two_claimants_racing_for_one_member_give_one_winner(
    swarm: SwarmCluster, sw_settings: Callable[..., Settings], pooled: Callable[..., PooledSwarmRuntime], scope: str,
) -> None:
    """Two runtimes on two managers claim the same member for two keys at once, three times: one wins each time.
    Then two members for ONE key: the alias (the key's service name) lets one claim through and answers NameTaken."""
    a, b = pooled(0), pooled(1)
    settings = sw_settings()

    async def member(i: int) -> object:
        labels = rules.member_labels(scope=scope, pool="race", image_id="x", created_at="2026-12-02T00:00:00+00:00")
        spec = ContainerSpec(name=f"pool_{scope}_race_{i}", image=TINY_IMAGE, labels=labels, env={}, memory="32m", cpus=0.02,
                             pids=64, network="", restart_policy="no", restart_max=0, stop_timeout_s=1, user=settings.agent_user)
        return await a.create_member(spec)

    def key_labels(room: str) -> dict[str, str]:
        return {Label.MANAGED: "true", Label.SCOPE: scope, Label.CLIENT_ID: CLIENT_ID, Label.AGENT_SLUG: "farah",
                Label.ROOM: room, Label.CREATED_AT: "2026-12-02T00:00:00+00:00"}

    async def outcome(rt: PooledSwarmRuntime, m: object, room: str) -> str:
        try:
            await rt.claim_member(m, name=f"agent_{CLIENT_ID}_farah_{room}", labels=key_labels(room))  # type: ignore[arg-type]
            return "won"
        except MemberGone:
            return "gone"
        except NameTaken:
            return "taken"

    members = await asyncio.gather(*(member(i) for i in range(3)))
    for i, m in enumerate(members):
        got = await asyncio.gather(outcome(a, m, f"{scope}-a{i}"), outcome(b, m, f"{scope}-b{i}"))
        assert sorted(got) == ["gone", "won"], got
        winner = f"{scope}-a{i}" if got[0] == "won" else f"{scope}-b{i}"
        seen = await b.get(f"agent_{CLIENT_ID}_farah_{winner}")
        assert seen is not None and seen.id == m.id and seen.labels[Label.ROOM] == winner  # type: ignore[attr-defined]
    # One key, two members, two processes: one agent.
    m1, m2 = await asyncio.gather(member(10), member(11))
    got = await asyncio.gather(outcome(a, m1, f"{scope}-same"), outcome(b, m2, f"{scope}-same"))
    assert sorted(got) == ["taken", "won"], got
    served = [i for i in await a.list_managed(scope=scope) if i.labels.get(Label.ROOM) == f"{scope}-same"]
    assert len(served) == 1, served
