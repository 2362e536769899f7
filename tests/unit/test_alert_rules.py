"""deploy/alerts.yml parses and names only metrics the orchestrator really exports (a renamed metric fails here)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from orchestrator.observability.metrics import Metrics

RULES = Path(__file__).resolve().parents[2] / "deploy" / "alerts.yml"
SUFFIXES = ("_total", "_count", "_sum", "_bucket", "_created")


def exported_names() -> set[str]:
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        names.update(family.name + s for s in SUFFIXES)
    return names


def test_alert_rules_reference_real_metrics() -> None:
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {"AgentSpawnFailures", "AgentCountNearLimit", "RoomsStuckInGrace", "OrphanedAgentContainers"}
    known = exported_names()
    for rule in rules:
        assert rule["annotations"]["summary"]
        used = set(re.findall(r"\b(orchestrator_[a-z_]+)", rule["expr"]))
        assert used <= known, f"{rule['alert']} uses unknown metrics {used - known}"
