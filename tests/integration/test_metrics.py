"""/metrics moves when triggers happen and reflects the containers Docker reports."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import CLIENT_ID

pytestmark = [pytest.mark.docker, pytest.mark.livekit]


async def sample(api: httpx.AsyncClient, name: str, **labels: str) -> float:
    text = (await api.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


async def test_trigger_outcomes_and_container_gauge_move(api: httpx.AsyncClient) -> None:
    body = {"agent_slug": "farah", "room_name": "metrics-room", "user_id": "u", "client_id": CLIENT_ID}
    assert await sample(api, "orchestrator_containers", state="running") == 0
    await api.post("/api/v1/trigger-agent", json=body)
    await api.post("/api/v1/trigger-agent", json=body)
    await api.post("/api/v1/trigger-agent", json={**body, "agent_slug": "nobody"})
    assert await sample(api, "orchestrator_triggers_total", outcome="created") == 1
    assert await sample(api, "orchestrator_triggers_total", outcome="reused") == 1
    assert await sample(api, "orchestrator_triggers_total", outcome="not_found") == 1
    assert await sample(api, "orchestrator_trigger_seconds_count", outcome="created") == 1
    assert await sample(api, "orchestrator_containers", state="running") == 1
