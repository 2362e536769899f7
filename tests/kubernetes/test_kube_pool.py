"""The warm pool's claim/adopt protocol on Kubernetes, against the real kube-apiserver with kwok nodes.

kwok runs no container, so the handover (pods/attach) and the join are proven on the real kubelet node
(test_kube_pool_real_node.py); here: members hold no tenant data, one member goes to one claimant, one key to
one Pod, and a claimed member is found by its key by a fresh runtime (a restart, a second process).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable

import pytest

from orchestrator.core.errors import DependencyUnavailable
from orchestrator.core.models import ContainerStatus
from orchestrator.rules import pool as rules
from orchestrator.rules.naming import Label, key_from_labels
from orchestrator.runtime import SECRET_ENV_KEYS, MemberGone, NameTaken
from orchestrator.runtime.kubernetes.members import POOL_KEY
from orchestrator.runtime.kubernetes.objects import pod_name
from orchestrator.runtime.kubernetes.pool import PooledKubernetesRuntime
from orchestrator.settings import Settings
from devtools.pool_specs import key_spec, member_spec
from devtools.kube_cluster import KubeCluster

pytestmark = pytest.mark.kubernetes


@pytest.fixture
async def pooled(kube_settings: Callable[..., Settings]) -> AsyncIterator[Callable[[], PooledKubernetesRuntime]]:
    """Runtimes of their own (own clients, own memory): each one stands for an orchestrator process."""
    made: list[PooledKubernetesRuntime] = []

    def make() -> PooledKubernetesRuntime:
        made.append(PooledKubernetesRuntime.from_settings(kube_settings()))
        return made[-1]

    yield make
    for r in made:
        await r.aclose()


async def test_a_member_holds_no_tenant_data_has_stdin_and_is_no_agent(
    pooled: Callable[[], PooledKubernetesRuntime], kscope: str, kube_cluster: KubeCluster
) -> None:
    rt = pooled()
    member = await rt.create_member(member_spec(kscope))
    assert member.status is ContainerStatus.running  # returned once running: a handover can follow at once
    pod = kube_cluster.api("GET", f"/api/v1/namespaces/{rt.namespace}/pods/{member.name}")
    c = pod["spec"]["containers"][0]
    assert c["stdin"] is True and not c.get("stdinOnce") and not c.get("tty")
    assert not {e["name"] for e in c["env"]} & SECRET_ENV_KEYS and all("valueFrom" not in e for e in c["env"])
    assert Label.MANAGED not in pod["metadata"]["labels"] and Label.CLIENT_ID not in pod["metadata"]["labels"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True  # hardened as an agent
    assert not kube_cluster.api("GET", f"/api/v1/namespaces/{rt.namespace}/secrets")["items"]
    assert await rt.list_managed(scope=kscope) == []  # never an agent to the view, `ps` or limits
    assert [(i.id, rec) for i, rec in await rt.list_members(scope=kscope)] == [(member.id, None)]
    with pytest.raises(DependencyUnavailable):  # a spec with a secret is refused before anything is made
        await rt.create_member(member_spec(kscope).model_copy(update={"env": {"LIVEKIT_TOKEN": "x"}}))


async def test_two_processes_racing_for_one_member_exactly_one_wins(
    pooled: Callable[[], PooledKubernetesRuntime], kscope: str
) -> None:
    a, b = pooled(), pooled()
    members = await asyncio.gather(*(a.create_member(member_spec(kscope)) for _ in range(4)))
    await b.list_members(scope=kscope)  # b knows the members too (and their resourceVersions), as a second process would
    for i, member in enumerate(members):
        sa, sb = key_spec(kscope, f"race-a{i}"), key_spec(kscope, f"race-b{i}")
        got = await asyncio.gather(
            a.claim_member(member, name=sa.name, labels=sa.labels), b.claim_member(member, name=sb.name, labels=sb.labels),
            return_exceptions=True,
        )
        wins = [g for g in got if not isinstance(g, BaseException)]
        assert len(wins) == 1 and isinstance([g for g in got if isinstance(g, BaseException)][0], MemberGone), got
        # The pod says which key it serves, and it is the winner's.
        fresh = pooled()
        agents = await fresh.list_managed(scope=kscope)
        mine = [x for x in agents if x.id == member.id]
        assert len(mine) == 1 and mine[0].name == wins[0].name
        assert key_from_labels(mine[0].labels) == key_from_labels((sa if wins[0].name == pod_name(sa.name) else sb).labels)


async def test_two_claims_for_one_key_leave_at_most_one_pod_serving_it(
    pooled: Callable[[], PooledKubernetesRuntime], kscope: str, kube_cluster: KubeCluster
) -> None:
    a, b, c = pooled(), pooled(), pooled()
    m1, m2 = await asyncio.gather(a.create_member(member_spec(kscope)), a.create_member(member_spec(kscope)))
    spec = key_spec(kscope, "one-key")
    got = await asyncio.gather(
        a.claim_member(m1, name=spec.name, labels=spec.labels), b.claim_member(m2, name=spec.name, labels=spec.labels),
        c.create_and_start(spec), return_exceptions=True,
    )
    assert all(isinstance(g, NameTaken) or not isinstance(g, BaseException) for g in got), got
    serving = [p for p in kube_cluster.pods(a.namespace)
               if not p["metadata"].get("deletionTimestamp")
               and (p["metadata"]["labels"].get(POOL_KEY) == pod_name(spec.name) or p["metadata"]["name"] == pod_name(spec.name))]
    assert len(serving) <= 1, [p["metadata"]["name"] for p in serving]
    assert len(serving) == sum(not isinstance(g, BaseException) for g in got)
    # And the key's name on a member already claimed: a later claim of another member for it is refused.
    if serving:
        m3 = await a.create_member(member_spec(kscope))
        with pytest.raises(NameTaken):
            await b.claim_member(m3, name=spec.name, labels=spec.labels)
        assert await a.get(m3.name) is None and m3.id not in {i.id for i, _ in await a.list_members(scope=kscope)}


async def test_a_claimed_member_is_its_keys_container_to_a_fresh_runtime(
    pooled: Callable[[], PooledKubernetesRuntime], kscope: str, kube_cluster: KubeCluster
) -> None:
    a = pooled()
    member = await a.create_member(member_spec(kscope))
    # Someone else changes the member after a read it (as the kubelet's status updates do): a claim is then stale
    # (409) but the member is still idle, so the claim reads it again and wins.
    kube_cluster.kubectl("patch", "pod", "-n", a.namespace, member.name, "--type=merge", "-p", '{"metadata":{"annotations":{"example.com/touched":"1"}}}')
    spec = key_spec(kscope, "Support Room #1")  # a room no label value can carry: an annotation keeps it exact
    claimed = await a.claim_member(member, name=spec.name, labels=spec.labels)
    key = key_from_labels(spec.labels)
    assert claimed.name == pod_name(spec.name) and key_from_labels(claimed.labels) == key
    assert a.calls["claim"] == 2  # the first patch met the precondition failing (409), the second won

    restarted = pooled()  # a restarted orchestrator (or `ps`, or a second process): the API server is its only store
    got = await restarted.get(spec.name)
    assert got is not None and got.id == member.id and got.name == pod_name(spec.name) and key_from_labels(got.labels) == key
    assert [(x.id, x.name) for x in await pooled().list_managed(scope=kscope)] == [(member.id, pod_name(spec.name))]
    watcher = pooled()
    async for ev in watcher.watch(scope=kscope):
        assert ev.kind == "relist" and [(x.id, x.name) for x in ev.items] == [(member.id, pod_name(spec.name))]
        break
    listed = await pooled().list_members(scope=kscope)
    assert len(listed) == 1 and rules.is_canonical(listed[0][0].name) and listed[0][1] is not None  # the pool leaves it
    # No cold create can take the key now, from any process; the refused cold Pod goes (not the member: `restarted`
    # maps the key's Pod name to the member, and must still delete its own cold Pod by uid).
    with pytest.raises(NameTaken):
        await restarted.create_and_start(spec)
    assert [p["metadata"]["uid"] for p in kube_cluster.pods(a.namespace) if not p["metadata"].get("deletionTimestamp")] == [member.id]
    remover = pooled()
    assert await remover.logs_tail(spec.name) == ""  # kwok serves no logs; resolving the name must not fail
    await remover.remove(spec.name)  # by the key's name, as the reconciler and the trigger do
    assert not [p for p in kube_cluster.pods(a.namespace) if not p["metadata"].get("deletionTimestamp")]
    assert await restarted.get(spec.name) is None


async def test_removing_an_idle_member_keeps_one_claimed_since_and_kwok_cannot_take_a_handover(
    pooled: Callable[[], PooledKubernetesRuntime], kscope: str
) -> None:
    a, b = pooled(), pooled()
    member = await a.create_member(member_spec(kscope))
    spec = key_spec(kscope, "kept")
    await b.claim_member(member, name=spec.name, labels=spec.labels)
    await a.remove_member(member)  # a's stale idea of it (idle): it serves a key now and stays
    assert (await b.get(spec.name)) is not None
    t0 = time.perf_counter()
    with pytest.raises(DependencyUnavailable):  # no kubelet behind a kwok node: attach cannot be served
        await b.hand_over(spec.name, b'{"env":{}}\n', timeout_s=3)
    assert time.perf_counter() - t0 < 4


async def test_claim_latency_on_kwok(pooled: Callable[[], PooledKubernetesRuntime], kscope: str) -> None:
    """claim → the Pod adopted as its key's (patched, checked for rivals), p50 over 30 claims (bench: more)."""
    rt = pooled()
    members = []
    for _ in range(3):
        members += await asyncio.gather(*(rt.create_member(member_spec(kscope)) for _ in range(10)))
    took = []
    for i, member in enumerate(members):
        spec = key_spec(kscope, f"lat-{i}")
        t0 = time.perf_counter()
        await rt.claim_member(member, name=spec.name, labels=spec.labels)
        took.append((time.perf_counter() - t0) * 1000)
    p50 = statistics.median(took)
    print(f"\nkwok claim → adopted: p50 {p50:.1f} ms, max {max(took):.1f} ms over {len(took)}")
    assert p50 < 250  # the goal is 60 ms on an idle machine; this bound only catches a broken path on a busy one
