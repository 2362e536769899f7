"""Calls on a real kubelet node (devtools/kube_node.py), run by the whole orchestrator (reconciler and watch on):
an agent pod under gVisor (RuntimeClass `runsc`) joins and is heard; the last human leaves → the agent leaves
after the grace and its pod is gone; the agent's container killed in a call → an agent is back in the room.
All under the agents' NetworkPolicy as the runtime makes it (kube-router enforcing it on the node).

A missing kubelet, containerd, CNI plugin or runsc fails these tests; nothing skips.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from livekit import api

from devtools.agent_room import Participant, eventually, loudest_sample
from devtools.kube_cluster import KubeCluster
from devtools.kube_gvisor import HANDLER, delete_runtime_class, ensure_runtime_class
from devtools.kube_node import RealNode, sh
from devtools.livekit_server import LiveKitServer
from devtools.netpol import policy_rules
from orchestrator.composition import Orchestrator
from orchestrator.core.models import LiveKitCredentials, Mode, TriggerOutcome
from orchestrator.runtime.kubernetes.policy import POLICY_NAME
from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID

pytestmark = pytest.mark.kubernetes

AGENT = "agent-clarence-coherence"
GRACE_S = 4.0
# Kills of the agent's container in one call, each measured. The kubelet restarts it in place, the 2nd and 3rd after
# its CrashLoopBackOff (10 s, 20 s); an agent not back within ORCH_AGENT_STARTUP_TIMEOUT_S is replaced by the reconciler.
CRASHES = 3


@pytest.fixture(scope="module")
def gvisor_class(kube_cluster: KubeCluster, real_node: RealNode) -> Iterator[str]:
    ensure_runtime_class(kube_cluster)
    yield HANDLER
    delete_runtime_class(kube_cluster)


@asynccontextmanager
async def orchestrator(settings: Settings, cluster: KubeCluster, node: RealNode, livekit: LiveKitServer) -> AsyncIterator[Orchestrator]:
    """The composed orchestrator; on failure the namespace's pods, the node's logs and LiveKit's log are printed."""
    async with Orchestrator.running(settings) as orch:
        try:
            yield orch
        except BaseException:
            ns = orch.runtime.namespace  # type: ignore[attr-defined]
            print(cluster.kubectl("get", "pods", "-n", ns, "-o", "wide", check=False).stdout)
            print(cluster.kubectl("describe", "pods", "-n", ns, check=False).stdout[-4000:])
            print(cluster.kubectl("logs", "-n", ns, "--tail=60", "--prefix", "-l", "agent-orchestrator.managed=true", check=False).stdout)
            print(cluster.kubectl("get", "networkpolicies", "-n", ns, "-o", "yaml", check=False).stdout)
            print(node.dump_logs(4000))
            print(livekit.log_tail(3000))
            raise


def _creds(server: LiveKitServer) -> LiveKitCredentials:
    return LiveKitCredentials(url=server.url, api_key=server.api_key, api_secret=server.api_secret)


def _agent_in(orch: Orchestrator, server: LiveKitServer, room: str, *, not_sid: str = "") -> Callable[[], Awaitable[Any]]:
    """The agent as LiveKit lists it in `room` (a new session when `not_sid` names the old one)."""
    async def probe() -> api.ParticipantInfo | None:
        people = await orch.livekit.list_participants(_creds(server), room=room)
        return next((p for p in people if p.identity == AGENT and p.sid != not_sid), None)

    return probe


async def _no_room(orch: Orchestrator, server: LiveKitServer, room: str) -> bool:
    return not await orch.livekit.list_rooms(_creds(server), names=[room])


def _room_state(orch: Orchestrator, room: str, state: str) -> Callable[[], Awaitable[dict[str, Any] | None]]:
    async def probe() -> dict[str, Any] | None:
        return next((r for r in orch.reconciler.room_rows() if r["room"] == room and r["state"] == state), None)

    return probe


