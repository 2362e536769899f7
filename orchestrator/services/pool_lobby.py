"""The pool's LiveKit handover (livekit-lobby-v1): members wait in a lobby room, an assignment is one SendData to one.

For engines whose members the orchestrator cannot reach (Swarm: it speaks only to a manager, no attach into a task
on another node). Members of a lobby pool wait in `orch-lobby-<scope>-<pool>` with a join-only token of their own
identity (livekit.client.lobby_token); the pool's domain therefore includes the LiveKit server, the API key (only
its holder can mint those tokens and send) and the URL agents use, so a member only ever serves tenants of the
LiveKit it waits on. Delivery: the member must be in the lobby, then one reliable server data packet addressed to
its identity, then the member leaving the lobby is the receipt. Never sent twice: a member that does not leave
within the bound is removed by the pool (the start goes cold).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any, Protocol

from orchestrator.core.errors import DependencyRejected, DependencyUnavailable, OrchestratorError
from orchestrator.core.models import ContainerInfo, LiveKitCredentials
from orchestrator.livekit.client import is_active
from orchestrator.rules import pool as rules
from orchestrator.runtime import ContainerSpec

TOPIC = "orchestrator.assignment"  # agent_image.warm.ASSIGNMENT_TOPIC
MAX_PAYLOAD = 14_000  # LiveKit's reliable data packets stay under 15 KiB; a larger assignment starts cold
POLL_S = 0.01  # ListParticipants of the lobby: ~2 ms each on the same host
LOBBY_TOKEN_ENV = "AGENT_LOBBY_TOKEN"  # agent_image.warm.LOBBY_TOKEN_ENV (Swarm: a secret file; Docker: on stdin instead)


class LobbyService(Protocol):
    """What the lobby handover needs of the LiveKit adapter (livekit.client.LiveKitGateway)."""

    def lobby_token(self, creds: LiveKitCredentials, *, identity: str, room: str, ttl_s: int) -> str: ...

    async def send_data(self, creds: LiveKitCredentials, *, room: str, data: bytes, identity: str, topic: str) -> None: ...

    async def list_participants(self, creds: LiveKitCredentials, *, room: str) -> list[Any]: ...


class LobbyHandover:
    """Per lobby pool: the credentials learnt from the starts that used it (never stored anywhere but memory)."""

    def __init__(self, *, livekit: LobbyService, scope: str, token_ttl_s: int) -> None:
        self._lk = livekit
        self._scope = scope
        self._ttl_s = token_ttl_s
        self._creds: dict[str, LiveKitCredentials] = {}

    @staticmethod
    def domain(spec: ContainerSpec, creds: LiveKitCredentials) -> dict[str, str]:
        """What, besides the spec, makes members interchangeable: the LiveKit they wait on (no secret in it)."""
        return {"livekit": creds.url, "api_key": creds.api_key, "agent_url": spec.env.get("LIVEKIT_URL", "")}

    @staticmethod
    def payload(spec: ContainerSpec) -> bytes | None:
        """The assignment (the stdin line's JSON), or None when it is too large for one data packet."""
        raw = json.dumps({"env": spec.env}, separators=(",", ":")).encode()
        return raw if len(raw) <= MAX_PAYLOAD else None

    def learn(self, pool: str, creds: LiveKitCredentials) -> None:
        self._creds[pool] = creds

    def knows(self, pool: str) -> bool:
        return pool in self._creds

    def template_env(self, pool: str, spec: ContainerSpec) -> dict[str, str]:
        """The member's env beyond warm mode: where its lobby is. Its token is per member (`member`)."""
        return {"LIVEKIT_URL": spec.env.get("LIVEKIT_URL", ""), "AGENT_LOBBY_ROOM": rules.lobby_room(scope=self._scope, pool=pool)}

    def member(self, pool: str) -> tuple[dict[str, str], dict[str, str]]:
        """(env, labels) of a new member: its own identity and a join-only lobby token for it (a secret on Swarm)."""
        if pool not in self._creds:
            raise DependencyUnavailable(f"pool {pool}: no LiveKit credentials learnt yet (no start used it)", dependency="pool")
        identity = f"pool-{secrets.token_hex(6)}"
        token = self._lk.lobby_token(self._creds[pool], identity=identity, room=rules.lobby_room(scope=self._scope, pool=pool), ttl_s=self._ttl_s)
        return {LOBBY_TOKEN_ENV: token}, {rules.POOL_IDENTITY: identity}

    async def _present(self, pool: str, identity: str) -> bool:
        """In the lobby and ready to receive: a member listed before its transport is up would lose the packet (seen:
        listed ~1.3 s before its connection setup finished), and one that left is gone or DISCONNECTED."""
        try:
            people = await self._lk.list_participants(self._creds[pool], room=rules.lobby_room(scope=self._scope, pool=pool))
        except DependencyRejected as exc:
            if "not_found" in str(exc.details.get("code", "")):
                return False  # no member has joined the lobby yet: LiveKit makes the room with the first
            raise
        return any(p.identity == identity and is_active(p) for p in people)

    async def _until(self, pool: str, identity: str, *, present: bool, deadline: float) -> bool:
        while time.monotonic() < deadline:
            if await self._present(pool, identity) is present:
                return True
            await asyncio.sleep(POLL_S)
        return False

    async def ready(self, pool: str, members: list[ContainerInfo]) -> list[ContainerInfo]:
        """Those of `members` waiting in the lobby now (one ListParticipants); none while the pool's LiveKit is unknown."""
        if pool not in self._creds or not members:
            return []
        try:
            people = await self._lk.list_participants(self._creds[pool], room=rules.lobby_room(scope=self._scope, pool=pool))
        except OrchestratorError:
            return []
        waiting = {p.identity for p in people if is_active(p)}
        return [m for m in members if m.labels.get(rules.POOL_IDENTITY) in waiting]

    async def joined(self, pool: str, member: ContainerInfo, *, timeout_s: float) -> bool:
        """Whether a new member reached its lobby within the bound (it loads Python and the rtc library first)."""
        identity = member.labels.get(rules.POOL_IDENTITY, "")
        try:
            return bool(identity) and await self._until(pool, identity, present=True, deadline=time.monotonic() + timeout_s)
        except OrchestratorError:
            return False  # LiveKit refused or is away: the pool removes the member and retries slowly

    async def hand_over(self, pool: str, member: ContainerInfo, data: bytes, *, timeout_s: float) -> None:
        """In the lobby → one packet → gone from the lobby (its receipt); DependencyUnavailable otherwise."""
        identity = member.labels.get(rules.POOL_IDENTITY, "")
        deadline = time.monotonic() + timeout_s
        if not identity or not await self._until(pool, identity, present=True, deadline=deadline):
            raise DependencyUnavailable(f"member {member.name} is not in its lobby", dependency="livekit")
        await self._lk.send_data(
            self._creds[pool], room=rules.lobby_room(scope=self._scope, pool=pool), data=data, identity=identity, topic=TOPIC,
        )
        if not await self._until(pool, identity, present=False, deadline=deadline):
            raise DependencyUnavailable(f"member {member.name} did not take its assignment", dependency="livekit")
