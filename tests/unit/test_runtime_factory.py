"""ORCH_RUNTIME picks the adapter; the Kubernetes namespace follows the scope unless set."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from orchestrator.runtime.docker.runtime import DockerRuntime
from orchestrator.runtime.factory import runtime_from_settings
from orchestrator.runtime.kubernetes.runtime import KubernetesRuntime, namespace_for
from orchestrator.settings import Settings


def test_docker_is_the_default_and_kubernetes_is_chosen_by_name() -> None:
    assert isinstance(runtime_from_settings(Settings()), DockerRuntime)
    kube = runtime_from_settings(Settings(runtime="kubernetes", scope="prod", kubeconfig=Path("~/kc")))
    assert isinstance(kube, KubernetesRuntime) and kube.engine == "kubernetes" and kube.namespace == "agents-prod"
    with pytest.raises(ValidationError):
        Settings(runtime="podman")  # type: ignore[arg-type]


@pytest.mark.parametrize(("template", "scope", "namespace"), [
    ("agents-{scope}", "prod", "agents-prod"),
    ("agent-orchestrator", "prod", "agent-orchestrator"),
    ("agents-{scope}", "a" * 63, "agents-" + "a" * 56),
])
def test_namespace_per_scope(template: str, scope: str, namespace: str) -> None:
    assert namespace_for(Settings(scope=scope, kube_namespace=template)) == namespace