async def test_agent_pod_under_gvisor_on_the_real_node_joins_and_is_heard(
    node_settings: Callable[..., Settings], gvisor_class: str, real_node: RealNode, node_livekit: LiveKitServer,
    kube_cluster: KubeCluster,
) -> None:
    # ORCH_AGENT_RUNTIME=runsc: the pod's runtimeClassName; the agents' NetworkPolicy on (the settings' default), so
    # the agent's media passes kube-router's policy (egress to LiveKit's address and ports only, no ingress).
    settings = node_settings(agent_runtime=gvisor_class)
    assert settings.kube_network_policy
    async with orchestrator(settings, kube_cluster, real_node, node_livekit) as orch:  # preflight: the RuntimeClass exists
        room = f"{settings.scope}-gvisor"
        t0 = time.perf_counter()
        out = await orch.trigger.trigger(client_id=CLIENT_ID, agent_slug="clarence-coherence", mode=Mode.voice, user_id="u1",
                                         room_name=room)
        assert out.outcome is TriggerOutcome.created
        ns, pod = orch.runtime.namespace, out.container.name  # type: ignore[attr-defined]
        spec = kube_cluster.api("GET", f"/api/v1/namespaces/{ns}/pods/{pod}")
        assert spec["spec"]["runtimeClassName"] == HANDLER
        async with Participant(node_livekit.url, out.user_token) as user:
            listed = await eventually(_agent_in(orch, node_livekit, room), timeout=120, what=f"{AGENT} listed from the gVisor pod")
            t_listed = time.perf_counter()
            track = await user.track_from(AGENT, timeout=30)
            assert await loudest_sample(track, timeout=20, enough=5000) >= 5000
            t_heard = time.perf_counter()
        assert listed.kind == api.ParticipantInfo.Kind.AGENT
        # Heard through the policy: kube-router's chains hold the runtime's policy and this pod's firewall.
        rules = policy_rules(real_node)
        assert f"{POLICY_NAME} namespace {ns}" in rules and f"POD name:{pod} namespace: {ns}" in rules, rules[-3000:]
        pod_now = kube_cluster.api("GET", f"/api/v1/namespaces/{ns}/pods/{pod}")
        assert pod_now["spec"]["nodeName"] == real_node.name
        # The agent's kernel is gVisor's (its /proc/version is gVisor's own), not the host's.
        seen = kube_cluster.kubectl("exec", "-n", ns, pod, "--", "cat", "/proc/version").stdout.strip()
        host = open("/proc/version").read().strip()
        print(f"\ngVisor pod: /proc/version {seen!r} (host: {host[:60]!r}…)")
        assert seen and seen != host and "4.4.0" in seen
        await orch.runtime.remove(pod)
        await eventually(lambda: asyncio.to_thread(lambda: not kube_cluster.pods(ns)), timeout=60, what="the gVisor pod gone")
        print(f"gVisor on the real node: trigger → agent listed by LiveKit {t_listed - t0:.2f} s, heard {t_heard - t0:.2f} s")


