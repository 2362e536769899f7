"""A real 3-node Docker Swarm (devtools.swarm_cluster) for the whole module set, torn down after it.

Every test gets its own scope; its services are removed at its end and their logs printed on failure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import closing
from pathlib import Path

import docker
import pytest

from orchestrator.livekit.client import LiveKitGateway
from orchestrator.core.models import LiveKitCredentials
from orchestrator.rules.naming import Label
from orchestrator.runtime.swarm.runtime import SwarmRuntime
from orchestrator.settings import Settings
from orchestrator.tenants.file_store import FileTenantStore
from orchestrator.services.trigger import TriggerService
from tests.conftest import write_tenants
from devtools.docker_helpers import TINY_IMAGE
from devtools.swarm_cluster import SwarmCluster
from devtools.swarm_teardown import remove_services

AGENT_IMAGE = "agent-orchestrator/agent:latest"
pytestmark = [pytest.mark.docker, pytest.mark.livekit]


@pytest.fixture(scope="session")
def swarm(docker_client: docker.DockerClient) -> Iterator[SwarmCluster]:
    docker_client.images.get(AGENT_IMAGE)  # built by scripts/build-images; missing is a failure, not a skip
    with SwarmCluster(nodes=3) as cluster:
        cluster.load_images(docker_client, [TINY_IMAGE, AGENT_IMAGE])
        cluster.start_livekit()
        yield cluster


@pytest.fixture
def sw_creds(swarm: SwarmCluster) -> LiveKitCredentials:
    lk = swarm.livekit
    assert lk is not None
    return LiveKitCredentials(url=lk.url, api_key=lk.api_key, api_secret=lk.api_secret)  # type: ignore[arg-type]


@pytest.fixture
def sw_settings(request: pytest.FixtureRequest, scope: str, tmp_path: Path, swarm: SwarmCluster) -> Iterator[Callable[..., Settings]]:
    """Settings for a swarm deployment on manager 1; the test's services are removed afterwards."""
    tenants = write_tenants(tmp_path / "tenants.yaml", swarm.livekit)  # type: ignore[arg-type]

    def make(**overrides: object) -> Settings:
        base: dict[str, object] = {
            "runtime": "swarm", "docker_host": swarm.nodes[0].url, "scope": scope, "tenants_file": tenants,
            "agent_image": TINY_IMAGE, "agent_memory": "64m", "agent_cpus": 0.05, "agent_stop_timeout_s": 2,
            "reconcile_enabled": False, "restart_backoff_s": 1.0,
            # The swarm's own default (an overlay per scope, made by the runtime), not the session's bridge network from the env.
            "agent_network": "",
        }
        return Settings(**{**base, **overrides})  # type: ignore[arg-type]

    yield make
    rep = getattr(request.node, "rep_call", None)
    for node in swarm.nodes:
        if not node.running():
            continue
        try:
            with closing(node.client(timeout=20)) as c:
                services = c.api.services(filters={"label": f"{Label.SCOPE}={scope}"})
                if rep is not None and rep.failed:
                    for svc in services:
                        logs = b"".join(c.api.service_logs(svc["ID"], stdout=True, stderr=True, tail=40)).decode(errors="replace")
                        tasks = [(t["Status"]["State"], t["Status"].get("Err"), t.get("NodeID", "")[:8]) for t in c.api.tasks(filters={"service": svc["ID"]})]
                        print(f"\n--- service {svc['Spec']['Name']} tasks {tasks} ---\n{logs}")
                    print(f"\n==== livekit-server log ====\n{swarm.livekit.log_tail() if swarm.livekit else ''}")
                remove_services(c, label=f"{Label.SCOPE}={scope}")
            break
        except docker.errors.DockerException:
            continue


@pytest.fixture
async def runtimes(swarm: SwarmCluster) -> AsyncIterator[Callable[..., SwarmRuntime]]:
    """SwarmRuntime on manager k (0-based), closed at the end."""
    made: list[SwarmRuntime] = []

    def make(k: int = 0, **kw: object) -> SwarmRuntime:
        rt = SwarmRuntime(base_url=swarm.nodes[k].url, **kw)  # type: ignore[arg-type]
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


@pytest.fixture
async def livekit_gateway() -> AsyncIterator[LiveKitGateway]:
    gw = LiveKitGateway()
    yield gw
    await gw.aclose()


@pytest.fixture
def trigger_service(livekit_gateway: LiveKitGateway) -> Callable[..., TriggerService]:
    def make(settings: Settings, runtime: SwarmRuntime, **kw: object) -> TriggerService:
        return TriggerService(settings=settings, tenants=FileTenantStore(settings.tenants_file), livekit=livekit_gateway, runtime=runtime, **kw)  # type: ignore[arg-type]

    return make
