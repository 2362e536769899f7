"""Shared fixtures: a real Docker engine, a real livekit-server, per-test scopes that clean up."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import docker
import httpx
import pytest

from orchestrator.rules.isolation import AgentNetwork
from orchestrator.settings import Settings
from orchestrator.rules.naming import Label
from devtools.agent_net import remove_network, session_network
from devtools.docker_helpers import TINY_IMAGE, dump_logs, remove_scope
from devtools.livekit_server import LiveKitServer, free_port
from devtools.world import CLIENT_ID, OTHER_CLIENT_ID, app_client, write_tenants

# The ownership signing key is generated into the deployment's state (services/signing_key.py): keep the
# tests' keys out of the home directory, in one place every process of a test run (served ones too) shares.
# No warm pool unless a test asks for one (tests/integration/test_pool.py passes pool_min/pool_max): a member is one
# more container on a test's network and in its scope, which tests counting containers or removing their network
# would trip over. Settings built directly from the environment read this too; the product's default stays on.
os.environ.setdefault("ORCH_POOL_MAX", "0")
os.environ.setdefault("XDG_STATE_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / f"orch-test-state-{os.getuid()}"))

__all__ = ["CLIENT_ID", "OTHER_CLIENT_ID", "app_client", "write_tenants"]  # tests import these from here too


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    client.ping()  # no engine is a failure, not a skip
    client.images.get(TINY_IMAGE)  # built by scripts/build-images
    yield client
    client.close()


@pytest.fixture(scope="session")
def agent_network(docker_client: docker.DockerClient) -> Iterator[AgentNetwork]:
    """The session's agent network (see tests/support/agent_net.py); every orchestrator of the run uses it."""
    with session_network(docker_client) as net:
        previous = os.environ.get("ORCH_AGENT_NETWORK")
        os.environ["ORCH_AGENT_NETWORK"] = net.name  # read by Settings() and inherited by served processes
        try:
            yield net
        finally:
            if previous is None:
                os.environ.pop("ORCH_AGENT_NETWORK", None)
            else:
                os.environ["ORCH_AGENT_NETWORK"] = previous


@pytest.fixture
def scope(request: pytest.FixtureRequest, docker_client: docker.DockerClient, agent_network: AgentNetwork) -> Iterator[str]:
    """A fresh deployment scope per test; its containers are dumped on failure and always removed."""
    name = f"test-{secrets.token_hex(4)}"
    yield name
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"\n==== container logs for scope {name} ====\n{dump_logs(docker_client, name)}")
    remove_scope(docker_client, name)
    for net in docker_client.networks.list(filters={"label": f"{Label.SCOPE}={name}"}):
        remove_network(docker_client, net.name)  # agent networks a test's orchestrator made


@pytest.fixture(scope="session")
def livekit_server(agent_network: AgentNetwork) -> Iterator[LiveKitServer]:
    server = LiveKitServer(
        api_key="testkey", api_secret=secrets.token_hex(32), port=free_port(), agent_gateway=agent_network.gateway,
    ).start()
    yield server
    server.stop()


@pytest.fixture
def tenants_file(tmp_path: Path, livekit_server: LiveKitServer) -> Path:
    return write_tenants(tmp_path / "tenants.yaml", livekit_server)


@pytest.fixture
def make_settings(scope: str, tenants_file: Path) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        base: dict[str, object] = {
            "scope": scope, "tenants_file": tenants_file, "agent_image": TINY_IMAGE,
            "agent_memory": "64m", "agent_cpus": 0.2, "agent_stop_timeout_s": 2,
            # The reconcile loop would tidy other tests' containers mid-test; lifecycle tests turn it on.
            "reconcile_enabled": False,
            # No warm pool unless a test asks (tests/integration/test_pool.py): members would be extra containers.
            "pool_max": 0,
        }
        return Settings(**{**base, **overrides})  # type: ignore[arg-type]

    return make


@pytest.fixture
async def api(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(make_settings()) as client:
        yield client


@pytest.fixture(scope="module")
def orch_port() -> int:
    """The loopback port a module's served orchestrator will listen on (known before LiveKit starts)."""
    return free_port()


@pytest.fixture(scope="module")
def hooked_livekit(orch_port: int, agent_network: AgentNetwork) -> Iterator[LiveKitServer]:
    """A livekit-server of the module's own whose webhooks point at that orchestrator port."""
    server = LiveKitServer(
        api_key="hookkey", api_secret=secrets.token_hex(32), port=free_port(), agent_gateway=agent_network.gateway,
        webhook_urls=[f"http://127.0.0.1:{orch_port}/api/v1/livekit/webhook"],
    ).start()
    yield server
    server.stop()
