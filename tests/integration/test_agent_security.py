"""Image allowlist, the non-root rule, operator-only loosening, and `serve` refusing a keyless API agents could reach."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import docker
import pytest
import yaml

from orchestrator.rules.isolation import AgentNetwork
from orchestrator.livekit.client import LiveKitGateway
from orchestrator.core.models import LiveKitCredentials
from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID, app_client
from devtools.docker_helpers import TINY_IMAGE, scoped
from devtools.livekit_server import LiveKitServer, free_port

pytestmark = [pytest.mark.docker, pytest.mark.livekit, pytest.mark.timeout(60)]


def add_agents(tenants_file: Path, agents: list[dict[str, str]]) -> None:
    data = yaml.safe_load(tenants_file.read_text())
    data["clients"][0]["agents"].extend(agents)
    tenants_file.write_text(yaml.safe_dump(data))


def body(slug: str, room: str) -> dict[str, str]:
    return {"agent_slug": slug, "room_name": room, "user_id": "u", "client_id": CLIENT_ID}


async def test_image_outside_the_allowlist_is_refused_before_anything_is_made(
    make_settings: Callable[..., Settings], tenants_file: Path, scope: str, docker_client: docker.DockerClient,
    livekit_server: LiveKitServer,
) -> None:
    add_agents(tenants_file, [
        {"id": "a-evil", "slug": "evil", "name": "Evil", "image": "agent-orchestrator/tiny-evil:latest"},
        {"id": "a-look", "slug": "lookalike", "name": "Lookalike", "image": "evil.example/agent-orchestrator/tiny:latest"},
        {"id": "a-ok", "slug": "tagged", "name": "Tagged", "image": "agent-orchestrator/tiny:latest"},
    ])
    creds = LiveKitCredentials(url=livekit_server.url, api_key=livekit_server.api_key, api_secret=livekit_server.api_secret)
    gateway = LiveKitGateway()
    try:
        # Default allowlist: the repository of ORCH_AGENT_IMAGE (here the tiny image) and nothing else.
        async with app_client(make_settings()) as api:
            for slug in ("evil", "lookalike"):
                room = f"{scope}-{slug}"
                r = await api.post("/api/v1/trigger-agent", json=body(slug, room))
                assert r.status_code == 403, r.text
                assert r.json()["code"] == "image_not_allowed"
                assert "ORCH_AGENT_IMAGE_ALLOWLIST" in r.json()["detail"]
                assert not scoped(docker_client, scope), "a container was created for a refused image"
                assert not await gateway.list_rooms(creds, names=[room]), "a LiveKit room was created for a refused image"
            ok = await api.post("/api/v1/trigger-agent", json=body("tagged", f"{scope}-tagged"))
            assert ok.status_code == 201, ok.text
        # An operator allowlist replaces the default: the default image itself is then refused too.
        async with app_client(make_settings(agent_image_allowlist=["some/other"])) as api:
            r = await api.post("/api/v1/trigger-agent", json=body("farah", f"{scope}-farah"))
            assert r.status_code == 403 and r.json()["code"] == "image_not_allowed", r.text
    finally:
        await gateway.aclose()


async def test_root_image_runs_as_the_non_root_agent_user_unless_the_operator_says_otherwise(
    make_settings: Callable[..., Settings], scope: str, docker_client: docker.DockerClient,
) -> None:
    """The tiny image has no USER (root). It runs as ORCH_AGENT_USER; only an operator exception loosens it."""
    assert docker_client.images.get(TINY_IMAGE).attrs["Config"].get("User", "") in ("", "0", "root")
    exceptions = {f"{CLIENT_ID}/litebridge": {"user": "0", "writable_root": True, "cap_add": ["CHOWN"]}}
    async with app_client(make_settings(agent_security_exceptions=exceptions)) as api:
        hardened = (await api.post("/api/v1/trigger-agent", json=body("farah", f"{scope}-h"))).json()["container_name"]
        loosened = (await api.post("/api/v1/trigger-agent", json=body("litebridge", f"{scope}-l"))).json()["container_name"]

    def run(name: str, cmd: str) -> tuple[int, str]:
        res = docker_client.containers.get(name).exec_run(["sh", "-c", cmd])
        return res.exit_code, res.output.decode(errors="replace").strip()

    assert run(hardened, "busybox id -u") == (0, "10001")
    assert run(hardened, "echo x > /x")[0] != 0  # read-only root
    # (/tmp is a tmpfs, but Docker copies the image's /tmp mode onto it: the tiny image's is 755 root, so
    # writing there is the agent image's business — its /tmp is 1777 and the probe writes it.)
    assert run(hardened, "busybox mount | busybox grep ' /tmp type tmpfs'")[0] == 0
    attrs = docker_client.api.inspect_container(loosened)
    assert attrs["Config"]["User"] == "0" and attrs["HostConfig"]["ReadonlyRootfs"] is False
    assert attrs["HostConfig"]["CapAdd"] == ["CHOWN"] and attrs["HostConfig"]["CapDrop"] == ["ALL"]
    assert run(loosened, "busybox id -u") == (0, "0")
    assert run(loosened, "echo x > /x")[0] == 0


def _serve_refusal(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    full.update({"ORCH_PORT": str(free_port()), "ORCH_RECONCILE_ENABLED": "false", "ORCH_USAGE_SAMPLING_ENABLED": "false", **env})
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", "serve"], env=full, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("env,says", [
    ({"ORCH_AGENT_NETWORK": "host"}, "reach the host's loopback"),
    ({"ORCH_HOST": "0.0.0.0"}, "auth is disabled"),
])
def test_serve_refuses_a_keyless_api_agents_could_reach(env: dict[str, str], says: str, scope: str) -> None:
    done = _serve_refusal({"ORCH_SCOPE": scope, **env})
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr


def test_serve_refuses_the_gateway_without_keys(scope: str, agent_network: AgentNetwork) -> None:
    assert agent_network.gateway
    done = _serve_refusal({"ORCH_SCOPE": scope, "ORCH_AGENT_NETWORK": agent_network.name, "ORCH_HOST": agent_network.gateway})
    assert done.returncode == 2 and "refusing to bind" in done.stderr, done.stdout + done.stderr
