"""At start, teach the warm pool the domains of the served clients, so the first start after a deploy is warm too.

A pool otherwise learns its domain (image, network, resources, sandbox) from its first cold start. The launch spec
of an agent with the deployment's defaults is that domain: a placeholder agent's spec (its tenant fields are dropped
by the pool) is enough. Per-client agent networks are left to each client's first start (one pool per client
filled at start would be a pool per tenant, idle), and at most PREWARM_POOLS_MAX domains are filled.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from orchestrator.core.models import Agent, Client, ContainerKey, Mode
from orchestrator.services.pool import WarmPool
from orchestrator.services.trigger import TriggerService

log = logging.getLogger(__name__)

PREWARM_POOLS_MAX = 4  # e.g. one per LiveKit server on Swarm, whose pools are per LiveKit
PLACEHOLDER = Agent(id="prewarm", slug="prewarm", name="prewarm")  # the deployment's image and resources


async def prewarm(trigger: TriggerService, pool: WarmPool, clients: Sequence[Client]) -> list[str]:
    """The pools taught (each then fills to its minimum by its own loop)."""
    if not pool.enabled or trigger.networks.per_client:
        return []
    pools: list[str] = []
    for client in clients:
        network = await trigger.networks.for_client(client.id)
        key = ContainerKey(client_id=client.id, agent_slug=PLACEHOLDER.slug, room="prewarm")
        spec = trigger.spec_for(key, name="", client=client, agent=PLACEHOLDER, mode=Mode.voice, network=network)
        if (found := await pool.learn(spec, livekit=client.livekit)) is not None and found not in pools:
            pools.append(found)
        if len(pools) >= PREWARM_POOLS_MAX:
            break
    if pools:
        log.info("warm pool: filling %d pool(s) at start", len(pools), extra={"pools": pools})
    return pools
