"""Two tenants' compose deployments on one host, brought up exactly as the README documents them, isolated.

Each deployment is `ORCH_SCOPE=… ORCH_PORT=… ORCH_ENV_FILE=deploy/<scope>.env ORCH_CONFIG_DIR=./deploy/<scope>
docker-compose -p orch-<scope> up -d` from the repository root (relative paths, Debian's docker-compose 1.29.2), with
deploy/tenant.env.example as the settings (isolation on: each deployment makes its own agents' network and host
filter), the orchestrator image built the registry-free way, and a keys file made by `orchestrator keys new --file`.
Both share one real livekit-server on the host. At first it listens on the first deployment's gateway only: the second
deployment's start-up check says so with the fix, and its agent shows why it cannot join (rooms API, containers, feed).
Once LiveKit also listens on the second gateway, each deployment's agent joins its own room; the isolation probe inside
each agent reaches LiveKit and not a service bound to 0.0.0.0 on the host; each reconciler touches only its own;
closing the rooms, `down` and `orchestrator network --remove` leave nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
import pytest
import yaml

from devtools import isolation_probe
from devtools.agent_room import eventually
from devtools.host_service import host_wide_http
from devtools.docker_helpers import remove_scope
from devtools.livekit_server import LiveKitServer, free_port
from orchestrator.rules.isolation import gateway_of, pick_subnet
from orchestrator.rules.naming import Label, agent_identity
from orchestrator.runtime.docker.spec import bridge_name

pytestmark = [pytest.mark.docker, pytest.mark.livekit, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parents[2]
AGENT_IMAGE = "agent-orchestrator/agent:latest"
# One tag per checkout: helpers testing other trees on the same engine never build over each other's image.
POOL = ["10.214.0.0/16"]
IMAGE = f"agent-orchestrator/orchestrator:test-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:10]}"


@dataclass
class Tenant:
    scope: str
    client_id: str
    port: int
    subnet: str
    admin_key: str = ""
    client_key: str = ""

    @property
    def project(self) -> str:
        return f"orch-{self.scope}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway(self) -> str:
        return gateway_of(self.subnet)

    @property
    def config(self) -> Path:
        return ROOT / "deploy" / self.scope

    @property
    def env_file(self) -> Path:
        return ROOT / "deploy" / f"{self.scope}.env"

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The README's command line, relative paths and all (run from the repository root)."""
        # COMPOSE_HTTP_TIMEOUT: a shared engine under load can take longer than compose's default 60 s to answer.
        env = {**os.environ, "COMPOSE_HTTP_TIMEOUT": "300", "ORCH_SCOPE": self.scope, "ORCH_PORT": str(self.port),
               "ORCH_IMAGE": IMAGE, "ORCH_ENV_FILE": f"deploy/{self.scope}.env", "ORCH_CONFIG_DIR": f"./deploy/{self.scope}"}
        return subprocess.run(["docker-compose", "-p", self.project, *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=400, check=check)


def keys_new(*args: str) -> str:
    """The documented command; returns the key it shows once on stderr."""
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "keys", "new", *args],
                          capture_output=True, text=True, timeout=60, check=True, cwd=ROOT)
    return done.stderr.split("store it now): ", 1)[1].split()[0]


def make_tenant(*, scope: str, client_id: str, livekit: LiveKitServer, port: int, subnet: str) -> Tenant:
    t = Tenant(scope=scope, client_id=client_id, port=port, subnet=subnet)
    t.config.mkdir()
    creds = {"url": livekit.url, "api_key": livekit.api_key, "api_secret": livekit.api_secret}
    (t.config / "tenants.yaml").write_text(yaml.safe_dump({"clients": [{
        "id": client_id, "name": client_id.title(), "livekit": creds,
        "agents": [{"id": f"{client_id}-farah", "slug": "farah", "name": "Farah", "greeting": "Hi, Farah here."}],
    }]}))
    # The example as shipped (isolation on), plus what an operator fills in: the image, a fixed subnet so the
    # LiveKit config can name the gateway, and LiveKit's ports on this host.
    env = (ROOT / "deploy" / "tenant.env.example").read_text()
    assert "\nORCH_AGENT_NETWORK=" not in env  # the documented deployment keeps its agents off the host network
    lk_ports = f"{livekit.port}/tcp,{livekit.rtc_tcp_port}/tcp,{livekit.rtc_udp_port}/udp"
    t.env_file.write_text(env + f"\nORCH_AGENT_IMAGE={AGENT_IMAGE}\nORCH_AGENT_MEMORY=256m\nORCH_AGENT_SUBNET={subnet}\n"
                          f"ORCH_AGENT_HOST_PORTS={lk_ports}\nORCH_RECONCILE_INTERVAL_S=10\nORCH_USAGE_SAMPLING_ENABLED=false\n")
    t.admin_key = keys_new("--name", "ops", "--file", f"deploy/{scope}/api-keys.yaml")
    t.client_key = keys_new("--name", f"{client_id}-frontend", "--client", client_id, "--file", f"deploy/{scope}/api-keys.yaml")
    return t


