"""The warm pool on the real kubelet node: a trigger claims a member Pod, hands its assignment over pods/attach
(through the API server, which authenticates to the kubelet) and the real agent joins the real LiveKit room.

Also the figure: trigger → agent listed by LiveKit, cold (the first start of the domain) vs warm, in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import pytest
from livekit import api

from devtools.agent_room import eventually
from devtools.kube_cluster import KubeCluster
from devtools.kube_node import RealNode
from devtools.livekit_server import LiveKitServer
from orchestrator.core.models import LiveKitCredentials, Mode, TriggerOutcome
from orchestrator.livekit.client import LiveKitGateway
from orchestrator.rules.naming import Label
from orchestrator.runtime import SECRET_ENV_KEYS
from orchestrator.runtime.kubernetes.members import POOL_KEY
from orchestrator.runtime.kubernetes.pool import PooledKubernetesRuntime
from orchestrator.services.pool import WarmPool
from orchestrator.services.trigger import TriggerService
from orchestrator.settings import Settings
from orchestrator.tenants.file_store import FileTenantStore
from tests.conftest import CLIENT_ID

pytestmark = pytest.mark.kubernetes

AGENT = "agent-clarence-coherence"


async def test_trigger_claims_a_member_hands_over_by_attach_and_the_agent_joins(
    node_settings: Callable[..., Settings], real_node: RealNode, node_livekit: LiveKitServer, kube_cluster: KubeCluster
) -> None:
    settings = node_settings(pool_min=1, pool_max=1, pool_sweep_s=1.0)
    runtime = PooledKubernetesRuntime.from_settings(settings)
    livekit = LiveKitGateway()
    pool = WarmPool(settings=settings, engine=runtime)
    svc = TriggerService(settings=settings, tenants=FileTenantStore(settings.tenants_file), livekit=livekit, runtime=runtime, pool=pool)
    creds = LiveKitCredentials(url=node_livekit.url, api_key=node_livekit.api_key, api_secret=node_livekit.api_secret)
    loop = asyncio.create_task(pool.run_forever())
    stages: dict[str, float] = {}  # the warm start's own steps, timed where the pool calls them

    def timed(what: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                stages[what] = (time.perf_counter() - t0) * 1000

        return call

    runtime.claim_member = timed("claim", runtime.claim_member)  # type: ignore[method-assign]
    runtime.hand_over = timed("attach", runtime.hand_over)  # type: ignore[method-assign]
    ns = runtime.namespace

    async def start(room: str) -> tuple[float, float, str]:
        """(trigger answered, agent listed by LiveKit), seconds after the trigger; and the Pod's name."""
        t0 = time.perf_counter()
        res = await svc.trigger(client_id=CLIENT_ID, agent_slug="clarence-coherence", mode=Mode.voice, user_id="u", room_name=room)
        answered = time.perf_counter() - t0
        assert res.outcome is TriggerOutcome.created

        async def listed() -> api.ParticipantInfo | None:
            return next((p for p in await livekit.list_participants(creds, room=room) if p.identity == AGENT), None)

        await eventually(listed, timeout=90, what=f"{AGENT} in LiveKit's ListParticipants of {room}", interval=0.02)
        return answered, time.perf_counter() - t0, res.container.name

    try:
        cold = await start(f"{settings.scope}-cold")  # the pool learns the domain's template from this start
        assert pool.outcomes["cold"] == 1

        async def member_waiting() -> bool:
            """An idle member whose agent process is loaded and waiting (its log says so): a warm start from here."""
            for info, record in await runtime.list_members(scope=settings.scope):
                if record is None and pool.snapshot()["pools"][0]["idle"] >= 1:
                    if "warm: waiting for an assignment" in await runtime.logs_tail(info.name, lines=20):
                        return True
            return False

        await eventually(member_waiting, timeout=120, what="a warm member waiting on the real node")
        [member] = [i for i, r in await runtime.list_members(scope=settings.scope) if r is None]
        pod = kube_cluster.api("GET", f"/api/v1/namespaces/{ns}/pods/{member.name}")
        env = {e["name"] for e in pod["spec"]["containers"][0]["env"]}
        assert not env & SECRET_ENV_KEYS and "LIVEKIT_ROOM" not in env and Label.MANAGED not in pod["metadata"]["labels"]
        assert pod["spec"]["nodeName"] == real_node.name

        warm = await start(f"{settings.scope}-warm")
        assert pool.outcomes["warm"] == 1, pool.snapshot()
        # The member Pod serves the key now: same uid, the key's labels, read back under the key's Pod name.
        claimed = kube_cluster.api("GET", f"/api/v1/namespaces/{ns}/pods/{member.name}")
        assert claimed["metadata"]["uid"] == member.id and claimed["metadata"]["labels"][POOL_KEY] == warm[2]
        assert claimed["metadata"]["labels"][Label.MANAGED] == "true"
        logs = kube_cluster.kubectl("logs", "-n", ns, member.name, "--tail=200").stdout
        assert "warm: assignment received" in logs
        # Its token and room went over stdin only: not in the Pod (spec, labels, annotations), and no Secret was made
        # for it (the cold start's is the one Secret of the namespace).
        text = kube_cluster.kubectl("get", "pod", "-n", ns, member.name, "-o", "yaml").stdout
        assert "LIVEKIT_TOKEN" not in text and "eyJ" not in text
        assert len(kube_cluster.api("GET", f"/api/v1/namespaces/{ns}/secrets")["items"]) == 1
        fresh = PooledKubernetesRuntime.from_settings(settings)
        try:
            found = await fresh.get(warm[2])
            assert found is not None and found.id == member.id  # a restarted orchestrator finds it by its key
        finally:
            await fresh.aclose()
        print(f"\nreal node, trigger → answered / agent listed by LiveKit: cold {cold[0] * 1000:.0f} / {cold[1] * 1000:.0f} ms, "
              f"warm {warm[0] * 1000:.0f} / {warm[1] * 1000:.0f} ms (claim {stages['claim']:.0f} ms, attach {stages['attach']:.0f} ms)")
        assert warm[1] < cold[1]
    except BaseException:
        print(kube_cluster.kubectl("get", "pods", "-n", ns, "-o", "wide", check=False).stdout)
        for p in kube_cluster.pods(ns):
            print(p["metadata"]["name"], kube_cluster.kubectl("logs", "-n", ns, p["metadata"]["name"], "--tail=40", check=False).stdout)
        print(real_node.dump_logs(4000))
        raise
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        await pool.aclose()
        await livekit.aclose()
        await runtime.aclose()
