"""trigger-agent against the real Docker engine and a real livekit-server: reuse or launch, exactly once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import docker
import httpx
import jwt
import pytest
import yaml
from livekit import api as lkapi

from orchestrator.rules.ownership import STAMP_KEY
from orchestrator.rules.naming import Label
from orchestrator.runtime.docker.runtime import DockerRuntime
from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID, OTHER_CLIENT_ID, app_client, write_tenants
from devtools.agent_room import eventually, view_sees
from devtools.docker_helpers import scoped
from devtools.livekit_server import LiveKitServer, free_port

pytestmark = [pytest.mark.docker, pytest.mark.livekit]


def body(room: str, **kw: object) -> dict[str, object]:
    return {"agent_slug": "clarence_coherence", "mode": "voice", "room_name": room,
            "user_id": "test-user-123", "client_id": CLIENT_ID, **kw}


async def test_created_then_reused_with_exact_labels(
    api: httpx.AsyncClient, docker_client: docker.DockerClient, scope: str, livekit_server: LiveKitServer
) -> None:
    first = await api.post("/api/v1/trigger-agent", json=body("test-room-1"))
    assert first.status_code == 201, first.text  # created; the reuse below answers 200
    a = first.json()
    assert a["status"] == "created"
    assert a["agent"] == {"id": "agent-clarence", "slug": "clarence-coherence", "name": "Clarence Coherence"}
    assert a["container_status"] == "running" and a["spec_stale"] is False
    assert a["livekit_url"] == livekit_server.url

    second = await api.post("/api/v1/trigger-agent", json=body("test-room-1", agent_slug="Clarence Coherence"))
    b = second.json()
    assert second.status_code == 200 and b["status"] == "reused"
    assert (b["container_name"], b["container_id"]) == (a["container_name"], a["container_id"])

    [container] = scoped(docker_client, scope)
    assert container.name == a["container_name"]
    labels = container.labels
    assert {k: v for k, v in labels.items() if k != Label.CREATED_AT and k.startswith("agent-orchestrator.")} == {
        Label.MANAGED: "true", Label.SCOPE: scope, Label.CLIENT_ID: CLIENT_ID,
        Label.AGENT_SLUG: "clarence-coherence", Label.AGENT_ID: "agent-clarence", Label.ROOM: "test-room-1",
        Label.MODE: "voice", Label.SPEC_HASH: labels[Label.SPEC_HASH],
    }
    assert len(labels[Label.SPEC_HASH]) == 16 and labels[Label.CREATED_AT].startswith("20")
    # The tenant's API secret is in no label and nowhere in the container's environment.
    inspect = json.dumps(container.attrs)
    assert livekit_server.api_secret not in inspect
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    claims = jwt.decode(env["LIVEKIT_TOKEN"], livekit_server.api_secret, algorithms=["HS256"])
    assert claims["sub"] == "agent-clarence-coherence" and claims["kind"] == "agent"
    assert claims["video"]["room"] == "test-room-1" and claims["video"]["roomJoin"] is True
    assert not claims["video"].get("roomAdmin") and not claims["video"].get("roomCreate")
    hc = container.attrs["HostConfig"]
    assert hc["Memory"] == 64 * 1024 * 1024 and hc["NanoCpus"] == 200_000_000 and hc["PidsLimit"] == 256
    assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}


async def test_exited_container_is_replaced(api: httpx.AsyncClient, docker_client: docker.DockerClient, scope: str) -> None:
    first = (await api.post("/api/v1/trigger-agent", json=body("room-exit"))).json()
    docker_client.containers.get(first["container_id"]).stop(timeout=5)
    await view_sees(api, first["container_id"], status="exited")  # the reuse answer comes from the watch-fed view
    second = (await api.post("/api/v1/trigger-agent", json=body("room-exit"))).json()
    assert second["status"] == "created"
    assert second["container_name"] == first["container_name"] and second["container_id"] != first["container_id"]
    assert [c.id for c in scoped(docker_client, scope)] == [second["container_id"]]


async def test_created_but_never_started_container_is_started(
    api: httpx.AsyncClient, docker_client: docker.DockerClient, scope: str
) -> None:
    """A crash between create and start leaves a 'created' container; the next trigger repairs it."""
    first = (await api.post("/api/v1/trigger-agent", json=body("room-created"))).json()
    old = docker_client.containers.get(first["container_id"])
    old.remove(force=True)
    half = docker_client.containers.create(
        old.image.id, name=first["container_name"], labels=old.labels, detach=True
    )
    assert half.status == "created"
    await view_sees(api, half.id, status="created")  # the reuse answer would otherwise come from the view
    again = (await api.post("/api/v1/trigger-agent", json=body("room-created"))).json()
    assert again["status"] == "reused" and again["container_id"] == half.id
    assert docker_client.containers.get(half.id).status == "running"


async def test_fifty_concurrent_identical_triggers_make_one_container(
    api: httpx.AsyncClient, docker_client: docker.DockerClient, scope: str
) -> None:
    answers = await asyncio.gather(*(api.post("/api/v1/trigger-agent", json=body("room-burst")) for _ in range(50)))
    assert sorted(r.status_code for r in answers) == [200] * 49 + [201]  # one created, 49 reused
    ids = {r.json()["container_id"] for r in answers}
    assert len(ids) == 1
    assert sorted(r.json()["status"] for r in answers).count("created") == 1
    assert [c.id for c in scoped(docker_client, scope)] == list(ids)


async def test_two_rooms_two_containers(api: httpx.AsyncClient, docker_client: docker.DockerClient, scope: str) -> None:
    a = (await api.post("/api/v1/trigger-agent", json=body("test-room-1"))).json()
    b = (await api.post("/api/v1/trigger-agent", json=body("test-room-2"))).json()
    assert a["container_name"] != b["container_name"]
    assert {c.labels[Label.ROOM] for c in scoped(docker_client, scope)} == {"test-room-1", "test-room-2"}


async def test_two_clients_same_slug_are_separate(
    api: httpx.AsyncClient, docker_client: docker.DockerClient, scope: str
) -> None:
    # Both clients share one LiveKit project here, so they cannot share a room name (test_room_ownership).
    a = (await api.post("/api/v1/trigger-agent", json=body("shared-a", agent_slug="farah"))).json()
    b = (await api.post("/api/v1/trigger-agent", json=body("shared-b", agent_slug="farah", client_id=OTHER_CLIENT_ID))).json()
    assert a["agent"]["id"] == "agent-farah" and b["agent"]["id"] == "agent-acme-farah"
    assert len({c.name for c in scoped(docker_client, scope)}) == 2


async def test_generated_room_when_none_given(api: httpx.AsyncClient) -> None:
    r = (await api.post("/api/v1/trigger-agent", json=body(None))).json()  # type: ignore[arg-type]
    assert r["room_name"].startswith("agent-agent-clarence-") and len(r["room_name"].rsplit("-", 1)[1]) == 8


async def test_unknown_slug_is_404_with_closest(api: httpx.AsyncClient, docker_client: docker.DockerClient, scope: str) -> None:
    resp = await api.post("/api/v1/trigger-agent", json=body("r", agent_slug="clarence_coherance"))
    assert resp.status_code == 404
    assert resp.json()["suggestions"] == ["clarence-coherence"]
    assert "clarence-coherence" in resp.json()["detail"]
    resp = await api.post("/api/v1/trigger-agent", json=body("r", client_id="nobody"))
    assert resp.status_code == 404 and "client 'nobody'" in resp.json()["detail"]
    assert scoped(docker_client, scope) == []


async def test_room_has_metadata_and_timeouts_and_token_grants_only_that_room(
    api: httpx.AsyncClient, livekit_server: LiveKitServer
) -> None:
    r = (await api.post("/api/v1/trigger-agent", json=body("room-meta"))).json()
    async with lkapi.LiveKitAPI(livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret) as lk:
        [room] = (await lk.room.list_rooms(lkapi.ListRoomsRequest(names=["room-meta"]))).rooms
    metadata = json.loads(room.metadata)
    assert metadata.pop(STAMP_KEY)["client_id"] == CLIENT_ID  # the ownership stamp (test_ownership_stamps checks it)
    assert metadata == {"agent_id": "agent-clarence", "agent_slug": "clarence-coherence", "client_id": CLIENT_ID}
    assert room.empty_timeout >= 60 and room.departure_timeout >= 60
    claims = lkapi.TokenVerifier(livekit_server.api_key, livekit_server.api_secret).verify(r["user_token"])
    assert claims.identity == "test-user-123"
    assert claims.video.room == "room-meta" and claims.video.room_join
    assert not claims.video.room_admin and not claims.video.room_create and not claims.video.room_list


async def test_changed_agent_config_reuses_and_reports_stale(
    make_settings: Callable[..., Settings], tenants_file: Path, docker_client: docker.DockerClient, scope: str
) -> None:
    async def trigger(settings: Settings) -> dict[str, object]:
        async with app_client(settings) as c:
            return (await c.post("/api/v1/trigger-agent", json=body("room-stale"))).json()

    first = await trigger(make_settings())
    data = yaml.safe_load(tenants_file.read_text())
    data["clients"][0]["agents"][0]["instructions"] = "Be brief now."
    tenants_file.write_text(yaml.safe_dump(data))
    second = await trigger(make_settings())
    assert second["status"] == "reused" and second["container_id"] == first["container_id"]
    assert first["spec_stale"] is False and second["spec_stale"] is True


async def test_docker_unreachable_is_503_and_healthz_says_so(make_settings: Callable[..., Settings]) -> None:
    async with app_client(make_settings(docker_host="unix:///nonexistent/docker.sock", docker_retries=1)) as c:
        resp = await c.post("/api/v1/trigger-agent", json=body("room-nodocker"))
        health = await c.get("/healthz")
    assert resp.status_code == 503 and resp.headers["retry-after"]
    assert "Docker" in resp.json()["detail"]
    assert health.status_code == 503 and health.json()["status"] == "unavailable"


async def test_livekit_unreachable_is_503_and_creates_nothing(
    make_settings: Callable[..., Settings], tmp_path: Path, docker_client: docker.DockerClient, scope: str
) -> None:
    dead = LiveKitServer(api_key="k", api_secret="s" * 32, port=free_port())  # never started
    async with app_client(make_settings(tenants_file=write_tenants(tmp_path / "t.yaml", dead))) as c:
        resp = await c.post("/api/v1/trigger-agent", json=body("room-nolk"))
    assert resp.status_code == 503 and "unreachable" in resp.json()["detail"]
    assert dead.api_secret not in resp.text
    assert scoped(docker_client, scope) == []


async def test_healthz_ok(api: httpx.AsyncClient) -> None:
    resp = await api.get("/healthz")
    body = resp.json()
    assert resp.status_code == 200 and {k: body[k] for k in ("status", "docker", "reconciler")} == {
        "status": "ok", "docker": "ok", "reconciler": "not running"
    }
    assert body["view"]["containers"] == 0 and isinstance(body["view"]["synced"], bool)


class LaggingRuntime(DockerRuntime):
    """The real engine, with its watch delivering changes half a second late: a stale view, on purpose."""

    def watch(self, *, scope: str):  # type: ignore[no-untyped-def]
        async def late():  # type: ignore[no-untyped-def]
            async for event in super(LaggingRuntime, self).watch(scope=scope):
                if event.kind != "relist":
                    await asyncio.sleep(0.5)
                yield event

        return late()


async def test_a_stale_reuse_answer_from_the_view_is_settled_again(
    make_settings: Callable[..., Settings], docker_client: docker.DockerClient, scope: str
) -> None:
    """A reuse answered from the view just before the watch reports that container dead gets a running agent."""
    async with app_client(make_settings(), runtime=LaggingRuntime()) as api:
        first = (await api.post("/api/v1/trigger-agent", json=body("room-stale"))).json()
        await view_sees(api, first["container_id"], status="running")
        docker_client.containers.get(first["container_id"]).stop(timeout=2)
        stale = (await api.post("/api/v1/trigger-agent", json=body("room-stale"))).json()
        assert stale["status"] == "reused" and stale["container_id"] == first["container_id"]  # the lag, on purpose

        async def replaced() -> list[str]:
            try:
                running = [c for c in scoped(docker_client, scope) if c.status == "running"]
            except docker.errors.NotFound:  # the old one was removed between the list and its inspect: ask again
                return []
            return [c.id for c in running if c.id != first["container_id"]]

        (new_id,) = await eventually(replaced, timeout=10, what="the key settled again after the watch saw the death")
        assert [c.id for c in scoped(docker_client, scope)] == [new_id]
