"""Cron mode against the real engine, plus limits (429) and the admin API on the real app."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import docker
import httpx
import pytest

from orchestrator.core.models import Agent, ContainerKey, Mode
from orchestrator.rules.naming import Label, container_labels
from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID, app_client
from devtools.docker_helpers import TINY_IMAGE

pytestmark = [pytest.mark.docker]
ROOT = Path(__file__).resolve().parents[2]


def labelled(key: ContainerKey, scope: str) -> dict[str, str]:
    agent = Agent(id="a", slug=key.agent_slug, name=key.agent_slug)
    return container_labels(key, agent=agent, mode=Mode.voice, scope=scope, spec="x", created_at=datetime.now(timezone.utc))


def run_cli(scope: str, tenants_file: Path, *args: str, **env: str) -> tuple[int, dict]:
    proc = subprocess.run(
        [str(ROOT / "scripts" / "reconcile"), *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, "ORCH_SCOPE": scope, "ORCH_TENANTS_FILE": str(tenants_file), "ORCH_AGENT_STOP_TIMEOUT_S": "1", **env},
    )
    assert proc.stdout.strip().startswith("{"), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_cron_mode_dry_run_then_real(scope: str, tenants_file: Path, docker_client: docker.DockerClient) -> None:
    # Two containers of an agent the tenant no longer has, and one with incomplete labels.
    gone = ContainerKey(client_id=CLIENT_ID, agent_slug="retired-agent", room="r1")
    for i in range(2):
        docker_client.containers.run(TINY_IMAGE, name=f"{scope}-retired-{i}", labels=labelled(gone, scope), detach=True)
    bare = {Label.MANAGED: "true", Label.SCOPE: scope}
    docker_client.containers.run(TINY_IMAGE, name=f"{scope}-bare", labels=bare, detach=True)

    code, plan = run_cli(scope, tenants_file, "--dry-run")
    assert code == 0 and plan["dry_run"] is True
    assert sorted(a["name"] for a in plan["actions"]) == sorted([f"{scope}-bare", f"{scope}-retired-0", f"{scope}-retired-1"])
    assert len(docker_client.containers.list(all=True, filters={"label": f"{Label.SCOPE}={scope}"})) == 3  # untouched

    code, summary = run_cli(scope, tenants_file)
    print("\n" + json.dumps(summary, indent=2))
    assert code == 0 and summary["failed"] == 0 and len(summary["actions"]) == 3
    assert docker_client.containers.list(all=True, filters={"label": f"{Label.SCOPE}={scope}"}) == []

    code, summary = run_cli(scope, tenants_file)  # idempotent: a second pass has nothing to do
    assert code == 0 and summary["actions"] == []


def test_cron_mode_exit_2_without_docker(scope: str, tenants_file: Path) -> None:
    code, summary = run_cli(scope, tenants_file, ORCH_DOCKER_HOST="unix:///nonexistent/docker.sock", ORCH_DOCKER_RETRIES="1")
    assert code == 2 and summary["observe_error"]


async def test_limits_answer_429_with_retry_after(make_settings: Callable[..., Settings]) -> None:
    async with app_client(make_settings(max_agents_per_room=2, max_agents_per_client=3, reconcile_enabled=False, limit_retry_after_s=7)) as c:
        async def trig(slug: str, room: str) -> httpx.Response:
            return await c.post("/api/v1/trigger-agent", json={"agent_slug": slug, "room_name": room, "user_id": "u", "client_id": CLIENT_ID})

        assert (await trig("farah", "lim-a")).status_code == 201
        assert (await trig("clarence-coherence", "lim-a")).status_code == 201  # distinct slugs share a room
        assert (await trig("farah", "lim-a")).json()["status"] == "reused"  # one per slug: reuse is never limited
        r = await trig("litebridge", "lim-a")
        assert r.status_code == 429 and r.headers["Retry-After"] == "7" and "max_agents_per_room" in r.json()["detail"]
        assert (await trig("litebridge", "lim-b")).status_code == 201
        r = await trig("farah", "lim-c")
        assert r.status_code == 429 and "max_agents_per_client" in r.json()["detail"]


async def test_admin_api(make_settings: Callable[..., Settings], docker_client: docker.DockerClient, scope: str) -> None:
    from api.app import create_app

    # This test reaches into the app (the reconciler's heartbeat), so it builds the app itself.
    app = create_app(make_settings(reconcile_enabled=False, agent_startup_timeout_s=0))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        r = await c.post("/api/v1/trigger-agent", json={"agent_slug": "farah", "room_name": "adm-1", "user_id": "u", "client_id": CLIENT_ID})
        assert r.status_code == 201
        name = r.json()["container_name"]
        containers = (await c.get("/api/v1/admin/containers")).json()["containers"]
        assert [x["name"] for x in containers] == [name]
        plan = (await c.post("/api/v1/admin/reconcile", params={"dry_run": True})).json()
        assert plan["dry_run"] and plan["actions"] == []
        rooms = (await c.get("/api/v1/admin/rooms")).json()["rooms"]
        assert [(x["room"], x["state"]) for x in rooms] == [("adm-1", "starting")]
        stats = (await c.get("/api/v1/admin/stats")).json()
        assert stats["containers"]["running"] == 1 and stats["rooms"]["starting"] == 1
        assert (await c.post(f"/api/v1/admin/rooms/{CLIENT_ID}/nope/close")).status_code == 404
        closed = (await c.post(f"/api/v1/admin/rooms/{CLIENT_ID}/adm-1/close")).json()
        assert sorted(a["kind"] for a in closed["pass"]["actions"]) == ["DeleteRoom", "RemoveContainer"]
        assert all(a["ok"] for a in closed["pass"]["actions"])
        assert docker_client.containers.list(all=True, filters={"label": f"{Label.SCOPE}={scope}"}) == []
        health = await c.get("/healthz")
        assert health.status_code == 200 and health.json()["reconciler"] == "not running"
        # A loop whose heartbeat is old is a stalled loop: /healthz must say 503.
        rec = app.state.reconciler
        rec.heartbeat = datetime(2000, 1, 1, tzinfo=timezone.utc)
        stalled = await c.get("/healthz")
        assert stalled.status_code == 503 and stalled.json()["reconciler"] == "stalled"
