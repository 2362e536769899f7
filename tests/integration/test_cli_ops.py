"""`orchestrator ps` with room state from the API (and its Docker-only fallback), and `orchestrator close`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from orchestrator.core.apikeys import generate
from tests.conftest import CLIENT_ID
from devtools.docker_helpers import TINY_IMAGE
from devtools.livekit_server import free_port
from devtools.serve import serve

pytestmark = [pytest.mark.docker, pytest.mark.livekit]
ADMIN = generate()


@pytest.fixture
def served(scope: str, tenants_file: Path) -> Iterator[str]:
    # The reconcile loop stays off so the room stays exactly as the trigger left it while we look.
    with serve(scope=scope, tenants_file=tenants_file, image=TINY_IMAGE, ORCH_ADMIN_API_KEY=ADMIN,
               ORCH_RECONCILE_ENABLED="false", ORCH_USAGE_SAMPLE_INTERVAL_S="0.5") as url:
        yield url


def cli(*args: str, scope: str, url: str, key: str | None = ADMIN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ORCH_API_KEY"}
    env.update({"ORCH_SCOPE": scope, "ORCH_URL": url, **({"ORCH_API_KEY": key} if key else {})})
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], env=env, capture_output=True, text=True, timeout=60)


def test_ps_shows_room_state_and_falls_back_to_docker(served: str, scope: str) -> None:
    made = cli("trigger", "farah", "--client", CLIENT_ID, "--room", "ps-room", "-o", "json", scope=scope, url=served)
    assert made.returncode == 0, made.stderr
    name = json.loads(made.stdout)["container_name"]

    rows = json.loads(cli("ps", "-o", "json", scope=scope, url=served).stdout)
    assert [(r["name"], r["client_id"], r["agent"], r["room"], r["status"], r["room_state"], r["humans"]) for r in rows] == [
        (name, CLIENT_ID, "farah", "ps-room", "running", "starting", 0)
    ]
    assert rows[0]["age_s"] is not None and rows[0]["health"] == "none"
    human = cli("ps", scope=scope, url=served)
    header, line = human.stdout.splitlines()
    assert header.split() == ["NAME", "STATUS", "HEALTH", "CLIENT_ID", "AGENT", "ROOM", "JOB", "ROOM_STATE", "HUMANS", "AGE", "CPU", "MEMORY"]
    assert line.split()[:9] == [name, "running", "none", CLIENT_ID, "farah", "ps-room", "-", "starting", "0"]  # JOB: triggered, not dispatched
    print("\n" + human.stdout)

    # Without the key, or with nothing listening: Docker's view, and stderr says why.
    refused = cli("ps", "-o", "json", scope=scope, url=served, key=None)
    assert "refused" in refused.stderr and "ORCH_API_KEY" in refused.stderr
    assert [(r["name"], r["room"]) for r in json.loads(refused.stdout)] == [(name, "ps-room")]
    assert "room_state" not in json.loads(refused.stdout)[0]
    down = cli("ps", scope=scope, url=f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 0 and "not reachable" in down.stderr
    assert down.stdout.splitlines()[0].split() == ["NAME", "STATUS", "HEALTH", "CLIENT_ID", "AGENT", "ROOM", "JOB", "AGE"]
    assert ADMIN not in human.stdout + human.stderr + refused.stderr


def test_close_room_by_name(served: str, scope: str, docker_client: docker.DockerClient) -> None:
    made = json.loads(cli("trigger", "farah", "--client", CLIENT_ID, "--room", "close-me", "-o", "json", scope=scope, url=served).stdout)
    out = cli("close", "close-me", scope=scope, url=served)
    assert out.returncode == 0, out.stderr
    assert f"closed room close-me of client {CLIENT_ID}" in out.stdout and made["container_name"] in out.stdout
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(made["container_name"])
    again = cli("close", "close-me", scope=scope, url=served)
    assert again.returncode == 1 and "no client has a room named 'close-me'" in again.stderr
    as_json = cli("close", "nope", "--client", CLIENT_ID, "-o", "json", scope=scope, url=served)
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["code"] == "not_found"
    assert cli("close", "close-me", scope=scope, url=served, key="ak_wrong").returncode == 1
