"""House rules a reviewer would otherwise have to remember: one clock, no references to our own
planning documents in what users and operators read."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = [p for d in ("orchestrator", "api", "agent_image") for p in (ROOT / d).rglob("*") if p.is_file()
              and p.suffix in (".py", ".yaml", ".yml", ".html", ".js", ".css") and "vendor" not in p.parts]
PRODUCTION += [ROOT / "deploy" / n for n in ("alerts.yml",)] + [ROOT / "docker-compose.yml", ROOT / "Dockerfile",
                                                                 ROOT / "Dockerfile.agent"]
PLANNING = re.compile(r"\b(seed|issue)[ -]?\d+\b|\bseeds?/", re.IGNORECASE)


@pytest.mark.parametrize("path", PRODUCTION, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_planning_references_in_production_files(path: Path) -> None:
    hits = [f"{n}: {line.strip()}" for n, line in enumerate(path.read_text().splitlines(), 1) if PLANNING.search(line)]
    assert not hits, f"{path.relative_to(ROOT)} refers to planning notes users never see:\n" + "\n".join(hits)


def _wall_clock_calls(source: str) -> list[int]:
    """Lines that read the wall clock directly: datetime.now/utcnow/today (however datetime was imported)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("now", "utcnow", "today"):
            target = node.func.value
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
            if name in ("datetime", "date"):
                lines.append(node.lineno)
    return lines


ENGINE_SOURCES = [p for d in ("orchestrator", "api") for p in (ROOT / d).rglob("*.py")]


@pytest.mark.parametrize("path", ENGINE_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_engine_reads_time_from_the_one_clock(path: Path) -> None:
    if path == ROOT / "orchestrator" / "core" / "clock.py":
        assert _wall_clock_calls(path.read_text())  # the one place that may
        return
    assert _wall_clock_calls(path.read_text()) == [], f"{path.relative_to(ROOT)}: use orchestrator.core.clock (or the engine's clock)"


def test_the_clock_rule_sees_each_spelling() -> None:
    assert _wall_clock_calls("import datetime as dt\ndatetime.now()\ndt.datetime.now(tz)\ndate.today()\n") == [2, 3, 4]
    assert _wall_clock_calls("clock()\nutcnow()\nself.now()\n") == []


# ---- the size rule and where engines may be named -------------------------------------------------------------
SIZE_RULE = 350  # lines: a module longer than this does more than one job (split it by job, not by line count)
PRODUCT_SOURCES = [p for d in ("orchestrator", "api", "devtools") for p in (ROOT / d).rglob("*.py")]


@pytest.mark.parametrize("path", PRODUCT_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_passes_the_size_rule(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= SIZE_RULE, f"{path.relative_to(ROOT)} has {lines} lines (rule: {SIZE_RULE}); split it by job"


# An engine's own vocabulary: its SDK types and API objects. Settings and docs may say "docker" as a word; code
# outside runtime/ must not reach for an engine's objects.
ENGINE_WORDS = re.compile(r"\b(DockerRuntime|SwarmRuntime|KubernetesRuntime|DockerAPI|docker\.types|DOCKER-USER|"
                          r"com\.docker\.network|V1Pod|CoreV1Api|create_service|create_container)\b")
OUTSIDE_RUNTIME = [p for p in ENGINE_SOURCES if "runtime" not in p.relative_to(ROOT).parts]


@pytest.mark.parametrize("path", OUTSIDE_RUNTIME, ids=lambda p: str(p.relative_to(ROOT)))
def test_engines_are_named_only_under_runtime(path: Path) -> None:
    hits = [f"{n}: {line.strip()}" for n, line in enumerate(path.read_text().splitlines(), 1) if ENGINE_WORDS.search(line)]
    assert not hits, f"{path.relative_to(ROOT)} knows an engine (only orchestrator/runtime/ may):\n" + "\n".join(hits)


def test_the_house_rules_see_what_they_forbid() -> None:
    assert ENGINE_WORDS.search("net = docker.types.IPAMConfig()") and ENGINE_WORDS.search("-I DOCKER-USER -i br0")
    assert not ENGINE_WORDS.search("the docker engine answers")
