"""deploy/kubernetes as an operator applies it: a copy with the generator's input files written, rendered by kustomize."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
OPERATOR_FILES = ("orchestrator.env", "tenants.yaml", "api-keys.yaml")  # what the secretGenerators read
ORCH_NS, AGENTS_NS = "agent-orchestrator", "agents-default"


def operator_copy(where: Path, *, tenants: Path | None = None, admin_key: str | None = None) -> Path:
    """deploy/kubernetes copied to `where` with the operator's three files (the examples, a real admin key)."""
    shutil.copytree(DEPLOY, where, ignore=shutil.ignore_patterns(*OPERATOR_FILES))
    (where / "orchestrator.env").write_text(
        f"ORCH_ADMIN_API_KEY={admin_key or secrets.token_hex(32)}\nORCH_OWNERSHIP_KEY={secrets.token_hex(32)}\n"
    )
    shutil.copy(tenants or DEPLOY / "tenants.yaml.example", where / "tenants.yaml")
    shutil.copy(DEPLOY / "api-keys.yaml.example", where / "api-keys.yaml")
    return where


def kustomize(directory: Path) -> subprocess.CompletedProcess[str]:
    """`kubectl kustomize` (no cluster needed: it only renders)."""
    return subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False)


def render(directory: Path) -> list[dict[str, Any]]:
    out = kustomize(directory)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def move(docs: list[dict[str, Any]], namespaces: tuple[str, str]) -> list[dict[str, Any]]:
    """The rendered objects moved to a test's two namespaces (the orchestrator's, the agents'); cluster-scoped ones
    get a name of their own per run, so runs never share an object."""
    moved = dict(zip((ORCH_NS, AGENTS_NS), namespaces, strict=True))
    suffix = namespaces[0].rsplit("-", 1)[-1]
    for doc in docs:
        meta = doc["metadata"]
        if doc["kind"] == "Namespace":
            meta["name"] = moved[meta["name"]]
        elif "namespace" in meta:
            meta["namespace"] = moved[meta["namespace"]]
        else:  # cluster-scoped (the RuntimeClass reader)
            meta["name"] = f"{meta['name']}-{suffix}"
            if "roleRef" in doc and doc["roleRef"]["kind"] == "ClusterRole":
                doc["roleRef"]["name"] = f"{doc['roleRef']['name']}-{suffix}"
        for subject in doc.get("subjects", []):
            subject["namespace"] = moved[subject["namespace"]]
        if doc["kind"] == "ConfigMap":
            doc["data"]["ORCH_KUBE_NAMESPACE"] = namespaces[1]
    return docs


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in found])
    return found[0]
