"""A short-lived probe container on an agents' network, hardened like an agent: can an agent there open a TCP
connection to each target? (The start-up check that each served client's LiveKit is in reach; blocking.)"""

from __future__ import annotations

import json
import secrets
from typing import Any

import docker
from docker.errors import APIError, ImageNotFound, NotFound

from orchestrator.rules.naming import Label
from orchestrator.rules.launch_spec import ContainerSpec
from orchestrator.runtime.docker.spec import create_kwargs, host_config_kwargs

PROBE_LABEL = "agent-orchestrator.probe"  # not `managed`: the reconciler never sees a probe as an agent
# Runs on the agent image's own Python: one TCP connect per target, one JSON line out.
SCRIPT = """
import json, socket, sys
out = {}
for host, port in json.loads(sys.argv[1]):
    try:
        socket.create_connection((host, port), timeout=%(timeout)s).close()
        out[f"{host}:{port}"] = "ok"
    except OSError as exc:
        out[f"{host}:{port}"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def probe_spec(*, network: str, image: str, user: str, scope: str) -> ContainerSpec:
    """The agent's hardened profile (no capabilities, read-only, non-root, no restart), small limits."""
    return ContainerSpec(
        name=f"orch-probe-{scope}-{secrets.token_hex(3)}", image=image,
        labels={Label.SCOPE: scope, PROBE_LABEL: "true"}, env={}, memory="64m", cpus=0.5, pids=64,
        network=network, restart_policy="no", restart_max=0, stop_timeout_s=1, user=user,
    )


def run(api: docker.APIClient, spec: ContainerSpec, *, targets: list[tuple[str, int]], timeout_s: float) -> dict[str, str]:
    """target "host:port" → "ok" or why not; a probe that cannot run at all answers every target with why."""
    script = SCRIPT % {"timeout": timeout_s}
    kwargs: dict[str, Any] = create_kwargs(spec)
    try:
        api.create_container(host_config=api.create_host_config(**host_config_kwargs(spec)),
                             entrypoint=["python3", "-c", script, json.dumps(targets)], **kwargs)
    except (ImageNotFound, NotFound) as exc:
        return {f"{h}:{p}": f"probe could not run ({exc.explanation})" for h, p in targets}
    try:
        api.start(spec.name)
        api.wait(spec.name, timeout=timeout_s * len(targets) + 20)
        lines = api.logs(spec.name, stdout=True, stderr=True).decode(errors="replace").strip().splitlines()
        try:
            return json.loads(lines[-1])
        except (IndexError, ValueError):
            why = (lines[-1] if lines else "no output")[:200]
            return {f"{h}:{p}": f"probe could not run ({why})" for h, p in targets}
    finally:
        try:
            api.remove_container(spec.name, force=True)
        except (NotFound, APIError):
            pass
