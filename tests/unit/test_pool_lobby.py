"""The pool's LiveKit lobby handover, engine-free: the token a member gets, one packet per claim to the claimed
member only, a member that never takes it is removed (the start goes cold), and lobby pools are per LiveKit."""

from __future__ import annotations

import asyncio
import base64
import json
from types import SimpleNamespace
from typing import Any

import pytest
from livekit import api as lkapi

from orchestrator.core.errors import ConfigurationError
from orchestrator.core.models import ContainerInfo, ContainerStatus, LiveKitCredentials
from orchestrator.livekit.client import lobby_token
from orchestrator.rules import pool as rules
from orchestrator.runtime import ContainerSpec
from orchestrator.services import pool_lobby
from orchestrator.services.pool import WarmPool
from orchestrator.settings import Settings

CREDS = LiveKitCredentials(url="ws://lk:7880", api_key="key1", api_secret="s" * 40)  # type: ignore[arg-type]


def claims(jwt: str) -> dict[str, Any]:
    body = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def test_a_lobby_token_only_joins_the_lobby() -> None:
    c = claims(lobby_token(CREDS, identity="pool-ab", room="orch-lobby-s-p", ttl_s=60))
    assert c["sub"] == "pool-ab" and c["video"]["room"] == "orch-lobby-s-p" and c["video"]["roomJoin"] is True
    assert c["video"]["canPublish"] is False and c["video"]["canPublishData"] is False and c["video"]["canSubscribe"] is False
    assert not {"roomAdmin", "roomCreate", "roomList", "agent"} & set(c["video"])


class FakeLobby:
    """A LiveKit with one lobby: members present by identity; a packet makes its addressee leave (or not)."""

    def __init__(self, *, takes: bool = True) -> None:
        self.present: set[str] = set()
        self.sent: list[tuple[str, str, bytes]] = []
        self.takes = takes

    def lobby_token(self, creds: LiveKitCredentials, *, identity: str, room: str, ttl_s: int) -> str:
        return f"token-{identity}"

    async def send_data(self, creds: LiveKitCredentials, *, room: str, data: bytes, identity: str, topic: str) -> None:
        self.sent.append((identity, topic, data))
        if self.takes:
            self.present.discard(identity)

    async def list_participants(self, creds: LiveKitCredentials, *, room: str) -> list[Any]:
        return [SimpleNamespace(identity=i, state=lkapi.ParticipantInfo.State.ACTIVE) for i in self.present]


class FakeEngine:
    engine = "swarm"
    handovers = (rules.LOBBY_PROTOCOL,)

    def __init__(self, lobby: FakeLobby) -> None:
        self.lobby = lobby
        self.made: list[ContainerSpec] = []
        self.removed: list[str] = []

    async def image_id(self, image: str) -> tuple[str, dict[str, str]]:
        return "sha256:1", {rules.WARM_MODE: "stdin-v1,livekit-lobby-v1"}

    async def create_member(self, spec: ContainerSpec) -> ContainerInfo:
        self.made.append(spec)
        self.lobby.present.add(spec.labels[rules.POOL_IDENTITY])
        return ContainerInfo(id=f"id{len(self.made)}", name=spec.name, status=ContainerStatus.running, labels=spec.labels)

    async def claim_member(self, member: ContainerInfo, *, name: str, labels: dict[str, str]) -> ContainerInfo:
        return member.model_copy(update={"name": name, "labels": {**member.labels, **labels}})

    async def remove_member(self, member: ContainerInfo) -> None:
        self.removed.append(member.id)

    async def list_members(self, *, scope: str) -> list[tuple[ContainerInfo, None]]:
        return [(ContainerInfo(id=f"id{i}", name=m.name, status=ContainerStatus.running, labels=m.labels), None)
                for i, m in enumerate(self.made, 1) if f"id{i}" not in self.removed]


def spec(room: str = "r1") -> ContainerSpec:
    return ContainerSpec(name=f"agent_c_farah_{room}", image="img", labels={"k": room}, memory="256m", cpus=0.2, pids=64,
                         network="n", restart_policy="on-failure", restart_max=3, stop_timeout_s=5,
                         env={"LIVEKIT_URL": "ws://agents-see-lk:7880", "LIVEKIT_ROOM": room, "LIVEKIT_TOKEN": "eyJ.secret.x"})


async def filled(takes: bool = True) -> tuple[WarmPool, FakeEngine, FakeLobby]:
    lobby = FakeLobby(takes=takes)
    engine = FakeEngine(lobby)
    pool = WarmPool(settings=Settings(pool_min=1, pool_max=1, scope="s"), engine=engine, livekit=lobby)  # type: ignore[arg-type]
    assert await pool.claim(spec(), livekit=CREDS) is None  # the first start is cold and teaches the pool
    pool.refill()
    await asyncio.gather(*pool._tasks)  # the member made (it joins its lobby at once here)
    return pool, engine, lobby


async def test_a_claim_sends_one_packet_to_the_claimed_member_only() -> None:
    pool, engine, lobby = await filled()
    [member] = engine.made
    assert member.env["AGENT_LOBBY_ROOM"] == rules.lobby_room(scope="s", pool=pool.pool_of(spec(), CREDS))
    assert member.env["LIVEKIT_URL"] == "ws://agents-see-lk:7880" and "LIVEKIT_TOKEN" not in member.env
    lobby.present.add("pool-bystander")
    got = await pool.claim(spec("r2"), livekit=CREDS)
    assert got is not None and pool.outcomes["warm"] == 1
    [(identity, topic, data)] = lobby.sent
    assert identity == member.labels[rules.POOL_IDENTITY] and topic == pool_lobby.TOPIC
    assert json.loads(data)["env"]["LIVEKIT_ROOM"] == "r2"


