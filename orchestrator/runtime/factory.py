"""One place that picks the container runtime from settings (ORCH_RUNTIME), importing only that engine's adapter."""

from __future__ import annotations

from orchestrator.settings import Settings
from orchestrator.runtime import ContainerRuntime


def runtime_from_settings(settings: Settings) -> ContainerRuntime:
    if settings.runtime == "swarm":
        # As on Docker, the pooled runtime is a superset: it reads claimed members (and their aliases) as agents.
        from orchestrator.runtime.swarm.pool import PooledSwarmRuntime

        return PooledSwarmRuntime.from_settings(settings)
    if settings.runtime == "kubernetes":
        # Pooled for the same reason as on Docker (below): every process must read claimed members as agents.
        from orchestrator.runtime.kubernetes.pool import PooledKubernetesRuntime

        return PooledKubernetesRuntime.from_settings(settings)
    # The pooled runtime is a superset: it also reads claimed warm members as their keys' containers, which
    # every process must do (a CLI, a second orchestrator) whether or not it keeps a pool itself.
    from orchestrator.runtime.docker.pool import PooledDockerRuntime

    return PooledDockerRuntime.from_settings(settings)
