"""Which `ORCH_*` variables mean something, and what a typo most likely meant (pure).

pydantic-settings ignores environment variables it has no field for, so `ORCH_GRACE_PERIOD=30` (for
ORCH_GRACE_PERIOD_S) used to leave the default in force without a word. This names every such variable
at start, with the closest real one.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

PREFIX = "ORCH_"

# Read by something other than the settings object: the command line, docker-compose.yml, the build scripts.
# variable -> (default, meaning); the README's configuration reference lists them under the settings.
NOT_SETTINGS: dict[str, tuple[str, str]] = {
    "ORCH_URL": ("http://127.0.0.1:$ORCH_PORT", "the command line: the orchestrator API it talks to"),
    "ORCH_API_KEY": ("-", "the command line: the API key it sends"),
    "ORCH_CLI_API_KEY": ("-", "the command line: the older name of ORCH_API_KEY, still read"),
    "ORCH_BIND": ("127.0.0.1", "docker-compose.yml: the address `serve` binds (its --host); not loopback only with API keys"),
    "ORCH_ENV_FILE": ("deploy/tenant.env", "docker-compose.yml: the env file passed to the deployment's containers"),
    "ORCH_CONFIG_DIR": ("./deploy/config", "docker-compose.yml: mounted at /etc/orchestrator (api-keys.yaml, tenants.yaml); "
                        "a relative path starts with `./`"),
    "ORCH_IMAGE": ("agent-orchestrator/orchestrator:latest", "docker-compose.yml and scripts/build-orchestrator-image: the orchestrator image"),
    "ORCH_IMAGE_FORCE": ("0", "scripts/build-orchestrator-image: 1 rebuilds even when its inputs are unchanged"),
}
SECRET_VARIABLES = ("ORCH_API_KEY", "ORCH_CLI_API_KEY")


def unknown_variables(environ: Mapping[str, str], *, settings: Iterable[str]) -> list[str]:
    """One line per `ORCH_*` variable nobody reads, with a "did you mean" when a known name is close."""
    known = {*settings, *NOT_SETTINGS}
    lines = []
    for name in sorted(n for n in environ if n.startswith(PREFIX) and n not in known):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else "; `orchestrator config` lists the settings"
        lines.append(f"unknown variable {name} is ignored{hint}")
    return lines
