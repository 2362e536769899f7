"""The start-up check that agents can reach their LiveKit: from each agents' network, each served client's LiveKit
URL (as agents get it) is opened by a probe container hardened like an agent. A second deployment on one host makes
a network with a new gateway where the host's LiveKit may not listen; this says so at start, with the fix, instead
of triggers answering 201 and agents never joining.

ORCH_LIVEKIT_PREFLIGHT: `warn` (default) checks in the background and logs an error plus a feed event per problem;
`refuse` checks before serving and stops the start; `off` skips it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from urllib.parse import urlsplit

from orchestrator.core.errors import ConfigurationError, OrchestratorError
from orchestrator.core.models import Client
from orchestrator.rules.isolation import AgentNetwork, agent_livekit_url, host_port_allows, parse_host_port, port_of_url
from orchestrator.runtime import ReachProbe
from orchestrator.services.agent_networks import AgentNetworks
from orchestrator.settings import Settings
from orchestrator.tenants import TenantStore

log = logging.getLogger(__name__)


def fix_for(network: AgentNetwork, *, host: str, port: int, filtered: bool) -> str:
    """What the operator does about an unreachable LiveKit, by where it is."""
    if host == network.gateway:
        ports = f", and {port}/tcp in ORCH_AGENT_HOST_PORTS" if filtered else ""
        return (f"livekit-server must listen on {network.gateway} (bind_addresses: [127.0.0.1, {network.gateway}] and "
                f"rtc.node_ip in its config{ports}), or give agents another URL with ORCH_AGENT_LIVEKIT_URL")
    return f"agents on {network.name} need a route to {host}:{port} (ORCH_AGENT_EGRESS, the host's firewall, DNS)"


class LiveKitReach:
    """Runs the check at start as the setting says; `problems` holds what the last check found."""

    def __init__(
        self, *, settings: Settings, tenants: TenantStore, networks: AgentNetworks, runtime: object,
        publish: Callable[[str], None],
    ) -> None:
        self._settings = settings
        self._tenants = tenants
        self._networks = networks
        self._probe = runtime if isinstance(runtime, ReachProbe) else None
        self._publish = publish
        self._task: asyncio.Task[None] | None = None
        self.problems: list[str] = []

    async def at_start(self) -> None:
        if self._settings.livekit_preflight == "off" or self._probe is None or self._networks.shares_host_network:
            return
        if self._settings.livekit_preflight == "refuse":
            if problems := await self.check():
                raise ConfigurationError("ORCH_LIVEKIT_PREFLIGHT=refuse: " + " | ".join(problems))
            return
        self._task = asyncio.create_task(self._warn(), name="livekit-reach")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _warn(self) -> None:
        try:
            await self.check()
        except OrchestratorError as exc:  # an engine or tenant store that does not answer yet: not a verdict
            log.warning("LiveKit reach check skipped: %s", exc.message)

    async def served(self) -> list[Client]:
        """Every client the store lists (the file store), else the ones ORCH_DISPATCH_CLIENTS names."""
        lister = getattr(self._tenants, "list_clients", None)
        if lister is not None:
            return list(await lister())
        return [await self._tenants.get_client(cid) for cid in self._settings.dispatch_clients]

    async def check(self) -> list[str]:
        s = self._settings
        clients = await self.served()
        default = await self._networks.ensure_default()
        nets = [n for n in {n.name: n for n in [*([default] if default else []), *self._networks.known()]}.values()
                if n.gateway is not None]
        allowed = [parse_host_port(p) for p in s.agent_host_ports]
        filtered = s.agent_host_filter
        problems: list[str] = []
        for net in nets:
            wanted: dict[tuple[str, int], list[str]] = {}  # (host, port) → the clients whose agents go there
            for client in clients:
                url = agent_livekit_url(client.livekit.url, network=net, override=s.agent_livekit_url)
                host, port = urlsplit(url).hostname or "", port_of_url(url)
                if port is not None:
                    wanted.setdefault((host, port), []).append(client.id)
            if not wanted:
                continue
            started = asyncio.get_running_loop().time()
            assert self._probe is not None
            seen = await self._probe.probe_reach(net, image=s.agent_image, user=s.agent_user, scope=s.scope,
                                                 targets=list(wanted))
            took = (asyncio.get_running_loop().time() - started) * 1000
            for (host, port), ids in wanted.items():
                answer = seen.get(f"{host}:{port}", "no answer from the probe")
                if answer == "ok":
                    log.info("LiveKit reach: agents on %s reach %s:%s (clients %s; probe %.0f ms)", net.name, host, port,
                             ", ".join(ids), took)
                    continue
                if host == net.gateway and filtered and not host_port_allows(allowed, port=port):
                    answer += f"; {port}/tcp is not in ORCH_AGENT_HOST_PORTS"
                problem = (f"agents on network {net.name} cannot reach LiveKit at {host}:{port} for client(s) "
                           f"{', '.join(ids)} ({answer}): {fix_for(net, host=host, port=port, filtered=filtered)}")
                problems.append(problem)
                log.error("LiveKit reach check: %s", problem)
                self._publish(problem)
        self.problems = problems
        return problems
