"""Claims racing for one member on the real engine: exactly one claimant wins, and the member carries the winner's
name and record. Docker resolves a rename's source name before it locks the container, so a rename alone is no
mutex (a second rename renames the already-claimed member again); the claim record is."""

from __future__ import annotations

import asyncio
import secrets
from concurrent.futures import ThreadPoolExecutor

import docker
import pytest

from devtools.docker_helpers import TINY_IMAGE
from orchestrator.core.clock import utcnow
from orchestrator.core.models import ContainerInfo
from orchestrator.rules import pool as rules
from orchestrator.rules.naming import Label
from orchestrator.runtime import MemberGone, NameTaken
from orchestrator.runtime.docker.pool import PooledDockerRuntime

pytestmark = pytest.mark.docker
MEMBERS = 12
CLAIMANTS = 4


def claim(rt: PooledDockerRuntime, member: ContainerInfo, name: str) -> str:
    try:
        asyncio.run(rt.claim_member(member, name=name, labels={Label.SCOPE: member.labels[Label.SCOPE], Label.MANAGED: "true", Label.ROOM: name}))
    except (MemberGone, NameTaken):
        return "lost"
    return "won"


def test_racing_claims_of_one_member_have_one_winner(docker_client: docker.DockerClient, scope: str) -> None:
    rt = PooledDockerRuntime()
    labels = rules.member_labels(scope=scope, pool="p0", image_id="sha256:x", created_at=utcnow().isoformat())
    members = [docker_client.containers.create(TINY_IMAGE, ["sleep", "60"], name=rules.member_name(scope=scope, pool="p0", nonce=secrets.token_hex(4)),
                                               labels=labels) for _ in range(MEMBERS)]
    try:
        infos = {i.id: i for i in asyncio.run(rt.list_members(scope=scope)) for i in [i[0]]}
        assert len(infos) == MEMBERS
        # Each claimant its own engine client, as two orchestrator processes would have.
        runtimes = [PooledDockerRuntime() for _ in range(CLAIMANTS)]
        jobs = [(m, f"agent_{scope}_x_r{n}-{k}") for n, m in enumerate(infos.values()) for k in range(CLAIMANTS)]
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            results = list(pool.map(lambda job: (job[1], claim(runtimes[int(job[1].rsplit("-", 1)[1])], *job)), jobs))
        for r in runtimes:
            r.close()
        won = [name for name, outcome in results if outcome == "won"]
        finals = {c.id: c.name for c in docker_client.containers.list(all=True, filters={"label": f"{Label.SCOPE}={scope}"})}
        records = docker_client.volumes.list(filters={"label": f"{Label.SCOPE}={scope}"})
        assert len(won) == MEMBERS, f"{len(won)} winners for {MEMBERS} members: {sorted(won)}"
        assert sorted(finals.values()) == sorted(won), "a member carries another name than its winner's"
        assert sorted(v.attrs["Labels"][rules.POOL_NAME] for v in records) == sorted(won)
    finally:
        for m in members:
            m.remove(force=True)
        for v in docker_client.volumes.list(filters={"label": f"{Label.SCOPE}={scope}"}):
            v.remove(force=True)
        rt.close()
