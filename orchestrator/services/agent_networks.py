"""Which network an agent runs on: made once per deployment (or per client), filtered, remembered, never removed.

The orchestrator only ever creates these networks; it does not delete them while serving, because a network
cannot go while agents use it and a new agent may arrive at any moment. `orchestrator network --remove` takes one
down (with its host filter) once its deployment is gone.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from urllib.parse import urlsplit

from orchestrator.core.locks import KeyedLocks
from orchestrator.rules.isolation import (
    AGENTS_NETWORK_LABEL, HOST_NETWORK, AgentNetwork, engine_network, network_name, otlp_blocked, parse_host_port,
)
from orchestrator.rules.naming import Label
from orchestrator.runtime import HostFilter, NetworkProvider
from orchestrator.settings import Settings

log = logging.getLogger(__name__)

NETWORK_LABEL = AGENTS_NETWORK_LABEL  # the label (value "agents") of a network the orchestrator made for agents


class AgentNetworks:
    """Resolves (and on first use creates and filters) the network of a client's agents; cached per name."""

    def __init__(self, *, settings: Settings, provider: object | None) -> None:
        self._settings = settings
        self._provider = provider if isinstance(provider, NetworkProvider) else None
        self._filter = provider if isinstance(provider, HostFilter) and settings.agent_host_filter else None
        self._known: dict[str, AgentNetwork] = {}
        self._filters: dict[str, str] = {}  # network name → what its host filter lets through (for `network`, logs)
        self._locks = KeyedLocks()

    @property
    def configured(self) -> str:
        """The network setting in force: an engine that cannot make networks (a swarm) keeps the host
        network unless the operator names one of its own (e.g. an overlay network)."""
        s = self._settings
        if not s.agent_network and self._provider is None:
            return HOST_NETWORK
        return s.agent_network

    @property
    def shares_host_network(self) -> bool:
        """Agents see the host's loopback as theirs (then a keyless API on loopback is open to them)."""
        return self.configured == HOST_NETWORK

    @property
    def per_client(self) -> bool:
        return self._settings.agent_network_per_client and not self.shares_host_network

    def host_filter(self, network: AgentNetwork) -> str | None:
        """What the host filter of a network lets through, or None when it has none."""
        return self._filters.get(network.name)

    async def otlp_problem(self, network: AgentNetwork | None) -> str | None:
        """Why agents could not send spans to ORCH_AGENT_OTLP_ENDPOINT through our own host filter, or None (a start-up
        warning: isolation.otlp_blocked). `network`: the deployment network; None with per-client networks (not made yet)."""
        s = self._settings
        if not s.agent_otlp_endpoint:
            return None
        filtered = (self.host_filter(network) is not None if network is not None
                    else self._filter is not None and not self.shares_host_network)
        host = urlsplit(s.agent_otlp_endpoint).hostname or ""
        gateway = network.gateway if network is not None else None
        on_host = bool(host) and (host == gateway or await asyncio.to_thread(_this_host, host))
        return otlp_blocked(s.agent_otlp_endpoint, filtered=filtered, ports=[parse_host_port(p) for p in s.agent_host_ports],
                            egress=s.agent_egress, on_host=on_host, gateway=gateway)

    def known(self) -> list[AgentNetwork]:
        return list(self._known.values())

    async def ensure_default(self) -> AgentNetwork | None:
        """At start: the deployment network (per-client networks come with each client's first agent)."""
        if self.per_client:
            return None
        return await self.for_client(None)

    def forget(self, network: AgentNetwork) -> None:
        """Drop a remembered network (it vanished): the next agent's launch finds or makes it again."""
        self._known.pop(network.name, None)

    async def for_client(self, client_id: str | None) -> AgentNetwork:
        s = self._settings
        name = network_name(configured=self.configured, scope=s.scope, client_id=client_id if self.per_client else None)
        known = self._known.get(name)
        if known is not None:
            return known
        if self._provider is None or name == HOST_NETWORK or engine_network(name):
            return AgentNetwork(name=name)
        async with self._locks.hold(name):
            if name not in self._known:
                labels = {Label.MANAGED: "true", Label.SCOPE: s.scope, NETWORK_LABEL: "agents"}
                if self.per_client and client_id is not None:
                    labels[Label.CLIENT_ID] = client_id
                loop = asyncio.get_running_loop()
                started = loop.time()
                net = await self._provider.ensure_network(
                    name, labels=labels, subnet=None if self.per_client else s.agent_subnet,
                    pool=s.agent_subnet_pool, prefix=s.agent_subnet_prefix,
                )
                made = loop.time()
                what = await self._install_filter(net)
                log.info("agent network %s: subnet %s gateway %s bridge %s (%.0f ms); host filter: %s (%.1f ms)",
                         net.name, net.subnet, net.gateway, net.bridge, (made - started) * 1000, what,
                         (loop.time() - made) * 1000, extra={"client_id": client_id or ""})
                self._known[name] = net
        return self._known[name]

    async def _install_filter(self, net: AgentNetwork) -> str:
        """The host filter on a network we made (idempotent); says why there is none otherwise."""
        if self._filter is None:
            return "off (ORCH_AGENT_HOST_FILTER=false)" if self._settings.agent_host_filter is False else "none on this engine"
        if not net.managed:
            return f"none (network {net.name} is not one the orchestrator made; filter it yourself)"
        ports = [parse_host_port(p) for p in self._settings.agent_host_ports]
        _changed, what = await self._filter.install_host_filter(net, ports=ports, egress=self._settings.agent_egress)
        self._filters[net.name] = what
        return what


def _this_host(host: str) -> bool:
    """Whether `host` resolves to an address of this machine: binding a socket to an address succeeds only then."""
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False  # unresolvable here: not ours to judge
    for family, _, _, _, addr in found:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((addr[0], 0))
                return True
            except OSError:
                continue
    return False
