"""Docker helpers for tests: everything a test creates carries its scope label and is removed after."""

from __future__ import annotations

import docker

from orchestrator.rules.naming import Label

TINY_IMAGE = "agent-orchestrator/tiny:latest"


def scoped(client: docker.DockerClient, scope: str) -> list[docker.models.containers.Container]:
    return client.containers.list(all=True, filters={"label": f"{Label.SCOPE}={scope}"})


def dump_logs(client: docker.DockerClient, scope: str) -> str:
    out = []
    for c in scoped(client, scope):
        try:
            logs = c.logs(tail=50).decode(errors="replace")
        except docker.errors.NotFound:
            continue
        out.append(f"--- {c.name} ({c.status}) ---\n{logs}")
    return "\n".join(out)


def remove_scope(client: docker.DockerClient, scope: str) -> None:
    for c in scoped(client, scope):
        try:
            c.remove(force=True)
        except docker.errors.NotFound:
            pass
