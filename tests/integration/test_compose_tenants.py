"""Two tenants' compose deployments on one engine, brought up as the README says, with real agents joining.

Each deployment is `docker-compose -p orch-<scope> up -d` of the repository's docker-compose.yml with the
orchestrator image built the registry-free way (scripts/build-orchestrator-image), its own scope, port,
tenants file and a keys file made by `orchestrator keys new --file`. Both share one real livekit-server on
the host's loopback (the compose file's networking: the orchestrator on the host network sees it at the
same address as the host). A trigger through each deployment's port starts the real agent image, which
joins the room; each reconciler touches only its own containers; closing the rooms and `down` leave nothing.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
import pytest
import yaml
from livekit import api as lkapi

from orchestrator.rules.naming import Label, agent_identity
from devtools.agent_room import eventually
from devtools.docker_helpers import remove_scope
from devtools.livekit_server import LiveKitServer, free_port

pytestmark = [pytest.mark.docker, pytest.mark.livekit]
ROOT = Path(__file__).resolve().parents[2]
AGENT_IMAGE = "agent-orchestrator/agent:latest"
# One tag per checkout: helpers testing other trees on the same engine never build over each other's image.
IMAGE = f"agent-orchestrator/orchestrator:test-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:10]}"


@dataclass
class Tenant:
    scope: str
    client_id: str
    port: int
    config: Path
    admin_key: str = ""
    client_key: str = ""

    @property
    def project(self) -> str:
        return f"orch-{self.scope}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # COMPOSE_HTTP_TIMEOUT: a shared engine under load can take longer than compose's default 60 s to answer.
        env = {**os.environ, "COMPOSE_HTTP_TIMEOUT": "300", "ORCH_SCOPE": self.scope, "ORCH_PORT": str(self.port), "ORCH_IMAGE": IMAGE,
               "ORCH_ENV_FILE": str(self.config / "tenant.env"), "ORCH_CONFIG_DIR": str(self.config)}
        return subprocess.run(["docker-compose", "-p", self.project, *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=400, check=check)


def keys_new(*args: str) -> str:
    """The documented command; returns the key it shows once on stderr."""
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "keys", "new", *args],
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stderr.split("store it now): ", 1)[1].split()[0]


def make_tenant(tmp: Path, *, scope: str, client_id: str, livekit: LiveKitServer, port: int) -> Tenant:
    config = tmp / scope
    config.mkdir()
    creds = {"url": livekit.url, "api_key": livekit.api_key, "api_secret": livekit.api_secret}
    (config / "tenants.yaml").write_text(yaml.safe_dump({"clients": [{
        "id": client_id, "name": client_id.title(), "livekit": creds,
        "agents": [{"id": f"{client_id}-farah", "slug": "farah", "name": "Farah", "greeting": "Hi, Farah here."}],
    }]}))
    env = (ROOT / "deploy" / "tenant.env.example").read_text()
    (config / "tenant.env").write_text(env + f"ORCH_AGENT_IMAGE={AGENT_IMAGE}\nORCH_AGENT_MEMORY=256m\n"
                                       "ORCH_RECONCILE_INTERVAL_S=10\nORCH_USAGE_SAMPLING_ENABLED=false\n")
    t = Tenant(scope=scope, client_id=client_id, port=port, config=config)
    t.admin_key = keys_new("--name", "ops", "--file", str(config / "api-keys.yaml"))
    t.client_key = keys_new("--name", f"{client_id}-frontend", "--client", client_id, "--file", str(config / "api-keys.yaml"))
    return t


@pytest.fixture(scope="module")
def orchestrator_image() -> str:
    subprocess.run([str(ROOT / "scripts" / "build-orchestrator-image")], env={**os.environ, "ORCH_IMAGE": IMAGE},
                   check=True, timeout=1200)
    return IMAGE


@pytest.fixture
def two_tenants(request: pytest.FixtureRequest, tmp_path: Path, scope: str, orchestrator_image: str,
                docker_client: docker.DockerClient) -> Iterator[tuple[Tenant, Tenant, LiveKitServer]]:
    ports = [free_port(), free_port()]
    livekit = LiveKitServer(api_key="composekey", api_secret=secrets.token_hex(32), port=free_port(),
                            webhook_urls=[f"http://127.0.0.1:{p}/api/v1/livekit/webhook" for p in ports]).start()
    other = f"test-{secrets.token_hex(4)}"
    tenants = (make_tenant(tmp_path, scope=scope, client_id="acme", livekit=livekit, port=ports[0]),
               make_tenant(tmp_path, scope=other, client_id="globex", livekit=livekit, port=ports[1]))
    try:
        yield (*tenants, livekit)
    finally:
        rep = getattr(request.node, "rep_call", None)
        for t in tenants:
            if rep is not None and rep.failed:
                print(f"\n==== compose logs of {t.project} ====\n{t.compose('logs', '--no-color', '--tail', '80', check=False).stdout}")
            t.compose("down", "--remove-orphans", check=False)
        remove_scope(docker_client, other)
        livekit.stop()


def project_leftovers(client: docker.DockerClient, project: str) -> list[str]:
    label = f"com.docker.compose.project={project}"
    return [c.name for c in client.containers.list(all=True, filters={"label": label})] + \
           [n.name for n in client.networks.list(filters={"label": label})]


async def test_two_tenant_deployments_come_up_as_documented(two_tenants, docker_client: docker.DockerClient) -> None:  # type: ignore[no-untyped-def]
    a, b, livekit = two_tenants
    for t in (a, b):
        up = t.compose("up", "-d", "orchestrator", "reconciler", check=False)
        assert up.returncode == 0, up.stderr

    async with httpx.AsyncClient(timeout=60) as http:
        async def healthy(t: Tenant) -> bool:
            try:
                return (await http.get(f"{t.url}/healthz")).status_code == 200
            except httpx.HTTPError:
                return False

        for t in (a, b):
            await eventually(lambda t=t: healthy(t), timeout=60, what=f"{t.project} healthy on port {t.port}")

        # Room names are one namespace per LiveKit project: tenants sharing a LiveKit server use their own names
        # (closing one tenant's room deletes that LiveKit room for everybody).
        rooms = {t.scope: f"call-{t.client_id}-{secrets.token_hex(3)}" for t in (a, b)}
        answers = {}
        for t in (a, b):
            room = rooms[t.scope]
            body = {"agent_slug": "farah", "room_name": room, "user_id": "alice", "client_id": t.client_id}
            auth = {"Authorization": f"Bearer {t.client_key}"}
            first = await http.post(f"{t.url}/api/v1/trigger-agent", json=body, headers=auth)
            assert first.status_code == 201 and first.json()["status"] == "created", first.text
            again = await http.post(f"{t.url}/api/v1/trigger-agent", json=body, headers=auth)
            assert again.status_code == 200 and again.json()["status"] == "reused", again.text
            assert again.json()["container_id"] == first.json()["container_id"]
            answers[t.scope] = first.json()
            # The other tenant's key means nothing here: separate keys files.
            other = b if t is a else a
            refused = await http.post(f"{t.url}/api/v1/trigger-agent", json=body, headers={"Authorization": f"Bearer {other.client_key}"})
            assert refused.status_code == 401, refused.text

        # The real agent joins: the client API says so (long-poll), and LiveKit lists it.
        for t in (a, b):
            waited = await http.get(f"{t.url}/api/v1/rooms/{rooms[t.scope]}/wait", params={"timeout_s": 45},
                                    headers={"Authorization": f"Bearer {t.client_key}"})
            assert waited.status_code == 200 and waited.json()["reached"] is True, waited.text
            [agent] = waited.json()["agents"]
            assert (agent["agent_slug"], agent["container_name"]) == ("farah", answers[t.scope]["container_name"])
            # No human joined: once the room's webhook is in, the grace clock runs (the room closes 60 s later).
            assert agent["phase"] in ("joined", "in_grace"), agent
        async with lkapi.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
            for t in (a, b):
                people = await lk.room.list_participants(lkapi.ListParticipantsRequest(room=rooms[t.scope]))
                assert [p.identity for p in people.participants] == [agent_identity("farah")]

        # Each deployment owns exactly its container; each reconciler pass touches only its own.
        for t in (a, b):
            mine = docker_client.containers.list(filters={"label": f"{Label.SCOPE}={t.scope}"})
            assert [(c.name, c.labels[Label.CLIENT_ID]) for c in mine] == [(answers[t.scope]["container_name"], t.client_id)]
        before = {t.scope: docker_client.containers.get(answers[t.scope]["container_name"]).id for t in (a, b)}
        for t in (a, b):
            report = (await http.post(f"{t.url}/api/v1/admin/reconcile", headers={"Authorization": f"Bearer {t.admin_key}"})).json()
            assert report["observe_error"] is None and report["observed"]["containers"] == 1, report
            assert all(act.get("name") != answers[o.scope]["container_name"] for o in (a, b) if o is not t for act in report["actions"]), report
        assert {t.scope: docker_client.containers.get(answers[t.scope]["container_name"]).id for t in (a, b)} == before

        # Retiring a tenant: close its rooms (the agents leave), then `down` leaves nothing of it.
        for t in (a, b):
            closed = await http.post(f"{t.url}/api/v1/rooms/{rooms[t.scope]}/close", headers={"Authorization": f"Bearer {t.client_key}"})
            assert closed.status_code == 200 and closed.json()["pass"]["failed"] == 0, closed.text
    for t in (a, b):
        down = t.compose("down", check=False)
        assert down.returncode == 0, down.stderr
        assert project_leftovers(docker_client, t.project) == []
        assert docker_client.containers.list(all=True, filters={"label": f"{Label.SCOPE}={t.scope}"}) == []
