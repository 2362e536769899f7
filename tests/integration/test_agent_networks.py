"""The agents' networks on the real engine: made once, found again, subnets that clash with nothing, per client."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable

import docker
import pytest

from orchestrator.services.agent_networks import AgentNetworks
from orchestrator.core.errors import ConfigurationError
from orchestrator.rules.naming import Label
from orchestrator.runtime.docker.runtime import DockerRuntime
from orchestrator.runtime.docker.spec import bridge_name
from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID, OTHER_CLIENT_ID, app_client

pytestmark = [pytest.mark.docker, pytest.mark.timeout(90)]

# A pool of this file's own, away from the session network's, so the clash it stages is its own.
POOL = ["10.213.0.0/23"]


def networks_named(client: docker.DockerClient, name: str) -> list[dict]:  # type: ignore[type-arg]
    return [n for n in client.api.networks(names=[name]) if n["Name"] == name]


async def test_made_once_even_by_racing_processes_and_found_again(
    make_settings: Callable[..., Settings], scope: str, docker_client: docker.DockerClient,
) -> None:
    settings = make_settings(agent_network="", agent_subnet_pool=["172.29.0.0/16"])
    runtimes = [DockerRuntime() for _ in range(4)]  # four "processes", each with its own client and cache
    try:
        nets = await asyncio.gather(*(AgentNetworks(settings=settings, provider=r).for_client(None) for r in runtimes))
    finally:
        for r in runtimes:
            r.close()
    assert {n.name for n in nets} == {f"orch-agents-{scope}"} and len({n.subnet for n in nets}) == 1
    (row,) = networks_named(docker_client, f"orch-agents-{scope}")
    attrs = docker_client.api.inspect_network(row["Id"])
    assert attrs["Labels"][Label.SCOPE] == scope and attrs["Labels"][Label.MANAGED] == "true"
    assert attrs["Options"]["com.docker.network.bridge.enable_icc"] == "false"
    assert attrs["IPAM"]["Config"][0]["Gateway"] == nets[0].gateway
    assert attrs["Options"]["com.docker.network.bridge.name"] == nets[0].bridge == bridge_name(f"orch-agents-{scope}")
    # Four racing starts installed the host filter once: one chain, one jump from INPUT.
    listing = subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert listing.count(f"-A INPUT -i {nets[0].bridge} -j ORCH-AGENTS-{nets[0].bridge}") == 1
    assert listing.count(f"-N ORCH-AGENTS-{nets[0].bridge}") == 1
    # A restart finds it again, unchanged.
    async with app_client(settings) as api:
        assert (await api.get("/healthz")).status_code == 200
    assert [n["Id"] for n in networks_named(docker_client, f"orch-agents-{scope}")] == [row["Id"]]


async def test_subnet_pool_skips_networks_already_there_and_says_when_it_is_full(
    make_settings: Callable[..., Settings], scope: str, docker_client: docker.DockerClient,
) -> None:
    blocker = docker_client.networks.create(
        f"{scope}-blocker", driver="bridge", labels={Label.SCOPE: scope},
        ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet="10.213.0.0/24")]),
    )
    del blocker
    settings = make_settings(agent_network="", agent_subnet_pool=POOL)
    runtime = DockerRuntime()
    try:
        net = await AgentNetworks(settings=settings, provider=runtime).for_client(None)
        assert (net.subnet, net.gateway) == ("10.213.1.0/24", "10.213.1.1")
        # The pool is now used up: a second deployment is told so, by name, at start.
        full = make_settings(agent_network=f"orch-agents-{scope}-second", agent_subnet_pool=POOL)
        with pytest.raises(ConfigurationError, match="no free /24 subnet left in ORCH_AGENT_SUBNET_POOL"):
            async with app_client(full):
                pass
        # A fixed subnet that clashes is refused with the engine's reason, not retried for ever.
        clash = make_settings(agent_network=f"orch-agents-{scope}-third", agent_subnet="10.213.0.0/24")
        with pytest.raises(ConfigurationError, match=r"cannot create agent network .*10\.213\.0\.0/24"):
            async with app_client(clash):
                pass
    finally:
        runtime.close()
    assert not networks_named(docker_client, f"orch-agents-{scope}-second")


async def test_network_per_client_when_asked(
    make_settings: Callable[..., Settings], scope: str, docker_client: docker.DockerClient,
) -> None:
    settings = make_settings(agent_network="", agent_network_per_client=True)
    timings: dict[str, float] = {}
    async with app_client(settings) as api:
        names = {}
        for label, client_id, room in (("first", CLIENT_ID, "r1"), ("cached", CLIENT_ID, "r2"), ("other", OTHER_CLIENT_ID, "r3")):  # one project: room names are one client's
            started = time.perf_counter()
            r = await api.post("/api/v1/trigger-agent",
                               json={"agent_slug": "farah", "room_name": f"{scope}-{room}", "user_id": "u", "client_id": client_id})
            timings[label] = time.perf_counter() - started
            assert r.status_code == 201, r.text
            names[label] = docker_client.api.inspect_container(r.json()["container_id"])["HostConfig"]["NetworkMode"]
    assert names["first"] == names["cached"] != names["other"]
    assert all(n.startswith(f"orch-agents-{scope}-c") for n in names.values())
    labels = docker_client.api.inspect_network(names["other"])["Labels"]
    assert labels[Label.CLIENT_ID] == OTHER_CLIENT_ID and labels[Label.SCOPE] == scope
    print(f"\ntrigger incl. a new client network: {timings['first'] * 1000:.0f} ms (other client "
          f"{timings['other'] * 1000:.0f} ms); same client, network known: {timings['cached'] * 1000:.0f} ms")


async def test_a_network_removed_behind_our_back_is_made_again(
    make_settings: Callable[..., Settings], scope: str, docker_client: docker.DockerClient,
) -> None:
    settings = make_settings(agent_network="")
    name = f"orch-agents-{scope}"

    def trigger_body(room: str) -> dict[str, str]:
        return {"agent_slug": "farah", "room_name": f"{scope}-{room}", "user_id": "u", "client_id": CLIENT_ID}

    async with app_client(settings) as api:
        first = await api.post("/api/v1/trigger-agent", json=trigger_body("a"))
        assert first.status_code == 201, first.text
        docker_client.api.remove_container(first.json()["container_id"], force=True)
        docker_client.networks.get(name).remove()
        lost = await api.post("/api/v1/trigger-agent", json=trigger_body("b"))
        assert lost.status_code == 503 and "is gone" in lost.json()["detail"], lost.text
        assert int(lost.headers["Retry-After"]) >= 1
        again = await api.post("/api/v1/trigger-agent", json=trigger_body("b"))
        assert again.status_code == 201, again.text
    assert len(networks_named(docker_client, name)) == 1


def test_without_iptables_the_start_is_refused_unless_the_filter_is_opted_out(scope: str) -> None:
    """No iptables (or no NET_ADMIN) means agents would reach every host service: `network` (as `serve`) refuses,
    naming the opt-out; with the opt-out it makes the network and installs nothing."""
    env = {**os.environ, "ORCH_SCOPE": scope, "ORCH_AGENT_NETWORK": "", "PATH": "/nonexistent"}
    refused = subprocess.run([sys.executable, "-m", "orchestrator.cli", "network"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode != 0 and "ORCH_AGENT_HOST_FILTER=false" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    opted_out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "network"], capture_output=True, text=True,
                               env={**env, "ORCH_AGENT_HOST_FILTER": "false"}, timeout=60)
    assert opted_out.returncode == 0, opted_out.stderr
    assert "host_filter" in opted_out.stdout and "ORCH-AGENTS" not in opted_out.stdout
