"""ORCH_AGENT_RUNTIME=runsc: agents under gVisor, hardened spec and agent network unchanged.

On a private dockerd of the test's own (the shared engine's runtimes are not ours to change), with
Debian's runsc registered through its config file, as the README tells operators to do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID, app_client
from devtools.private_dockerd import PrivateDockerd, private_engine, runsc_config

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]


@pytest.fixture
def gvisor_engine(docker_client: docker.DockerClient, tmp_path: Path) -> Iterator[PrivateDockerd]:
    config = runsc_config(tmp_path)
    with private_engine("gv", docker_client, live_restore=False, extra_args=("--config-file", str(config))) as d:
        yield d


async def test_agents_run_under_gvisor_when_asked(make_settings: Callable[..., Settings], gvisor_engine: PrivateDockerd) -> None:
    # The private engine's bridges live in its own network namespace, out of this process's sight: the host filter
    # (iptables in the orchestrator's namespace) cannot be installed there, so this engine runs with the opt-out.
    settings = make_settings(docker_host=gvisor_engine.url, agent_runtime="runsc", agent_network="",
                             usage_sampling_enabled=False, agent_host_filter=False)
    async with app_client(settings) as api:
        r = await api.post("/api/v1/trigger-agent",
                           json={"agent_slug": "farah", "room_name": "gvisor", "user_id": "u", "client_id": CLIENT_ID})
        assert r.status_code == 201, r.text
        name = r.json()["container_name"]
    client = gvisor_engine.client()
    try:
        attrs = client.api.inspect_container(name)
        assert attrs["HostConfig"]["Runtime"] == "runsc"
        assert attrs["HostConfig"]["NetworkMode"] == f"orch-agents-{settings.scope}"
        assert attrs["HostConfig"]["CapDrop"] == ["ALL"] and attrs["HostConfig"]["ReadonlyRootfs"] is True

        def run(cmd: str) -> tuple[int, str]:
            res = client.containers.get(name).exec_run(["sh", "-c", cmd])
            return res.exit_code, res.output.decode(errors="replace").strip()

        code, kernel = run("cat /proc/version")
        assert code == 0 and "Linux version 4.4.0" in kernel, kernel  # gVisor's kernel, not the host's
        assert run("busybox id -u") == (0, "10001")
        assert run("echo x > /x")[0] != 0
    finally:
        client.close()