async def test_last_human_leaves_then_the_agent_leaves_after_the_grace_and_its_pod_is_gone(
    node_settings: Callable[..., Settings], real_node: RealNode, node_livekit: LiveKitServer, kube_cluster: KubeCluster,
) -> None:
    settings = node_settings(reconcile_enabled=True, reconcile_interval_s=1, grace_period_s=GRACE_S)
    async with orchestrator(settings, kube_cluster, real_node, node_livekit) as orch:
        room = f"{settings.scope}-grace"
        out = await orch.trigger.trigger(client_id=CLIENT_ID, agent_slug="clarence-coherence", mode=Mode.voice, user_id="u1",
                                         room_name=room)
        ns, pod = orch.runtime.namespace, out.container.name  # type: ignore[attr-defined]
        async with Participant(node_livekit.url, out.user_token) as user:
            await user.track_from(AGENT, timeout=90)
            await eventually(_room_state(orch, room, "active"), timeout=20, what="room active (a human and the agent)")
        left_at = time.monotonic()
        await eventually(_room_state(orch, room, "grace_period"), timeout=10, what="grace period after the human left")
        while time.monotonic() < left_at + GRACE_S - 0.5:  # all through the grace the agent's pod stays and it stays in the room
            assert [p["metadata"]["name"] for p in kube_cluster.pods(ns)] == [pod], "pod gone before the grace ended"
            await asyncio.sleep(0.25)
        assert await _agent_in(orch, node_livekit, room)() is not None, "the agent left before the grace ended"
        await eventually(lambda: asyncio.to_thread(lambda: not kube_cluster.pods(ns)), timeout=GRACE_S + 40,
                         what="the agent's pod gone after the grace")
        gone_after = time.monotonic() - left_at
        assert gone_after >= GRACE_S
        assert await _agent_in(orch, node_livekit, room)() is None
        # The same pass deletes the LiveKit room once the pod's removal returned.
        await eventually(lambda: _no_room(orch, node_livekit, room), timeout=20, what="the LiveKit room deleted with the agent")
        print(f"\nreal node grace {GRACE_S:g} s: the human left → the agent's pod gone {gone_after:.2f} s later")


async def test_agent_container_killed_in_a_call_is_back_in_the_room(
    node_settings: Callable[..., Settings], real_node: RealNode, node_livekit: LiveKitServer, kube_cluster: KubeCluster,
) -> None:
    settings = node_settings(reconcile_enabled=True, reconcile_interval_s=1, grace_period_s=30)
    async with orchestrator(settings, kube_cluster, real_node, node_livekit) as orch:
        room = f"{settings.scope}-crash"
        out = await orch.trigger.trigger(client_id=CLIENT_ID, agent_slug="clarence-coherence", mode=Mode.voice, user_id="u1",
                                         room_name=room)
        ns = orch.runtime.namespace  # type: ignore[attr-defined]
        back: list[str] = []
        async with Participant(node_livekit.url, out.user_token) as user:
            await user.track_from(AGENT, timeout=90)
            await eventually(_room_state(orch, room, "active"), timeout=20, what="room active (a human and the agent)")
            for _ in range(CRASHES):
                before = await eventually(_agent_in(orch, node_livekit, room), timeout=30, what="the agent in the room")
                (pod,) = _live_pods(kube_cluster, ns)
                t0 = time.monotonic()
                # The agent's process dies: SIGKILL through the node's own containerd (no API, no graceful stop).
                how = "container killed"
                cid = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
                sh("ctr", "--address", str(real_node.sock), "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", cid)
                await eventually(_agent_in(orch, node_livekit, room, not_sid=before.sid), timeout=90,
                                 what=f"an agent back in the room after the {how}")
                took = time.monotonic() - t0
                (now,) = await eventually(lambda: asyncio.to_thread(
                    lambda: [p for p in _live_pods(kube_cluster, ns) if p["status"].get("phase") == "Running"] or None),
                    timeout=30, what="one Running agent pod")
                by = "kubelet restart in place" if now["metadata"]["uid"] == pod["metadata"]["uid"] else "a new pod"
                back.append(f"{how} → back in {took:.2f} s ({by})")
                print(f"\nreal node, crash in a call: {back[-1]}")
        # The human rejoins (within the grace) and hears the agent that came back, not a track of one that died.
        async with Participant(node_livekit.url, out.user_token) as again:
            track = await again.track_from(AGENT, timeout=30)
            assert await loudest_sample(track, timeout=20, enough=5000) >= 5000
        await orch.runtime.remove(_live_pods(kube_cluster, ns)[0]["metadata"]["name"])


def _live_pods(cluster: KubeCluster, namespace: str) -> list[dict[str, Any]]:
    """The namespace's pods not being deleted (a replaced pod may still be Terminating)."""
    return [p for p in cluster.pods(namespace) if not p["metadata"].get("deletionTimestamp")]