@pytest.fixture(scope="module")
def orchestrator_image() -> str:
    subprocess.run([str(ROOT / "scripts" / "build-orchestrator-image")], env={**os.environ, "ORCH_IMAGE": IMAGE},
                   check=True, timeout=1200)
    return IMAGE


@pytest.fixture
def host_service() -> Iterator[int]:
    with host_wide_http(free_port()) as port:
        yield port


@pytest.fixture
def two_tenants(request: pytest.FixtureRequest, scope: str, orchestrator_image: str,
                docker_client: docker.DockerClient) -> Iterator[tuple[Tenant, Tenant, LiveKitServer]]:
    ports = [free_port(), free_port()]
    taken = [c["Subnet"] for n in docker_client.api.networks() for c in ((n.get("IPAM") or {}).get("Config") or [])
             if c.get("Subnet")]
    # A pool of this test's own: the engine is shared, and other runs take /24s from the default pool meanwhile.
    first = pick_subnet(pool=POOL, prefix=24, taken=taken)
    second = pick_subnet(pool=POOL, prefix=24, taken=[*taken, first or ""])
    assert first and second
    livekit = LiveKitServer(api_key="composekey", api_secret=secrets.token_hex(32), port=free_port(),
                            rtc_tcp_port=free_port(), rtc_udp_port=free_port(socket.SOCK_DGRAM), agent_gateway=gateway_of(first),
                            webhook_urls=[f"http://127.0.0.1:{p}/api/v1/livekit/webhook" for p in ports])
    # Started by the test once the first deployment's network exists (LiveKit binds its gateway).
    other = f"test-{secrets.token_hex(4)}"
    tenants: list[Tenant] = []
    try:
        tenants.append(make_tenant(scope=scope, client_id="acme", livekit=livekit, port=ports[0], subnet=first))
        tenants.append(make_tenant(scope=other, client_id="globex", livekit=livekit, port=ports[1], subnet=second))
        yield tenants[0], tenants[1], livekit
    finally:
        rep = getattr(request.node, "rep_call", None)
        for t in tenants:
            if rep is not None and rep.failed:
                print(f"\n==== compose logs of {t.project} ====\n{t.compose('logs', '--no-color', '--tail', '80', check=False).stdout}")
            t.compose("down", "--remove-orphans", check=False)
            t.compose("run", "--rm", "--no-deps", "orchestrator", "orchestrator", "network", "--remove", check=False)
            t.compose("down", "-v", check=False)  # the `run` above made the project's volumes again
            shutil.rmtree(t.config, ignore_errors=True)
            t.env_file.unlink(missing_ok=True)
        remove_scope(docker_client, other)
        livekit.stop()


def project_leftovers(client: docker.DockerClient, project: str) -> list[str]:
    label = f"com.docker.compose.project={project}"
    return [c.name for c in client.containers.list(all=True, filters={"label": label})] + \
           [n.name for n in client.networks.list(filters={"label": label})]


def probe(client: docker.DockerClient, container: str, *, gateway: str, livekit_port: int, host_port: int,
          token: str | None = None) -> dict:  # type: ignore[type-arg]
    """The isolation probe inside `container`. `token`: a join token for the agent's room, for an agent that came from
    the warm pool (its own token was handed over on stdin and lives only in its process, never in its env)."""
    targets = {"gateway": gateway, "livekit_port": livekit_port, "host_service_ports": [host_port]}
    res = client.containers.get(container).exec_run(["python3", "-c", Path(isolation_probe.__file__).read_text(), json.dumps(targets)],
                                                    environment={"LIVEKIT_TOKEN": token} if token else None)
    assert res.exit_code == 0, res.output
    return json.loads(res.output.decode().strip().splitlines()[-1])


