"""The CLI against a real served orchestrator: trigger, ps --json, logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CLIENT_ID
from tests.support.docker_helpers import TINY_IMAGE
from tests.support.serve import serve

pytestmark = [pytest.mark.docker, pytest.mark.livekit]


@pytest.fixture
def served(scope: str, tenants_file: Path) -> Iterator[str]:
    with serve(scope=scope, tenants_file=tenants_file, image=TINY_IMAGE) as url:
        yield url


def cli(*args: str, scope: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORCH_SCOPE": scope, "ORCH_URL": url}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], env=env, capture_output=True, text=True, timeout=60)


def test_trigger_ps_and_logs(served: str, scope: str) -> None:
    room = f"cli-room-{scope}"  # the engine is shared: another run's "cli-room" would be a 409 here
    out = cli("trigger", "clarence_coherence", "--client", CLIENT_ID, "--room", room, "--json", scope=scope, url=served)
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    assert created["status"] == "created"

    ps = json.loads(cli("ps", "--json", scope=scope, url=served).stdout)
    assert [(r["name"], r["agent"], r["room"], r["status"]) for r in ps] == [
        (created["container_name"], "clarence-coherence", room, "running")
    ]
    table = cli("ps", scope=scope, url=served).stdout
    assert "CLIENT_ID" in table and created["container_name"] in table

    logs = cli("logs", room, scope=scope, url=served)
    assert logs.returncode == 0 and "tiny agent up" in logs.stdout

    missing = cli("trigger", "nobody", "--client", CLIENT_ID, scope=scope, url=served)
    assert missing.returncode == 1 and "not found" in missing.stderr
    assert cli("logs", "no-such-room", scope=scope, url=served).returncode == 1
