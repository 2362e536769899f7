"""What a reconcile pass adds to the metrics and the feed (pure objects, a fresh registry per test)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from orchestrator.observability.events import EventFeed
from orchestrator.observability.metrics import Metrics
from orchestrator.core.models import ContainerKey
from orchestrator.rules.planner import DeleteRoom, GiveUp, Removal, RemoveContainer, RestartAgent, SetRoomMetadata
from orchestrator.observability.pass_report import ActionResult, PassReport
from orchestrator.observability.telemetry import Telemetry, removal_category

KEY = ContainerKey(client_id="c1", agent_slug="farah", room="r1")


@pytest.mark.parametrize("category", list(Removal))
def test_removal_category_is_the_planners_not_read_from_the_reason(category: Removal) -> None:
    action = RemoveContainer(reason="exited (code 1)", category=category, name="a")
    assert removal_category(action) == category.value


def value(m: Metrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


def test_pass_report_moves_counters_and_feeds_events() -> None:
    m, feed = Metrics(), EventFeed()
    report = PassReport(started_at=datetime.now(timezone.utc), dry_run=False, duration_s=0.25,
                        warnings=["LiveKit for client c1: unreachable"], unobservable=["livekit"])
    report.results = [
        ActionResult(RemoveContainer(reason="unknown client 'x'", category=Removal.orphan, name="a", client_id="x", room="r"), ok=True),
        ActionResult(RestartAgent(reason="exited (code 1)", name="b", key=KEY), ok=True),
        ActionResult(RestartAgent(reason="exited (code 1)", name="c", key=KEY), ok=False, error="Docker engine unreachable",
                     dependency="docker"),
        ActionResult(GiveUp(reason="gave up", name="d", key=KEY, attempts=5), ok=True),
        ActionResult(DeleteRoom(reason="grace period expired", client_id="c1", room="r1"), ok=False, error="boom"),
        ActionResult(SetRoomMetadata(reason="grace", client_id="c1", room="r1", metadata="{}"), ok=True),
    ]
    Telemetry(metrics=m, feed=feed).reconcile_pass(report)
    assert value(m, "orchestrator_reconcile_seconds_count") == 1
    assert value(m, "orchestrator_reconcile_actions_total", action="RemoveContainer", result="ok") == 1
    assert value(m, "orchestrator_reconcile_actions_total", action="RestartAgent", result="failed") == 1
    assert value(m, "orchestrator_reconcile_removals_total", reason="orphan") == 1
    assert value(m, "orchestrator_agent_restarts_total") == 1  # only the restart that worked
    assert value(m, "orchestrator_agent_restart_give_ups_total") == 1
    assert value(m, "orchestrator_dependency_errors_total", dependency="docker") == 1
    assert value(m, "orchestrator_dependency_errors_total", dependency="livekit") == 2  # the warning + DeleteRoom
    events = feed.recent()
    assert len(events) == 5  # grace-metadata book-keeping is not announced
    assert events[1].to_dict()["client_id"] == "c1" and events[1].to_dict()["container"] == "b"
    assert events[2].to_dict()["ok"] is False and events[2].to_dict()["error"] == "Docker engine unreachable"


def test_dry_run_and_unobservable_docker() -> None:
    m, feed = Metrics(), EventFeed()
    t = Telemetry(metrics=m, feed=feed)
    dry = PassReport(started_at=datetime.now(timezone.utc), dry_run=True, duration_s=0.1)
    dry.results = [ActionResult(RemoveContainer(reason="unhealthy", name="a"), ok=True)]
    t.reconcile_pass(dry)
    assert value(m, "orchestrator_reconcile_seconds_count") == 0
    assert value(m, "orchestrator_reconcile_actions_total", action="RemoveContainer", result="ok") == 0
    t.reconcile_pass(PassReport(started_at=datetime.now(timezone.utc), dry_run=False, observe_error="socket gone"))
    assert value(m, "orchestrator_dependency_errors_total", dependency="docker") == 1
    assert feed.recent()[-1].to_dict()["ok"] is False
