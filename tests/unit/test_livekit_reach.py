"""The LiveKit reach check's verdicts, with a runtime that makes networks and answers probes from a table."""

from __future__ import annotations

import pytest

from devtools.fakes import CLIENT, FARAH, OTHER, DictTenantStore
from orchestrator.core.errors import ConfigurationError
from orchestrator.rules.isolation import AgentNetwork
from orchestrator.services.agent_networks import AgentNetworks
from orchestrator.services.livekit_reach import LiveKitReach
from orchestrator.settings import Settings

NET = AgentNetwork(name="orch-agents-acme", subnet="172.29.9.0/24", gateway="172.29.9.1", bridge="oa-x", managed=True)


class _Engine:
    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.asked: list[list[tuple[str, int]]] = []

    async def ensure_network(self, name: str, **_: object) -> AgentNetwork:
        return NET

    async def probe_reach(self, network: AgentNetwork, *, targets: list[tuple[str, int]], **_: object) -> dict[str, str]:
        self.asked.append(targets)
        return {f"{h}:{p}": self.answers.get(f"{h}:{p}", "ConnectionRefusedError: refused") for h, p in targets}


class _Listing(DictTenantStore):
    async def list_clients(self) -> list:  # type: ignore[type-arg]
        return list(self.clients.values())


def _reach(mode: str, answers: dict[str, str], **settings: object) -> tuple[LiveKitReach, _Engine, list[str]]:
    s = Settings(scope="acme", livekit_preflight=mode, agent_host_filter=False, **settings)  # type: ignore[arg-type]
    engine, published = _Engine(answers), []
    reach = LiveKitReach(settings=s, tenants=_Listing({CLIENT: [FARAH], OTHER: [FARAH]}),
                         networks=AgentNetworks(settings=s, provider=engine), runtime=engine, publish=published.append)
    return reach, engine, published


async def test_one_probe_per_network_for_every_client_sharing_a_livekit() -> None:
    reach, engine, published = _reach("warn", {"172.29.9.1:7880": "ok"})
    assert await reach.check() == [] and published == []
    assert engine.asked == [[("172.29.9.1", 7880)]]  # both clients' loopback URL, rewritten to the gateway, once


async def test_an_unreachable_livekit_names_the_network_the_clients_and_the_fix() -> None:
    reach, _engine, published = _reach("warn", {})
    [problem] = await reach.check()
    assert "orch-agents-acme" in problem and "c1, c2" in problem and "ConnectionRefusedError" in problem
    assert "livekit-server must listen on 172.29.9.1 (bind_addresses" in problem and published == [problem]


async def test_refuse_stops_the_start_and_off_asks_nothing() -> None:
    reach, _engine, _ = _reach("refuse", {})
    with pytest.raises(ConfigurationError, match="ORCH_LIVEKIT_PREFLIGHT=refuse: agents on network orch-agents-acme"):
        await reach.at_start()
    quiet, engine, _ = _reach("off", {})
    await quiet.at_start()
    assert engine.asked == []


async def test_a_public_url_gets_a_route_hint_not_a_bind_hint() -> None:
    reach, _engine, _ = _reach("warn", {}, agent_livekit_url="wss://lk.example.com")
    [problem] = await reach.check()
    assert "lk.example.com:443" in problem and "need a route to lk.example.com:443" in problem