async def test_a_member_that_never_takes_its_assignment_is_removed_and_the_start_goes_cold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("orchestrator.services.pool.HANDOVER_TIMEOUT_S", 0.2)
    pool, engine, lobby = await filled(takes=False)
    assert await pool.claim(spec("r2"), livekit=CREDS) is None
    assert engine.removed == ["id1"] and len(lobby.sent) == 1 and pool.outcomes["handover-failed"] == 1


async def test_lobby_pools_are_per_livekit_and_a_start_without_credentials_goes_cold() -> None:
    pool, _, _ = await filled()
    other = CREDS.model_copy(update={"api_key": "key2"})
    assert pool.pool_of(spec(), CREDS) != pool.pool_of(spec(), other)
    assert await pool.claim(spec("r3")) is None


async def test_a_running_member_is_claimable_only_once_it_waits_in_its_lobby() -> None:
    """Running is not ready (Python and the rtc library load first): the sweep offers only members in the lobby."""
    pool, engine, lobby = await filled()
    [member] = engine.made
    lobby.present.discard(member.labels[rules.POOL_IDENTITY])  # as a member still connecting
    await pool.sweep()
    assert sum(p["idle"] for p in pool.snapshot()["pools"]) == 0
    lobby.present.add(member.labels[rules.POOL_IDENTITY])
    await pool.sweep()
    assert sum(p["idle"] for p in pool.snapshot()["pools"]) == 1


class FakeDockerEngine(FakeEngine):
    """An engine that offers both channels (Docker): a lobby member's token goes to its stdin, not its env."""

    engine = "docker"
    handovers = (rules.WARM_PROTOCOL, rules.LOBBY_PROTOCOL)

    def __init__(self, lobby: FakeLobby) -> None:
        super().__init__(lobby)
        self.stdin: dict[str, list[bytes]] = {}

    async def create_member(self, spec: ContainerSpec) -> ContainerInfo:
        self.made.append(spec)  # joins its lobby only once it has read its token (hand_over)
        return ContainerInfo(id=f"id{len(self.made)}", name=spec.name, status=ContainerStatus.running, labels=spec.labels)

    async def hand_over(self, name: str, line: bytes, *, timeout_s: float) -> None:
        self.stdin.setdefault(name, []).append(line)
        [spec] = [m for m in self.made if m.name == name]
        self.lobby.present.add(spec.labels[rules.POOL_IDENTITY])


async def test_on_docker_a_sandboxed_pool_waits_in_a_lobby_and_its_token_goes_to_stdin_never_env() -> None:
    lobby = FakeLobby(takes=True)
    engine = FakeDockerEngine(lobby)
    pool = WarmPool(settings=Settings(pool_min=1, pool_max=1, scope="s", agent_runtime="runsc"), engine=engine, livekit=lobby)  # type: ignore[arg-type]
    assert await pool.claim(spec(), livekit=CREDS) is None
    pool.refill()
    await asyncio.gather(*pool._tasks)
    [member] = engine.made
    assert "AGENT_LOBBY_TOKEN" not in member.env and member.env["AGENT_LOBBY_ROOM"]
    [line] = engine.stdin[member.name]
    token = json.loads(line)["lobby_token"]
    assert token == f"token-{member.labels[rules.POOL_IDENTITY]}" and line.endswith(b"\n")  # its own token, one line
    assert await pool.claim(spec("r2"), livekit=CREDS) is not None and len(lobby.sent) == 1  # the assignment: the lobby's
    assert engine.stdin[member.name] == [line]  # nothing else ever on its stdin


@pytest.mark.parametrize(("setting", "offered", "runtime", "chosen"), [
    ("auto", (rules.WARM_PROTOCOL, rules.LOBBY_PROTOCOL), None, rules.WARM_PROTOCOL),  # Docker, runc
    ("auto", (rules.WARM_PROTOCOL, rules.LOBBY_PROTOCOL), "runsc", rules.LOBBY_PROTOCOL),  # Docker, gVisor
    ("auto", (rules.WARM_PROTOCOL, rules.LOBBY_PROTOCOL), "kata-qemu", rules.LOBBY_PROTOCOL),
    ("auto", (rules.LOBBY_PROTOCOL,), None, rules.LOBBY_PROTOCOL),  # Swarm
    ("auto", (rules.WARM_PROTOCOL,), "gvisor", rules.WARM_PROTOCOL),  # Kubernetes: stdin only
    ("stdin-v1", (rules.WARM_PROTOCOL, rules.LOBBY_PROTOCOL), "runsc", rules.WARM_PROTOCOL),  # an operator's choice
    ("livekit-lobby-v1", (rules.WARM_PROTOCOL, rules.LOBBY_PROTOCOL), None, rules.LOBBY_PROTOCOL),
])
def test_the_pool_handover(setting: str, offered: tuple[str, ...], runtime: str | None, chosen: str) -> None:
    assert rules.handover_for(setting=setting, offered=offered, runtime=runtime) == chosen


@pytest.mark.parametrize(("setting", "offered"), [
    ("stdin-v1", (rules.LOBBY_PROTOCOL,)), ("livekit-lobby-v1", (rules.WARM_PROTOCOL,)),
])
def test_a_handover_the_engine_lacks_is_a_start_up_error(setting: str, offered: tuple[str, ...]) -> None:
    class Engine(FakeEngine):
        handovers = offered

    with pytest.raises(ConfigurationError, match=f"ORCH_POOL_HANDOVER={setting}"):
        WarmPool(settings=Settings(pool_handover=setting), engine=Engine(FakeLobby(takes=True)))  # type: ignore[arg-type]
