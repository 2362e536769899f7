"""Tenant isolation on real parts: a probe inside a real agent container (started by a real trigger, on the
orchestrator's agent network, with the hardened spec) tries everything it must not reach, and its own room."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest
import yaml

from orchestrator.rules.isolation import AgentNetwork
from orchestrator.livekit.client import LiveKitGateway
from orchestrator.core.models import LiveKitCredentials
from orchestrator.rules.naming import Label
from tests.conftest import CLIENT_ID, OTHER_CLIENT_ID, write_tenants
from devtools import isolation_probe
from devtools.agent_room import CHAT_TOPIC, Participant, eventually, loudest_sample
from devtools.livekit_server import LiveKitServer
from devtools.postgres import PostgresCluster
from devtools.serve import serve

pytestmark = [pytest.mark.docker, pytest.mark.livekit, pytest.mark.timeout(180)]

AGENT_IMAGE = "agent-orchestrator/agent:latest"
PROBE = Path(isolation_probe.__file__)
LISTEN_PORT = 8080


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


def _exec(client: docker.DockerClient, container: str, cmd: list[str], *, detach: bool = False) -> tuple[int, str]:
    """`docker exec` as the container's own user, capabilities and no-new-privileges (nothing added)."""
    res = client.containers.get(container).exec_run(cmd, detach=detach)
    return res.exit_code or 0, (res.output or b"").decode(errors="replace") if not detach else ""


def _probe_made(client: docker.DockerClient, scope: str) -> bool:
    return any(c.labels.get(Label.ROOM) == "probe-made"
               for c in client.containers.list(all=True, filters={"label": f"{Label.SCOPE}={scope}"}))


def _connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


