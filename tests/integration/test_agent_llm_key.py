"""The deployment's LLM key reaches agent containers as env, and nowhere else (labels, answer, logs)."""

from __future__ import annotations

from collections.abc import Callable

import docker
import pytest

from orchestrator.livekit.client import LiveKitGateway
from orchestrator.core.models import Mode
from orchestrator.runtime.docker.runtime import DockerRuntime
from orchestrator.settings import Settings
from orchestrator.tenants.file_store import FileTenantStore
from orchestrator.services.trigger import TriggerService
from tests.conftest import CLIENT_ID

pytestmark = [pytest.mark.docker, pytest.mark.livekit]

KEY = "sk-test-key-for-labels-check"


@pytest.mark.parametrize("key", [KEY, None])
async def test_llm_key_is_container_env_only(
    key: str | None, make_settings: Callable[..., Settings], docker_client: docker.DockerClient, scope: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(**({"agent_llm_api_key": key} if key else {}))
    runtime, livekit = DockerRuntime(), LiveKitGateway()
    service = TriggerService(settings=settings, tenants=FileTenantStore(settings.tenants_file), livekit=livekit, runtime=runtime)
    try:
        result = await service.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="u1", room_name=f"{scope}-k")
    finally:
        await livekit.aclose()
        runtime.close()
    attrs = docker_client.containers.get(result.container.name).attrs
    env = dict(e.split("=", 1) for e in attrs["Config"]["Env"])
    assert env.get("OPENAI_API_KEY") == key
    assert KEY not in repr(attrs["Config"]["Labels"])
    assert KEY not in repr(settings)
    assert KEY not in caplog.text
