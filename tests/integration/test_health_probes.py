"""/livez and /readyz against the real Docker engine and real livekit-servers: liveness never asks a dependency
(a LiveKit or engine outage must not restart the orchestrator); readiness says 503 while either is down."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from orchestrator.settings import Settings
from tests.conftest import OTHER_CLIENT_ID, app_client, write_tenants
from devtools.livekit_server import LiveKitServer, free_port

pytestmark = [pytest.mark.docker, pytest.mark.livekit, pytest.mark.timeout(60)]


@pytest.fixture
def own_livekit() -> Iterator[LiveKitServer]:
    """This test's own server (the session's is shared): stopped and started again on the same port."""
    server = LiveKitServer(api_key="probekey", api_secret=secrets.token_hex(32), port=free_port()).start()
    yield server
    server.stop()


async def probes(api: httpx.AsyncClient) -> dict[str, httpx.Response]:
    return {path: await api.get(path) for path in ("/livez", "/readyz", "/healthz")}


async def test_all_up_is_live_and_ready(api: httpx.AsyncClient) -> None:
    got = await probes(api)
    assert got["/livez"].status_code == 200 and got["/livez"].json()["status"] == "ok"
    assert got["/readyz"].status_code == 200, got["/readyz"].text
    assert {k: got["/readyz"].json()[k] for k in ("status", "engine", "livekit")} == {"status": "ok", "engine": "ok", "livekit": "ok"}


async def test_livekit_down_is_not_ready_but_still_live(
    own_livekit: LiveKitServer, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with app_client(make_settings(tenants_file=write_tenants(tmp_path / "t.yaml", own_livekit))) as api:
        assert (await api.get("/readyz")).status_code == 200
        own_livekit.stop()
        got = await probes(api)
        assert got["/livez"].status_code == 200, "a LiveKit outage must never fail liveness (it would restart us)"
        ready = got["/readyz"]
        assert ready.status_code == 503 and ready.json()["livekit"] == "1 of 1 unreachable" and ready.json()["engine"] == "ok"
        assert own_livekit.url.split("//")[1] not in ready.text, "the open probe must not publish tenants' LiveKit URLs"
        assert got["/healthz"].status_code == 200  # unchanged meaning: the engine and the loop
        own_livekit.start()  # same port, same keys
        back = await api.get("/readyz")
        assert back.status_code == 200, back.text


async def test_one_tenants_livekit_down_keeps_the_others_served(
    own_livekit: LiveKitServer, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    path = write_tenants(tmp_path / "t.yaml", own_livekit)
    data = yaml.safe_load(path.read_text())
    dead = LiveKitServer(api_key="k", api_secret="s" * 32, port=free_port())  # never started
    for client in data["clients"]:
        if client["id"] == OTHER_CLIENT_ID:
            client["livekit"] = {"url": dead.url, "api_key": dead.api_key, "api_secret": dead.api_secret}
    path.write_text(yaml.safe_dump(data))
    async with app_client(make_settings(tenants_file=path)) as api:
        ready = await api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["livekit"] == "1 of 2 unreachable", ready.text


async def test_engine_down_is_not_ready_but_still_live(make_settings: Callable[..., Settings]) -> None:
    async with app_client(make_settings(docker_host="unix:///nonexistent/docker.sock", docker_retries=1)) as api:
        got = await probes(api)
    assert got["/livez"].status_code == 200, "an engine outage must never fail liveness"
    ready = got["/readyz"]
    assert ready.status_code == 503 and ready.json()["status"] == "unavailable" and ready.json()["engine"] != "ok"
    assert "Docker" in ready.json()["engine"]
    assert got["/healthz"].status_code == 503
