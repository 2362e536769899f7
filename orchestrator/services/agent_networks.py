"""Which network an agent runs on: made once per deployment (or per client), remembered, never removed.

The orchestrator only ever creates these networks; it does not delete them, because a network
cannot go while agents use it and a new agent may arrive at any moment. An operator removes one
by hand (`docker network rm`) once its deployment is gone.
"""

from __future__ import annotations

import asyncio
import logging

from orchestrator.rules.isolation import HOST_NETWORK, AgentNetwork, bridge_name, engine_network, network_name
from orchestrator.core.locks import KeyedLocks
from orchestrator.rules.naming import LABEL_PREFIX, Label
from orchestrator.runtime import NetworkProvider
from orchestrator.settings import Settings

log = logging.getLogger(__name__)

NETWORK_LABEL = LABEL_PREFIX + "network"
# Agents on one network cannot reach each other (only the gateway and the outside): one tenant's
# agent never talks to another's, even on a shared deployment network.
BRIDGE_OPTIONS = {"com.docker.network.bridge.enable_icc": "false"}


class AgentNetworks:
    """Resolves (and on first use creates) the network of a client's agents; cached per name."""

    def __init__(self, *, settings: Settings, provider: object | None) -> None:
        self._settings = settings
        self._provider = provider if isinstance(provider, NetworkProvider) else None
        self._known: dict[str, AgentNetwork] = {}
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
                started = asyncio.get_running_loop().time()
                net = await self._provider.ensure_network(
                    name, labels=labels, subnet=None if self.per_client else s.agent_subnet,
                    pool=s.agent_subnet_pool, prefix=s.agent_subnet_prefix, options={**BRIDGE_OPTIONS, "com.docker.network.bridge.name": bridge_name(name)},
                )
                log.info("agent network %s: subnet %s gateway %s (%.0f ms)", net.name, net.subnet, net.gateway,
                         (asyncio.get_running_loop().time() - started) * 1000, extra={"client_id": client_id or ""})
                self._known[name] = net
        return self._known[name]