async def test_agent_reaches_its_room_and_nothing_else(
    scope: str, tmp_path: Path, docker_client: docker.DockerClient, livekit_server: LiveKitServer,
    agent_network: AgentNetwork, postgres: PostgresCluster,
) -> None:
    docker_client.images.get(AGENT_IMAGE)  # built by scripts/build-images; missing is a failure, not a skip
    assert agent_network.gateway
    tenants = write_tenants(tmp_path / "tenants.yaml", livekit_server)
    creds = LiveKitCredentials(url=livekit_server.url, api_key=livekit_server.api_key, api_secret=livekit_server.api_secret)
    gateway = LiveKitGateway()
    mine, theirs = f"{scope}-mine", f"{scope}-theirs"
    try:
        with serve(scope=scope, tenants_file=tenants, image=AGENT_IMAGE, ORCH_AGENT_MEMORY="512m", ORCH_AGENT_CPUS="1.0",
                   ORCH_RECONCILE_ENABLED="false") as url:
            port = int(url.rsplit(":", 1)[1])
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                answers = {}
                for client_id, room in ((CLIENT_ID, mine), (OTHER_CLIENT_ID, theirs)):
                    r = await http.post("/api/v1/trigger-agent", json={
                        "agent_slug": "farah", "room_name": room, "user_id": "u", "client_id": client_id})
                    assert r.status_code == 201, r.text
                    answers[room] = r.json()

                async def listed(room: str) -> bool:
                    return any(p.identity == "agent-farah" for p in await gateway.list_participants(creds, room=room))

                # The real agent image joins on the new network (through the gateway) — for both tenants.
                await eventually(lambda: listed(mine), timeout=30, what="my agent listed by LiveKit")
                await eventually(lambda: listed(theirs), timeout=30, what="the other tenant's agent listed by LiveKit")
                # ... and speaks and answers a human on the host, through LiveKit on the gateway.
                async with Participant(creds.url, answers[mine]["user_token"]) as human:
                    track = await human.track_from("agent-farah")
                    assert await loudest_sample(track, timeout=10, enough=5000) >= 5000
                    await human.room.local_participant.send_text("who is there?", topic=CHAT_TOPIC)
                    reply = await human.next_text(sender="agent-farah")
                    assert "who is there?" in reply.text
                # Positive controls from the host: the API answers on loopback, PostgreSQL takes connections.
                assert (await http.get("/api/v1/admin/containers")).status_code == 200
                assert _connects("127.0.0.1", postgres.port)

            name, other = answers[mine]["container_name"], answers[theirs]["container_name"]
            attrs = docker_client.api.inspect_container(name)
            host_cfg = attrs["HostConfig"]
            assert host_cfg["NetworkMode"] == agent_network.name
            assert host_cfg["CapDrop"] == ["ALL"] and not host_cfg["CapAdd"]
            assert host_cfg["SecurityOpt"] == ["no-new-privileges:true"]
            assert host_cfg["ReadonlyRootfs"] is True and not host_cfg["Privileged"]
            assert not host_cfg["Binds"] and not attrs["Mounts"] and set(host_cfg["Tmpfs"]) == {"/tmp"}
            assert attrs["Config"]["User"] == "10001:10001"
            assert host_cfg["PidsLimit"] and host_cfg["Memory"] and host_cfg["NanoCpus"]

            # The other tenant's agent listens on a port; the host reaches it (so the listener is real) ...
            other_ip = docker_client.api.inspect_container(other)["NetworkSettings"]["Networks"][agent_network.name]["IPAddress"]
            _exec(docker_client, other, ["python3", "-c", (
                "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
                f"s.bind(('0.0.0.0', {LISTEN_PORT})); s.listen(8)\nwhile True: c,_=s.accept(); c.close()")], detach=True)
            await eventually(lambda: asyncio.to_thread(_connects, other_ip, LISTEN_PORT), timeout=10,
                             what="the other agent's listener, from the host")

            targets = {
                "gateway": agent_network.gateway, "orch_port": port, "pg_port": postgres.port,
                "livekit_port": livekit_server.port, "other_agent_ip": other_ip, "other_agent_port": LISTEN_PORT,
                "other_room": theirs, "other_identity": "agent-farah",
                "trigger_body": {"agent_slug": "farah", "room_name": "probe-made", "user_id": "p", "client_id": OTHER_CLIENT_ID},
            }
            code, output = _exec(docker_client, name, ["python3", "-c", PROBE.read_text(), json.dumps(targets)])
            assert code == 0, output
            result = json.loads(output.strip().splitlines()[-1])
            print("\nprobe:", json.dumps(result, indent=1))

            # Nothing the probe tried changed anything: no container for the trigger it attempted.
            assert not _probe_made(docker_client, scope)

            # The probe can tell: the same probe in a container with the old spec (host network, Docker's
            # default capabilities, root, writable root) reaches the API, PostgreSQL and raw sockets.
            legacy_out = docker_client.containers.run(
                AGENT_IMAGE, entrypoint=["python3", "-c", PROBE.read_text(), json.dumps(targets)], user="0",
                network_mode="host", environment={"LIVEKIT_TOKEN": "x"}, labels={Label.SCOPE: scope},
                name=f"{scope}-legacy-probe", remove=False,
            ).decode()
            legacy = json.loads(legacy_out.strip().splitlines()[-1])["must_fail"]
            for check in ("orch_trigger_loopback", "orch_tcp_loopback", "orch_admin_loopback", "postgres_loopback", "raw_socket_icmp", "write_/app/probe-write"):
                assert legacy[check]["ok"], (check, legacy[check])

        succeeded = {k: v for k, v in result["must_fail"].items() if v["ok"]}
        assert not succeeded, f"an agent reached or did what it must not: {succeeded}"
        failed = {k: v for k, v in result["must_work"].items() if not v["ok"]}
        assert not failed, f"an agent could not do what it must: {failed}"
        # Refusals by LiveKit came from LiveKit itself (an HTTP status), not from a network failure.
        for check in ("livekit_list_participants_other_room", "livekit_delete_other_room", "livekit_list_rooms"):
            assert result["must_fail"][check].get("status") in (401, 403), result["must_fail"][check]
        status = result["status"]
        assert status["NoNewPrivs"] == "1" and int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
        assert status["Uid"].split()[0] == "10001"
        assert result["env_livekit_url"] == f"ws://{agent_network.gateway}:{livekit_server.port}"
        assert await listed(theirs)  # the other tenant's agent is still in its room
    finally:
        await gateway.aclose()


def _tenants_with_images(path: Path, livekit: LiveKitServer, images: dict[str, str]) -> Path:
    write_tenants(path, livekit)
    data = yaml.safe_load(path.read_text())
    for slug, image in images.items():
        data["clients"][0]["agents"].append({"id": f"agent-{slug}", "slug": slug, "name": slug.title(), "image": image})
    path.write_text(yaml.safe_dump(data))
    return path