async def test_two_tenant_deployments_come_up_as_documented_and_isolated(  # type: ignore[no-untyped-def]
    two_tenants, docker_client: docker.DockerClient, host_service: int,
) -> None:
    a, b, livekit = two_tenants
    # The first deployment's agents' network, as the README says to learn its gateway; then its LiveKit listens there.
    made = a.compose("run", "--rm", "--no-deps", "orchestrator", "orchestrator", "network", check=False)
    assert made.returncode == 0, made.stderr
    shown = json.loads(made.stdout.strip().splitlines()[-1])
    assert (shown["name"], shown["gateway"]) == (f"orch-agents-{a.scope}", a.gateway), shown
    assert f"ORCH-AGENTS-{shown['bridge']}" in json.dumps(shown["host_filter"]), shown  # installed, and shown
    livekit.start()
    for t in (a, b):
        up = t.compose("up", "-d", "orchestrator", "reconciler", check=False)
        assert up.returncode == 0, up.stderr
    admin = {t.scope: {"Authorization": f"Bearer {t.admin_key}"} for t in (a, b)}
    client_auth = {t.scope: {"Authorization": f"Bearer {t.client_key}"} for t in (a, b)}

    async with httpx.AsyncClient(timeout=60) as http:
        async def healthy(t: Tenant) -> bool:
            try:
                return (await http.get(f"{t.url}/healthz")).status_code == 200
            except httpx.HTTPError:
                return False

        for t in (a, b):
            await eventually(lambda t=t: healthy(t), timeout=90, what=f"{t.project} healthy on port {t.port}")

        async def preflight_events(t: Tenant) -> list[str]:
            events = (await http.get(f"{t.url}/api/v1/admin/events", headers=admin[t.scope])).json()["events"]
            return [e["message"] for e in events if e["kind"] == "preflight"]

        # The second deployment's start-up check: LiveKit does not listen on its gateway, and it says how to fix it.
        await eventually(lambda: preflight_events(b), timeout=60, what="the second deployment's LiveKit reach warning")
        [warning] = await preflight_events(b)
        assert f"livekit-server must listen on {b.gateway}" in warning and "globex" in warning, warning
        assert await preflight_events(a) == []
        assert f"livekit-server must listen on {b.gateway}" in b.compose("logs", "--no-color", "orchestrator").stdout

        # Room names are one namespace per LiveKit project: tenants sharing a LiveKit server use their own names.
        rooms = {t.scope: f"call-{t.client_id}-{secrets.token_hex(3)}" for t in (a, b)}

        async def trigger(t: Tenant, room: str) -> httpx.Response:
            body = {"agent_slug": "farah", "room_name": room, "user_id": "alice", "client_id": t.client_id}
            return await http.post(f"{t.url}/api/v1/trigger-agent", json=body, headers=client_auth[t.scope])

        # Before the fix: the second deployment's agent cannot join, and the rooms API, the containers and the feed say why.
        stuck = await trigger(b, rooms[b.scope])
        assert stuck.status_code == 201, stuck.text

        async def reason_shown() -> str | None:
            room = (await http.get(f"{b.url}/api/v1/rooms/{rooms[b.scope]}", headers=client_auth[b.scope])).json()
            reasons = [ag["reason"] for ag in room.get("agents", [])]
            return next((r for r in reasons if "could not join LiveKit" in r), None)

        shown = await eventually(reason_shown, timeout=90, what="the rooms API naming why the agent cannot join")
        print(f"\nrooms API while LiveKit is out of reach: {shown}")

        async def row_says() -> bool:  # `orchestrator ps` shows these rows
            rows = (await http.get(f"{b.url}/api/v1/admin/containers", headers=admin[b.scope])).json()["containers"]
            return any("could not join LiveKit" in (row.get("reason") or "") for row in rows)

        async def feed_says() -> bool:
            events = (await http.get(f"{b.url}/api/v1/admin/events", headers=admin[b.scope])).json()["events"]
            return any("could not join LiveKit" in e["message"] for e in events if e["kind"] == "container")

        await eventually(row_says, timeout=60, what="the containers API (ps) naming why the agent cannot join")
        await eventually(feed_says, timeout=60, what="the feed naming why the agent cannot join")
        closed = await http.post(f"{b.url}/api/v1/rooms/{rooms[b.scope]}/close", headers=client_auth[b.scope])
        # 404 once the reconciler has given up on the agent (its restarts ran out and it was removed): in a full,
        # loaded run that came before this close twice; the reasons above were shown either way.
        assert closed.status_code == 200 or (closed.status_code == 404 and "no agent" in closed.text), closed.text

        # The fix the warning names: LiveKit listens on the second gateway too (same ports, restarted).
        livekit.stop()
        livekit.also_bind = [b.gateway]
        livekit.start()
        rooms[b.scope] = f"call-{b.client_id}-{secrets.token_hex(3)}"

        answers = {}
        for t in (a, b):
            first = await trigger(t, rooms[t.scope])
            assert first.status_code == 201 and first.json()["status"] == "created", first.text
            again = await trigger(t, rooms[t.scope])
            assert again.status_code == 200 and again.json()["status"] == "reused", again.text
            answers[t.scope] = first.json()
            other = b if t is a else a  # the other tenant's key means nothing here: separate keys files
            body = {"agent_slug": "farah", "room_name": rooms[t.scope], "user_id": "alice", "client_id": t.client_id}
            refused = await http.post(f"{t.url}/api/v1/trigger-agent", json=body, headers=client_auth[other.scope])
            assert refused.status_code == 401, refused.text

        # Each real agent joins its own room: the client API says so (long-poll), and LiveKit lists it.
        for t in (a, b):
            waited = await http.get(f"{t.url}/api/v1/rooms/{rooms[t.scope]}/wait", params={"timeout_s": 45},
                                    headers=client_auth[t.scope])
            assert waited.status_code == 200 and waited.json()["reached"] is True, waited.text
            [agent] = waited.json()["agents"]
            assert (agent["agent_slug"], agent["container_name"]) == ("farah", answers[t.scope]["container_name"])
        from livekit import api as lkapi

        async with lkapi.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
            for t in (a, b):
                people = await lk.room.list_participants(lkapi.ListParticipantsRequest(room=rooms[t.scope]))
                assert [p.identity for p in people.participants] == [agent_identity("farah")]

        # Inside each agent: its LiveKit in reach, the host's 0.0.0.0 service not (positive control from the host first).
        assert httpx.get(f"http://127.0.0.1:{host_service}/", timeout=5).status_code == 200
        for t in (a, b):
            name = answers[t.scope]["container_name"]
            assert docker_client.api.inspect_container(name)["HostConfig"]["NetworkMode"] == f"orch-agents-{t.scope}"
            token = (lkapi.AccessToken(livekit.api_key, livekit.api_secret).with_identity(f"probe-{t.scope}")
                     .with_grants(lkapi.VideoGrants(room_join=True, room=rooms[t.scope])).to_jwt())
            result = probe(docker_client, name, gateway=t.gateway, livekit_port=livekit.port, host_port=host_service, token=token)
            print(f"probe in {t.project}'s agent:", json.dumps(result["must_fail"]))
            assert not {k: v for k, v in result["must_fail"].items() if v["ok"]}, result["must_fail"]
            assert result["must_work"]["livekit_http"]["ok"] and result["must_work"]["livekit_validate_own_token"]["ok"]

        # Each deployment owns exactly its container; each reconciler pass touches only its own.
        for t in (a, b):
            # As `docker ps | grep agent_` sees it: a warm agent keeps its member's labels (its key is in its claim
            # record), so the name is what both kinds share; idle members (pool_…) are no agents.
            mine = [c.name for c in docker_client.containers.list(filters={"label": f"{Label.SCOPE}={t.scope}"})
                    if c.name.startswith("agent_")]
            assert mine == [answers[t.scope]["container_name"]], mine
            agents = (await http.get(f"{t.url}/api/v1/admin/containers", headers=admin[t.scope])).json()["containers"]
            assert [(c["name"], c["client_id"]) for c in agents] == [(answers[t.scope]["container_name"], t.client_id)], agents
        before = {t.scope: docker_client.containers.get(answers[t.scope]["container_name"]).id for t in (a, b)}
        for t in (a, b):
            report = (await http.post(f"{t.url}/api/v1/admin/reconcile", headers=admin[t.scope])).json()
            assert report["observe_error"] is None and report["observed"]["containers"] == 1, report
            assert all(act.get("name") != answers[o.scope]["container_name"] for o in (a, b) if o is not t for act in report["actions"]), report
        assert {t.scope: docker_client.containers.get(answers[t.scope]["container_name"]).id for t in (a, b)} == before

        # Retiring a tenant: close its rooms (the agents leave), then `down` leaves nothing of it.
        for t in (a, b):
            closed = await http.post(f"{t.url}/api/v1/rooms/{rooms[t.scope]}/close", headers=client_auth[t.scope])
            assert closed.status_code == 200 and closed.json()["pass"]["failed"] == 0, closed.text
    for t in (a, b):
        down = t.compose("down", check=False)
        assert down.returncode == 0, down.stderr
        assert project_leftovers(docker_client, t.project) == []
        assert docker_client.containers.list(all=True, filters={"label": f"{Label.SCOPE}={t.scope}"}) == []
        # ... and the agents' network with its host filter, by the documented command.
        removed = t.compose("run", "--rm", "--no-deps", "orchestrator", "orchestrator", "network", "--remove", check=False)
        assert removed.returncode == 0 and '"removed": true' in removed.stdout, removed.stderr
        assert not docker_client.networks.list(names=[f"orch-agents-{t.scope}"])
        listing = subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout
        assert f"ORCH-AGENTS-{bridge_name(f'orch-agents-{t.scope}')}" not in listing
