"""Every reconcile action can be logged with its context at INFO (a `name` key in `extra` makes logging raise)."""

from __future__ import annotations

import logging

import pytest

from orchestrator.core.models import ContainerKey
from orchestrator.rules.planner import DeleteRoom, GiveUp, RemoveContainer, RestartAgent, SetRoomMetadata
from orchestrator.observability.pass_report import log_fields

KEY = ContainerKey(client_id="c1", agent_slug="farah", room="r1")


@pytest.mark.parametrize("action", [
    RemoveContainer(reason="exited (code 1)", name="agent_x", client_id="c1", room="r1"),
    RestartAgent(reason="exited", name="agent_x", key=KEY),
    GiveUp(reason="gave up", name="agent_x", key=KEY, attempts=5),
    DeleteRoom(reason="grace period expired", client_id="c1", room="r1"),
    SetRoomMetadata(reason="grace", client_id="c1", room="r1", metadata="{}"),
])
def test_actions_log_at_info_with_context(action: object) -> None:
    fields = log_fields(action)  # type: ignore[arg-type]
    record = logging.getLogger("t").makeRecord("t", logging.INFO, __file__, 1, "msg", (), None, extra=fields)
    assert record.kind == action.kind  # type: ignore[attr-defined]
    if hasattr(action, "name"):
        assert record.container == action.name  # type: ignore[attr-defined]
