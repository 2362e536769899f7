"""`orchestrator ps` rows and table (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from orchestrator.core.models import ContainerInfo, ContainerStatus
from orchestrator.rules.agent_rows import container_row
from orchestrator.rules.naming import Label
from orchestrator.cli.views import API_COLUMNS, age, join_rooms, rooms_named, table


@pytest.mark.parametrize(("seconds", "text"), [(None, "-"), (0, "0s"), (59, "59s"), (60, "1m"), (3599, "59m"), (7200, "2h"), (90000, "1d")])
def test_age(seconds: int | None, text: str) -> None:
    assert age(seconds) == text


C = {"name": "agent_a", "status": "running", "health": "healthy", "client_id": "c1", "agent": "farah", "room": "r1",
     "job": "AJ_abc", "age_s": 75, "cpu_ratio": 0.0123, "memory_bytes": 52428800}


def test_join_rooms_and_table() -> None:
    rooms = [{"client_id": "c1", "room": "r1", "state": "grace_period", "humans": [], "agents": ["agent-farah"], "grace_remaining_s": 41.7},
             {"client_id": "c2", "room": "r1", "state": "active", "humans": ["u"], "agents": []}]
    orphan = {**C, "name": "agent_b", "client_id": "c3", "job": None, "cpu_ratio": None, "memory_bytes": None, "age_s": None}
    rows = join_rooms([orphan, C], rooms)
    assert [(r["name"], r["room_state"], r["humans"]) for r in rows] == [("agent_a", "grace_period", 0), ("agent_b", None, None)]
    lines = table(rows, API_COLUMNS).splitlines()
    assert lines[1].split() == ["agent_a", "running", "healthy", "c1", "farah", "r1", "AJ_abc", "grace(41s)", "0", "1m", "1.2%", "50.0MiB"]
    assert lines[2].split() == ["agent_b", "running", "healthy", "c3", "farah", "r1", "-", "-", "-", "-", "-", "-"]


def test_rooms_named() -> None:
    rooms = [{"client_id": "c1", "room": "r1"}, {"client_id": "c2", "room": "r2"}]
    containers = [{"client_id": "c3", "room": "r1"}, {"client_id": "", "room": "r1"}]
    assert rooms_named(rooms, containers, "r1") == ["c1", "c3"]
    assert rooms_named(rooms, containers, "zz") == []


def test_node_column_only_when_a_row_has_a_node() -> None:
    from orchestrator.cli.views import DOCKER_COLUMNS, with_node

    assert with_node(DOCKER_COLUMNS, [C]) == DOCKER_COLUMNS
    cols = with_node(DOCKER_COLUMNS, [{**C, "node": "sw-n2"}])
    assert cols[:3] == ["name", "status", "node"]
    assert table([{**C, "node": "sw-n2"}], cols).splitlines()[1].split()[:3] == ["agent_a", "running", "sw-n2"]


NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(("engine_created", "label", "age_s"), [
    (NOW - timedelta(minutes=10), (NOW - timedelta(seconds=14)).isoformat(), 14),  # a member idle 10 min, claimed 14 s ago
    (NOW - timedelta(seconds=75), None, 75),  # no label (made by hand or an old version): the engine's time
    (NOW - timedelta(seconds=75), "not a time", 75),  # a label that does not parse: the engine's time
    (None, None, None),  # nothing known: no age, not a guess
])
def test_container_row_age_counts_from_the_keys_created_at(engine_created: datetime | None, label: str | None, age_s: int | None) -> None:
    labels = {Label.CLIENT_ID: "c1", Label.AGENT_SLUG: "farah", Label.ROOM: "r1", **({Label.CREATED_AT: label} if label else {})}
    c = ContainerInfo(id="abc", name="agent_c1_farah_r1", status=ContainerStatus.running, labels=labels, created_at=engine_created)
    row = container_row(c, now=NOW)
    assert row["age_s"] == age_s
    assert row["created_at"] == label
