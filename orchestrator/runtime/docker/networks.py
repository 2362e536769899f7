"""The agents' bridge networks on a Docker engine: found by name or made on a free subnet (blocking; the runtime
runs these in its worker threads). Idempotent; never removed here while agents may still arrive."""

from __future__ import annotations

import logging
import time
from typing import Any

import docker
from docker.errors import APIError

from orchestrator.core.errors import DependencyRejected, DependencyUnavailable, dependency_error
from orchestrator.rules.isolation import AgentNetwork, gateway_of, pick_subnet
from orchestrator.runtime.docker.spec import bridge_options, network_info

log = logging.getLogger(__name__)
ROUNDS = 8  # bounded: each round either finds the network or takes a subnet nobody holds


def find(api: docker.APIClient, name: str) -> dict[str, Any] | None:
    """The inspected network of exactly that name (the engine's name filter matches substrings)."""
    rows = [n for n in api.networks(names=[name]) if n.get("Name") == name]
    return api.inspect_network(rows[0]["Id"]) if rows else None


def ensure(
    api: docker.APIClient, name: str, *, labels: dict[str, str], subnet: str | None, pool: list[str], prefix: int,
    options: dict[str, str],
) -> AgentNetwork:
    """The network `name`, made when missing with the agents' bridge options (plus `options`).

    An existing network is used as it is (labelled ours or an operator's own). A new one gets `subnet`, or the
    first subnet of `pool` that no network on this engine overlaps; when two processes race for a subnet, the
    engine refuses the overlap and the loser finds the winner's network by name on its next round.
    """
    for attempt in range(ROUNDS):
        if attempt:
            # Another process's create of this name (or of that subnet) may not be visible yet: give it a moment.
            time.sleep(min(0.05 * 2 ** attempt, 1.0))
        found = find(api, name)
        if found is not None:
            return network_info(found)
        chosen = subnet
        if chosen is None:
            taken = [cfg["Subnet"] for n in api.networks()
                     for cfg in ((n.get("IPAM") or {}).get("Config") or []) if cfg.get("Subnet")]
            chosen = pick_subnet(pool=pool, prefix=prefix, taken=taken)
            if chosen is None:
                raise DependencyRejected(
                    f"no free /{prefix} subnet left in ORCH_AGENT_SUBNET_POOL {pool} for agent network {name}; "
                    "widen the pool or set ORCH_AGENT_SUBNET", dependency="docker",
                )
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=chosen, gateway=gateway_of(chosen))])
        try:
            api.create_network(name, driver="bridge", ipam=ipam, labels=labels,
                               options={**bridge_options(name), **options}, check_duplicate=True)
        except APIError as exc:
            text = str(exc.explanation or exc)
            if exc.status_code == 409 or "already exists" in text:
                continue  # another process made it: found by name next round
            if "overlap" in text and subnet is None:
                continue  # a subnet taken since we listed: pick again
            raise dependency_error(
                "docker", f"cannot create agent network {name} ({chosen}): {text}", status=exc.status_code
            ) from None
        log.info("created agent network %s (%s)", name, chosen)
    found = find(api, name)
    if found is None:
        raise DependencyUnavailable(f"agent network {name} could not be created; retry shortly", dependency="docker")
    return network_info(found)
