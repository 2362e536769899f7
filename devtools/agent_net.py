"""The agents' network for a test session: made by the orchestrator's own code, removed at the end.

Every test and served orchestrator of the session puts its agents there (ORCH_AGENT_NETWORK), and the
session's livekit-servers bind its gateway, as a deployment's would. A network per test would cost a
subnet and a LiveKit bind each.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager

import docker

from orchestrator.rules.isolation import AGENTS_NETWORK_LABEL, AgentNetwork
from orchestrator.rules.naming import Label
from orchestrator.runtime.docker import hostfilter
from orchestrator.runtime.docker.runtime import DockerRuntime
from orchestrator.runtime.docker.spec import network_info

TEST_POOL = ["172.29.0.0/16"]


def harness_host_ports() -> str:
    """The host filter's LiveKit ports for the harness: its livekit-servers take free ports from the kernel's
    ephemeral range, so agents may reach that range on the gateway — and nothing of the host below it (the
    isolation tests put their host-wide services there)."""
    low, high = open("/proc/sys/net/ipv4/ip_local_port_range").read().split()
    return f"{low}-{high}/tcp,{low}-{high}/udp"


def make_network(name: str, *, scope: str, pool: list[str] = TEST_POOL, base_url: str | None = None) -> AgentNetwork:
    # Every orchestrator this process serves or builds from here on filters the network for the harness's ports.
    os.environ.setdefault("ORCH_AGENT_HOST_PORTS", harness_host_ports())
    # The LiveKit reach check runs a probe container per start: hundreds of starts in a run would cost minutes of a
    # shared engine, so the harness leaves it to the tests about it (they set ORCH_LIVEKIT_PREFLIGHT themselves).
    os.environ.setdefault("ORCH_LIVEKIT_PREFLIGHT", "off")
    runtime = DockerRuntime(base_url=base_url)
    try:
        return asyncio.run(runtime.ensure_network(
            name, labels={Label.MANAGED: "true", Label.SCOPE: scope, AGENTS_NETWORK_LABEL: "agents"},
            subnet=None, pool=pool, prefix=24,
        ))
    finally:
        runtime.close()


def remove_network(client: docker.DockerClient, name: str, *, timeout_s: float = 20.0) -> None:
    """Remove a network this run made, once its containers are gone (they are removed by their scopes), and the
    host filter an orchestrator installed on its bridge."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            net = network_info(client.api.inspect_network(name))
            client.api.remove_network(name)
            if net.managed and net.bridge:
                hostfilter.remove(net.bridge)
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextmanager
def session_network(client: docker.DockerClient) -> Iterator[AgentNetwork]:
    tag = secrets.token_hex(4)
    net = make_network(f"orch-test-agents-{tag}", scope=f"test-session-{tag}")
    try:
        yield net
    finally:
        remove_network(client, net.name)
