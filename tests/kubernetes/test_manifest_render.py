"""deploy/kubernetes as kustomize renders it: secrets only from the operator's files, the recommended labels on
every object, a pinned image, the tenants and keys files mounted, liveness apart from readiness, a PDB that
selects the orchestrator's Pods only. Rendering needs kubectl, not a cluster (applying is test_deploy_manifests)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from tests.kubernetes.manifests import DEPLOY, OPERATOR_FILES, kustomize, one, operator_copy, render

pytestmark = pytest.mark.kubernetes
VERSION = tomllib.loads((DEPLOY.parents[1] / "pyproject.toml").read_text())["project"]["version"]
RECOMMENDED = {
    "app.kubernetes.io/name": "agent-orchestrator", "app.kubernetes.io/part-of": "agent-orchestrator",
    "app.kubernetes.io/managed-by": "kustomize", "app.kubernetes.io/version": VERSION,
    "app.kubernetes.io/instance": "agent-orchestrator-default",
}


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:  # type: ignore[type-arg]
    return render(operator_copy(tmp_path_factory.mktemp("deploy") / "kubernetes"))


def test_no_secret_is_committed_and_rendering_without_the_operators_files_fails_naming_one(tmp_path: Path) -> None:
    assert not (DEPLOY / "secret.yaml").exists()
    for path in DEPLOY.iterdir():
        assert "kind: Secret" not in path.read_text(), path
    assert set(OPERATOR_FILES) <= set((DEPLOY / ".gitignore").read_text().split())
    bare = operator_copy(tmp_path / "k")
    for name in OPERATOR_FILES:
        (bare / name).unlink()
    out = kustomize(bare)
    assert out.returncode != 0 and "orchestrator.env" in out.stderr, out.stderr


def test_secrets_come_from_the_generators_and_every_reference_follows_their_hashed_names(docs: list[dict]) -> None:  # type: ignore[type-arg]
    names = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    env = next(n for n in names if n.startswith("agent-orchestrator-") and not n.startswith("agent-orchestrator-files"))
    files = next(n for n in names if n.startswith("agent-orchestrator-files-"))
    assert set(yaml.safe_load(yaml.safe_dump(one(docs, "Secret", files)["data"]))) == {"tenants.yaml", "api-keys.yaml"}
    for kind, name in (("Deployment", "agent-orchestrator"), ("CronJob", "agent-orchestrator-reconcile")):
        pod = one(docs, kind, name)["spec"]
        pod = pod["jobTemplate"]["spec"]["template"]["spec"] if kind == "CronJob" else pod["template"]["spec"]
        container = pod["containers"][0]
        assert {"secretRef": {"name": env}} in container["envFrom"], kind
        volume = next(v for v in pod["volumes"] if v["name"] == "files")
        assert volume["secret"] == {"secretName": files, "defaultMode": 0o440}, kind
        assert {"name": "files", "mountPath": "/etc/orchestrator", "readOnly": True} in container["volumeMounts"], kind
        assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"], kind
    config = one(docs, "ConfigMap")["data"]
    assert config["ORCH_TENANTS_FILE"] == "/etc/orchestrator/tenants.yaml" and config["ORCH_API_KEYS_FILE"] == "/etc/orchestrator/api-keys.yaml"
    assert config["ORCH_KUBE_NAMESPACE"] == "agents-default"


def test_every_object_carries_the_recommended_labels_and_pods_too(docs: list[dict]) -> None:  # type: ignore[type-arg]
    for doc in docs:
        labels = doc["metadata"].get("labels", {})
        assert {k: labels.get(k) for k in RECOMMENDED} == RECOMMENDED, (doc["kind"], doc["metadata"]["name"])
    deployment, cron = one(docs, "Deployment"), one(docs, "CronJob")
    assert deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "orchestrator"
    assert cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "reconcile-cron"


def test_the_orchestrator_image_is_pinned_to_the_project_version(docs: list[dict]) -> None:  # type: ignore[type-arg]
    images = [c["image"] for d in docs if d["kind"] in ("Deployment", "CronJob")
              for c in (d["spec"].get("template") or d["spec"]["jobTemplate"]["spec"]["template"])["spec"]["containers"]]
    assert images == [f"agent-orchestrator/orchestrator:{VERSION}"] * 2
    assert 'PINNED="${IMAGE%:*}:$VERSION"' in (DEPLOY.parents[1] / "scripts" / "build-orchestrator-image").read_text()


def test_liveness_never_asks_a_dependency_and_readiness_does(docs: list[dict]) -> None:  # type: ignore[type-arg]
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == container["startupProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["readinessProbe"]["timeoutSeconds"] > 2  # /readyz bounds each check at 2 s
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def test_the_pdb_and_the_service_select_the_orchestrators_pods_and_never_the_cron_ones(docs: list[dict]) -> None:  # type: ignore[type-arg]
    pods = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    cron = one(docs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    pdb, service = one(docs, "PodDisruptionBudget")["spec"], one(docs, "Service")["spec"]
    for selector in (pdb["selector"]["matchLabels"], service["selector"]):
        assert selector.items() <= pods.items() and not selector.items() <= cron.items(), selector
    assert pdb["maxUnavailable"] == 1  # one replica shipped: a drain must never block on it
