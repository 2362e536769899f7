"""One place that picks the container runtime from settings (ORCH_RUNTIME), importing only that engine's adapter."""

from __future__ import annotations

from ..settings import Settings
from . import ContainerRuntime


def runtime_from_settings(settings: Settings) -> ContainerRuntime:
    if settings.runtime == "swarm":
        from .swarm import SwarmRuntime

        return SwarmRuntime.from_settings(settings)
    from .docker import DockerRuntime

    return DockerRuntime.from_settings(settings)
