"""The host filter of an agents' bridge, installed and removed with the host's iptables (see firewall.py's rules).

Runs `iptables` in the orchestrator's own network namespace, which must be the host's (compose runs it with
`network_mode: host` and NET_ADMIN): the agents' bridge must be visible there, else the rules would filter nothing.
One `iptables -S` per check; a change is one atomic `iptables-restore --noflush` touching only our chains and jumps.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from pathlib import Path

from orchestrator.core.errors import DependencyRejected
from orchestrator.rules.isolation import AgentNetwork, HostPort
from orchestrator.runtime.docker import firewall

log = logging.getLogger(__name__)
OPT_OUT = "set ORCH_AGENT_HOST_FILTER=false to run without it (agents then reach every host service bound to 0.0.0.0)"
_lock = threading.Lock()  # one writer per process: two networks' installs must not interleave their restore calls


class HostFilterUnavailable(DependencyRejected):
    """The filter cannot be installed here: no iptables, no NET_ADMIN, or not in the host's network namespace."""


def _run(args: list[str], *, stdin: str | None = None) -> str:
    binary = shutil.which(args[0])
    if binary is None:
        raise HostFilterUnavailable(
            f"the agents' host filter needs {args[0]} (package iptables) on the orchestrator's host; {OPT_OUT}",
            dependency="docker",
        )
    done = subprocess.run([binary, "-w", "5", *args[1:]], input=stdin, capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise HostFilterUnavailable(
            f"cannot install the agents' host filter ({args[0]}: {why[0]}); the orchestrator needs NET_ADMIN in "
            f"the host's network namespace; {OPT_OUT}", dependency="docker",
        )
    return done.stdout


def _listing() -> list[str]:
    return _run(["iptables", "-t", "filter", "-S"]).splitlines()


def _require_bridge(network: AgentNetwork) -> str:
    bridge = network.bridge or ""
    if not bridge or not network.gateway:
        raise HostFilterUnavailable(f"agent network {network.name} has no bridge or gateway to filter", dependency="docker")
    if not Path("/sys/class/net", bridge).exists():
        raise HostFilterUnavailable(
            f"the agents' bridge {bridge} (network {network.name}) is not visible here: the orchestrator must run in "
            f"the host's network namespace (network_mode: host) on the engine's host; {OPT_OUT}", dependency="docker",
        )
    return bridge


def install(network: AgentNetwork, *, ports: list[HostPort], egress: str) -> tuple[bool, str]:
    """Make the bridge's filter what the settings say (idempotent). Returns (changed, description)."""
    bridge = _require_bridge(network)
    want = firewall.wanted(bridge=bridge, ports=ports, egress=egress)
    with _lock:
        script = firewall.restore_script(firewall.current(_listing(), bridge=bridge), want)
        if script is not None:
            _run(["iptables-restore", "--noflush"], stdin=script)
    return script is not None, firewall.describe(want)


def remove(bridge: str) -> bool:
    """Remove our chains and jumps for this bridge (and nothing else). True when something was removed."""
    with _lock:
        script = firewall.removal_script(firewall.current(_listing(), bridge=bridge))
        if script is not None:
            _run(["iptables-restore", "--noflush"], stdin=script)
    return script is not None


def status(bridge: str) -> dict[str, list[str]]:
    """Our chains for this bridge as installed now (chain → rules), plus the jumps into them under "jumps"."""
    have = firewall.current(_listing(), bridge=bridge)
    return {**have.chains, "jumps": [f"{parent} {spec}" for parent, spec in have.jumps]}
