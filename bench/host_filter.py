"""What the host filter costs: installing it on a fresh agents' network, the check every later start does, and an
agent's container start on a filtered network next to the same start without the filter (interleaved).

    .venv/bin/python -m bench.host_filter [--runs 20]

Real parts only: the shared engine, the host's iptables (only the product's own chain on the bench's own bridge,
removed with the network in `finally`), the tiny image started with the agents' hardened spec. Writes
bench-results/host_filter.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from pathlib import Path

from bench.stats import ratio, summary
from devtools.docker_helpers import TINY_IMAGE
from orchestrator.rules.isolation import parse_host_port
from orchestrator.rules.naming import Label
from orchestrator.runtime import ContainerSpec
from orchestrator.runtime.docker.runtime import DockerRuntime
from orchestrator.services.agent_networks import AgentNetworks
from orchestrator.settings import Settings

PORTS = [parse_host_port(p) for p in ("7880/tcp", "7881/tcp", "7882/udp", "50000-60000/udp")]


def spec(name: str, *, network: str, scope: str) -> ContainerSpec:
    return ContainerSpec(name=name, image=TINY_IMAGE, labels={Label.SCOPE: scope}, env={}, memory="32m", cpus=0.2,
                         pids=32, network=network, restart_policy="no", restart_max=0, stop_timeout_s=1,
                         user="10001:10001")


async def main(runs: int) -> dict[str, object]:
    scope = f"bench-filter-{secrets.token_hex(3)}"
    runtime = DockerRuntime()
    settings = Settings(scope=scope, agent_network="", agent_host_ports=[str(p) for p in PORTS])
    nets = AgentNetworks(settings=settings, provider=runtime)
    net = await nets.for_client(None)
    try:
        await runtime.remove_host_filter(net)
        started = time.perf_counter()
        await runtime.install_host_filter(net, ports=PORTS, egress="internet")
        first_install = time.perf_counter() - started
        rechecks = []
        for _ in range(runs):
            started = time.perf_counter()
            changed, _what = await runtime.install_host_filter(net, ports=PORTS, egress="internet")
            rechecks.append(time.perf_counter() - started)
            assert not changed
        # Agent starts, interleaved: filter on, filter off (the chain removed and put back between arms).
        on: list[float] = []
        off: list[float] = []
        for i in range(runs):
            for arm, into in (("on", on), ("off", off)) if i % 2 == 0 else (("off", off), ("on", on)):
                if arm == "on":
                    await runtime.install_host_filter(net, ports=PORTS, egress="internet")
                else:
                    await runtime.remove_host_filter(net)
                name = f"{scope}-{arm}-{i}"
                started = time.perf_counter()
                await runtime.create_and_start(spec(name, network=net.name, scope=scope))
                into.append(time.perf_counter() - started)
                await runtime.remove(name)
        result = {
            "first_install": summary([first_install]), "recheck_at_start": summary(rechecks),
            "agent_start_filter_on": summary(on), "agent_start_filter_off": summary(off), "on_over_off": ratio(on, off),
            "calls_per_agent_start": 0,  # the filter is per network, installed at start; a launch never touches it
        }
        return result
    finally:
        await runtime.remove_network(net)
        runtime.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    out = asyncio.run(main(parser.parse_args().runs))
    print(json.dumps(out, indent=1))
    path = Path(__file__).resolve().parents[1] / "bench-results" / "host_filter.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
