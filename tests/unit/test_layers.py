"""The import contracts in pyproject.toml hold (import-linter), and they mean what their names say.

A second run on a copy of the tree with forbidden imports planted must break exactly the contracts
that name them: an SDK imported outside its adapter anywhere in the package, an upward import.
Both runs start together (they are the slowest part of the unit tier).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")

# (module file, line planted at its top, the contract that must break)
PLANTED = [
    ("orchestrator/observability/telemetry.py", "import docker", "the docker SDK only in the Docker and Swarm runtimes"),
    ("orchestrator/services/reconciler.py", "import kubernetes_asyncio", "the Kubernetes client only in the Kubernetes runtime"),
    ("orchestrator/services/trigger.py", "from supabase import AsyncClient", "supabase and postgrest only in the Supabase tenant store"),
    ("orchestrator/services/sampler.py", "import aiohttp", "livekit-api and aiohttp only in the LiveKit client"),
    ("orchestrator/rules/planner.py", "from orchestrator.services import reconciler", "layers: doors (api | cli) > composition"),
    ("api/routes/health.py", "import docker.errors", "the docker SDK only in the Docker and Swarm runtimes"),
    ("api/routes/admin.py", "from orchestrator.cli import views", "layers: doors (api | cli) > composition"),
    ("orchestrator/livekit/client.py", "from orchestrator.services import trigger", "layers: doors (api | cli) > composition"),
    ("orchestrator/rules/view.py", "from orchestrator.livekit.client import LiveKitGateway", "pure rules import no SDK"),
    ("orchestrator/services/trigger.py", "from orchestrator.runtime.docker.runtime import DockerRuntime", "engines are known only under runtime/"),
    ("orchestrator/runtime/swarm/runtime.py", "from orchestrator.runtime.docker import runtime", "no engine inherits or imports another"),
    ("orchestrator/runtime/kubernetes/objects.py", "import kubernetes_asyncio", "pure rules import no SDK"),
]


def _lint(cwd: Path, *cache: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(LINT), "--config", str(cwd / "pyproject.toml"), *cache], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={"PYTHONPATH": str(cwd)})


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    planted = tmp_path_factory.mktemp("planted")
    for name in ("orchestrator", "api", "agent_image"):
        shutil.copytree(ROOT / name, planted / name, ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(ROOT / "pyproject.toml", planted / "pyproject.toml")
    for path, line, _ in PLANTED:
        target = planted / path
        text = target.read_text()
        head, _, rest = text.partition("from __future__ import annotations\n")
        target.write_text(f"{head}from __future__ import annotations\n{line}\n{rest}")
    clean, dirty = _lint(ROOT), _lint(planted, "--no-cache")  # the tree's own run may use its cache
    out = {"clean": clean.communicate(timeout=120)[0], "planted": dirty.communicate(timeout=120)[0]}
    out["clean_rc"], out["planted_rc"] = str(clean.returncode), str(dirty.returncode)
    yield out


def _verdict(report: str, contract: str) -> str:
    """KEPT or BROKEN: the first verdict after the contract's name in the summary (names may wrap)."""
    flat = " ".join(report.split())
    at = flat.index(contract, flat.index("Contracts"))
    return re.search(r"\b(KEPT|BROKEN)\b", flat[at:]).group(1)  # type: ignore[union-attr]


def test_import_contracts_hold(runs: dict[str, str]) -> None:
    assert runs["clean_rc"] == "0", runs["clean"]
    assert "0 broken" in runs["clean"]


@pytest.mark.parametrize(("path", "line", "contract"), PLANTED, ids=[f"{p}: {line}" for p, line, _ in PLANTED])
def test_a_planted_import_breaks_its_contract(runs: dict[str, str], path: str, line: str, contract: str) -> None:
    assert runs["planted_rc"] != "0"
    assert _verdict(runs["planted"], contract) == "BROKEN", runs["planted"]
    module = path.removesuffix(".py").replace("/", ".")
    assert module in runs["planted"], runs["planted"]  # the report names the offending module
