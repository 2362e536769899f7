"""Settings the Docker engine must judge fail at start naming the variable; a 4xx from the engine later is a
permanent 502 with the engine's own words, never a 500 and never a retryable 503. Real engine."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Callable

import docker
import pytest

from orchestrator.composition import Orchestrator
from orchestrator.core.errors import ConfigurationError, DependencyRejected
from orchestrator.core.models import Mode
from orchestrator.rules.isolation import AgentNetwork, parse_host_port
from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID, app_client
from devtools.docker_helpers import scoped

pytestmark = [pytest.mark.docker, pytest.mark.livekit]


async def test_an_agent_network_that_cannot_be_made_stops_start_up_naming_the_variable(
    make_settings: Callable[..., Settings], docker_client: docker.DockerClient,
) -> None:
    missing = f"orch-missing-{secrets.token_hex(4)}"  # a missing named network is made, unless no subnet is free
    with pytest.raises(ConfigurationError, match=f"ORCH_AGENT_NETWORK='{missing}'.*ORCH_AGENT_SUBNET_POOL"):
        async with Orchestrator.running(make_settings(agent_network=missing, agent_subnet_pool=[]), loops=False):
            raise AssertionError("must not start")
    assert not docker_client.api.networks(names=[missing])


async def test_an_agent_runtime_the_engine_lacks_stops_start_up_naming_the_variable(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(ConfigurationError, match="ORCH_AGENT_RUNTIME='no-such-runtime'.*it has: .*runc.*daemon.json"):
        async with Orchestrator.running(make_settings(agent_runtime="no-such-runtime"), loops=False):
            raise AssertionError("must not start: every agent would fail at its create")


async def test_an_otlp_endpoint_our_host_filter_drops_is_one_warning_at_start_naming_the_setting(
    make_settings: Callable[..., Settings], agent_network: AgentNetwork, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="orchestrator.composition")
    allowed = parse_host_port(make_settings().agent_host_ports[0]).first  # the harness lets the ephemeral range through
    said: dict[int, list[str]] = {}
    for port in (4318, allowed):
        caplog.clear()
        async with Orchestrator.running(make_settings(agent_otlp_endpoint=f"http://{agent_network.gateway}:{port}"), loops=False):
            said[port] = [r.getMessage() for r in caplog.records if "ORCH_AGENT_OTLP_ENDPOINT" in r.getMessage()]
    assert len(said[4318]) == 1 and "add 4318/tcp to ORCH_AGENT_HOST_PORTS" in said[4318][0], said
    assert said[allowed] == [], said


def test_reconcile_cli_refuses_a_missing_network_with_exit_2(make_settings: Callable[..., Settings], scope: str) -> None:
    missing = f"orch-missing-{secrets.token_hex(4)}"
    settings = make_settings()
    env = {**os.environ, "ORCH_SCOPE": scope, "ORCH_TENANTS_FILE": str(settings.tenants_file), "ORCH_AGENT_NETWORK": missing,
           "ORCH_AGENT_SUBNET_POOL": ""}
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "reconcile", "--once"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "ORCH_AGENT_NETWORK" in out.stderr and "Traceback" not in out.stderr


NO_SUCH_RUNTIME = "orch-no-such-runtime"
# A setting only the engine can refuse, and only at create: one agent's runtime (the deployment's is checked at start).
ONE_AGENT_RUNTIME = {"agent_security_exceptions": {f"{CLIENT_ID}/farah": {"runtime": NO_SUCH_RUNTIME}}}


async def test_an_engine_4xx_is_a_permanent_502_with_its_explanation(
    make_settings: Callable[..., Settings], docker_client: docker.DockerClient, scope: str
) -> None:
    settings = make_settings(**ONE_AGENT_RUNTIME)
    async with app_client(settings) as api:
        resp = await api.post("/api/v1/trigger-agent", json={
            "agent_slug": "farah", "mode": "voice", "room_name": "net-gone", "user_id": "u1", "client_id": CLIENT_ID,
        })
        metrics = (await api.get("/metrics")).text
    assert resp.status_code == 502, resp.text
    assert resp.json()["code"] == "dependency_rejected" and "runtime" in resp.json()["detail"]
    assert "retry-after" not in resp.headers
    assert 'orchestrator_dependency_errors_total{dependency="docker"} 1.0' in metrics
    assert scoped(docker_client, scope) == []  # no half-made container


async def test_the_trigger_path_sees_the_typed_error(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(**ONE_AGENT_RUNTIME)
    engine = Orchestrator(settings)
    try:
        with pytest.raises(DependencyRejected) as info:
            await engine.trigger.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="u",
                                         room_name="net-gone-2")
        assert info.value.dependency == "docker" and info.value.details["upstream_status"] in (400, 404)
    finally:
        await engine.stop()
