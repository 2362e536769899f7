"""The CLI against a real served orchestrator: trigger, ps -o json, logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CLIENT_ID
from devtools.docker_helpers import TINY_IMAGE
from devtools.serve import serve

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
    out = cli("trigger", "clarence_coherence", "--client", CLIENT_ID, "--room", room, "-o", "json", scope=scope, url=served)
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    assert created["status"] == "created"

    ps = json.loads(cli("ps", "-o", "json", scope=scope, url=served).stdout)
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


@pytest.fixture
def served_still(scope: str, tenants_file: Path) -> Iterator[str]:
    # No reconcile loop: the tiny agents never join, and a slow machine must not see them replaced mid-test.
    with serve(scope=scope, tenants_file=tenants_file, image=TINY_IMAGE, ORCH_RECONCILE_ENABLED="false") as url:
        yield url


def test_ps_filters_quiet_wide_and_logs_follow(served_still: str, scope: str) -> None:
    import docker

    served = served_still

    made = {}
    for room in (f"f-a-{scope}", f"f-b-{scope}"):
        out = cli("trigger", "farah", "--client", CLIENT_ID, "--room", room, "-o", "json", scope=scope, url=served)
        assert out.returncode == 0, out.stderr
        made[room] = json.loads(out.stdout)["container_name"]
    room_a = f"f-a-{scope}"

    quiet = cli("ps", "-q", "--filter", f"label=agent-orchestrator.room={room_a}", scope=scope, url=served)
    assert quiet.returncode == 0 and quiet.stdout.split() == [made[room_a]]
    assert cli("ps", "-q", "--filter", f"room={room_a}", "--filter", "agent=nobody", scope=scope, url=served).stdout == ""
    assert sorted(cli("ps", "-q", "-f", "agent=farah", scope=scope, url=served).stdout.split()) == sorted(made.values())
    wide = cli("ps", "-o", "wide", scope=scope, url=served).stdout.splitlines()[0].split()
    assert wide[-3:] == ["ID", "EXIT_CODE", "CREATED_AT"] and "ROOM_STATE" in wide
    other = cli("ps", "--scope", "test-nobody-here", "-q", scope=scope, url=served)
    assert other.returncode == 0 and other.stdout == ""  # another scope: Docker's view of it (empty)
    bad = cli("ps", "--filter", "colour=red", scope=scope, url=served)
    assert bad.returncode == 2 and "unknown filter 'colour'" in bad.stderr

    # logs -f prints as lines come and ends when the container stops.
    env = {**os.environ, "ORCH_SCOPE": scope, "ORCH_URL": served}
    follow = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "logs", "-f", room_a], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert follow.stdout is not None
        first = follow.stdout.readline()
        assert "tiny agent up" in first, (first, follow.stderr.read() if follow.poll() is not None and follow.stderr else "")
        docker.from_env().containers.get(made[room_a]).stop(timeout=2)
        assert follow.wait(timeout=30) == 0, follow.stderr.read() if follow.stderr else ""
    finally:
        if follow.poll() is None:
            follow.kill()
