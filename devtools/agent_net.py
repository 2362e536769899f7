"""The agents' network for a test session: made by the orchestrator's own code, removed at the end.

Every test and served orchestrator of the session puts its agents there (ORCH_AGENT_NETWORK), and the
session's livekit-servers bind its gateway, as a deployment's would. A network per test would cost a
subnet and a LiveKit bind each.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager

import docker

from orchestrator.services.agent_networks import BRIDGE_OPTIONS, NETWORK_LABEL
from orchestrator.rules.isolation import AgentNetwork
from orchestrator.rules.naming import Label
from orchestrator.runtime.docker.runtime import DockerRuntime

TEST_POOL = ["172.29.0.0/16"]


def make_network(name: str, *, scope: str, pool: list[str] = TEST_POOL, base_url: str | None = None) -> AgentNetwork:
    runtime = DockerRuntime(base_url=base_url)
    try:
        return asyncio.run(runtime.ensure_network(
            name, labels={Label.MANAGED: "true", Label.SCOPE: scope, NETWORK_LABEL: "agents"},
            subnet=None, pool=pool, prefix=24, options=BRIDGE_OPTIONS,
        ))
    finally:
        runtime.close()


def remove_network(client: docker.DockerClient, name: str, *, timeout_s: float = 20.0) -> None:
    """Remove a network this run made, once its containers are gone (they are removed by their scopes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.networks.get(name).remove()
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
