"""Which pools a start teaches the warm pool (services.prewarm): the served clients' domains, none per client, capped."""

from __future__ import annotations

from orchestrator.core.models import Client, LiveKitCredentials
from orchestrator.runtime import ContainerSpec
from orchestrator.services.prewarm import PREWARM_POOLS_MAX, prewarm
from orchestrator.services.trigger import TriggerService
from orchestrator.settings import Settings
from devtools.fakes import CREDS, FakeRooms, FakeRuntime, tenants


class LearningPool:
    """The pool's `learn` as prewarm sees it: a domain per LiveKit URL (a lobby pool is per LiveKit)."""

    enabled = True

    def __init__(self) -> None:
        self.specs: list[ContainerSpec] = []

    async def learn(self, spec: ContainerSpec, *, livekit: LiveKitCredentials | None = None) -> str | None:
        self.specs.append(spec)
        return f"pool-{livekit.url if livekit else ''}"


def _clients(n: int, *, own_livekit: bool) -> list[Client]:
    return [Client(id=f"c{i}", name=f"C{i}", livekit=CREDS.model_copy(update={"url": f"ws://10.0.0.{i}:7880"}) if own_livekit else CREDS)
            for i in range(n)]


async def _prewarm(settings: Settings, clients: list[Client]) -> tuple[list[str], LearningPool]:
    pool = LearningPool()
    svc = TriggerService(settings=settings, tenants=tenants(), livekit=FakeRooms(), runtime=FakeRuntime())
    return await prewarm(svc, pool, clients), pool  # type: ignore[arg-type]


async def test_clients_sharing_a_domain_teach_one_pool_with_the_deployments_defaults() -> None:
    s = Settings(scope="unit", agent_memory="300m", agent_cpus=0.25)
    pools, pool = await _prewarm(s, _clients(3, own_livekit=False))
    assert pools == [f"pool-{CREDS.url}"]
    spec = pool.specs[0]
    assert (spec.image, spec.memory, spec.cpus, spec.read_only_root) == (s.agent_image, "300m", 0.25, True)


async def test_at_most_the_cap_of_domains() -> None:
    pools, _ = await _prewarm(Settings(scope="unit"), _clients(PREWARM_POOLS_MAX + 3, own_livekit=True))
    assert len(pools) == PREWARM_POOLS_MAX


async def test_per_client_networks_and_a_pool_off_teach_nothing() -> None:
    assert (await _prewarm(Settings(scope="unit", agent_network="agents", agent_network_per_client=True), _clients(2, own_livekit=False)))[0] == []
    pool = LearningPool()
    pool.enabled = False
    svc = TriggerService(settings=Settings(scope="unit"), tenants=tenants(), livekit=FakeRooms(), runtime=FakeRuntime())
    assert await prewarm(svc, pool, _clients(2, own_livekit=False)) == [] and pool.specs == []  # type: ignore[arg-type]
