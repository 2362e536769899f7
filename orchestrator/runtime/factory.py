"""Build the configured ContainerRuntime from settings: the one place that knows the engines by name."""

from __future__ import annotations

from ..settings import Settings
from . import ContainerRuntime


def runtime_from_settings(settings: Settings) -> ContainerRuntime:
    """`ORCH_RUNTIME` picks the engine; each adapter is imported only when chosen (one SDK per adapter)."""
    if settings.runtime == "kubernetes":
        from .kubernetes import KubernetesRuntime

        return KubernetesRuntime.from_settings(settings)
    from .docker import DockerRuntime

    return DockerRuntime.from_settings(settings)
