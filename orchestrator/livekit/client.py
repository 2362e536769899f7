"""The one adapter for `livekit-api`: rooms, participants and tokens, per client credentials."""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import logging
from typing import Any

import aiohttp
from livekit import api

from orchestrator.core.errors import DependencyRejected, DependencyUnavailable, Unauthorized
from orchestrator.core.models import LiveKitCredentials, WebhookNotice
from orchestrator.rules.naming import agent_identity
from orchestrator.rules.room_metadata import owner
from orchestrator.rules.rooms import RoomSnapshot

log = logging.getLogger(__name__)


class LiveKitRejected(DependencyRejected):
    """LiveKit answered, but refused: usually the client's key/secret are wrong."""

    code = "livekit_rejected"

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, dependency="livekit", **kwargs)


def user_token(creds: LiveKitCredentials, *, identity: str, room: str, ttl_s: int, name: str | None = None) -> str:
    """A token that can join exactly one room, and nothing else (no admin, no room list)."""
    token = (
        api.AccessToken(creds.api_key, creds.api_secret.get_secret_value())
        .with_identity(identity)
        .with_ttl(dt.timedelta(seconds=ttl_s))
        .with_grants(api.VideoGrants(room_join=True, room=room))
    )
    if name:
        token = token.with_name(name)
    return token.to_jwt()


def lobby_token(creds: LiveKitCredentials, *, identity: str, room: str, ttl_s: int) -> str:
    """A warm pool member's only credential: join the lobby, and nothing else. No publishing (no media, no data: a
    member cannot send anything to another), no subscribing, hidden from nobody but holding nothing of a tenant."""
    return (
        api.AccessToken(creds.api_key, creds.api_secret.get_secret_value())
        .with_identity(identity)
        .with_ttl(dt.timedelta(seconds=ttl_s))
        .with_grants(api.VideoGrants(room_join=True, room=room, can_publish=False, can_publish_data=False, can_subscribe=False))
        .to_jwt()
    )


AGENT_CLIENT_ATTRIBUTE = "orchestrator.client_id"


def agent_token(
    creds: LiveKitCredentials, *, slug: str, name: str, room: str, ttl_s: int, client_id: str | None = None
) -> str:
    """The container's only credential: join one room as kind=agent under a fixed identity.

    The client id rides along as a participant attribute, so anyone watching a room can tell whose agent it is.
    """
    return (
        api.AccessToken(creds.api_key, creds.api_secret.get_secret_value())
        .with_identity(agent_identity(slug))
        .with_name(name)
        .with_kind("agent")
        .with_attributes({AGENT_CLIENT_ATTRIBUTE: client_id} if client_id else {})
        .with_ttl(dt.timedelta(seconds=ttl_s))
        .with_grants(api.VideoGrants(room_join=True, room=room, agent=True))
        .to_jwt()
    )


class LiveKitGateway:
    """room_service.RoomService over livekit-api for many tenants, sharing one HTTP session; errors mapped to ours."""

    def __init__(self, *, timeout_s: float = 5.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _api(self, creds: LiveKitCredentials) -> api.LiveKitAPI:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        # Our servers are single-region (or LiveKit Cloud with its own routing): no region failover.
        return api.LiveKitAPI(
            creds.url, creds.api_key, creds.api_secret.get_secret_value(), session=self._session, failover=False
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def user_token(self, creds: LiveKitCredentials, *, identity: str, room: str, ttl_s: int) -> str:
        return user_token(creds, identity=identity, room=room, ttl_s=ttl_s)

    def agent_token(
        self, creds: LiveKitCredentials, *, slug: str, name: str, room: str, ttl_s: int, client_id: str | None = None
    ) -> str:
        return agent_token(creds, slug=slug, name=name, room=room, ttl_s=ttl_s, client_id=client_id)

    async def ensure_room(
        self, creds: LiveKitCredentials, *, room: str, metadata: str, empty_timeout_s: int, departure_timeout_s: int
    ) -> api.Room:
        """CreateRoom is idempotent in LiveKit: an existing room is returned as it is."""
        req = api.CreateRoomRequest(
            name=room, metadata=metadata, empty_timeout=empty_timeout_s, departure_timeout=departure_timeout_s
        )
        return await self._call(creds, "create_room", lambda lk: lk.room.create_room(req))

    async def list_rooms(self, creds: LiveKitCredentials, *, names: list[str] | None = None) -> list[api.Room]:
        resp = await self._call(creds, "list_rooms", lambda lk: lk.room.list_rooms(api.ListRoomsRequest(names=names or [])))
        return list(resp.rooms)

    async def list_participants(self, creds: LiveKitCredentials, *, room: str) -> list[api.ParticipantInfo]:
        resp = await self._call(
            creds, "list_participants", lambda lk: lk.room.list_participants(api.ListParticipantsRequest(room=room))
        )
        return list(resp.participants)

    def lobby_token(self, creds: LiveKitCredentials, *, identity: str, room: str, ttl_s: int) -> str:
        return lobby_token(creds, identity=identity, room=room, ttl_s=ttl_s)

    async def send_data(self, creds: LiveKitCredentials, *, room: str, data: bytes, identity: str, topic: str) -> None:
        """One reliable server data packet to one participant (RoomService.SendData; only the API secret can send)."""
        req = api.SendDataRequest(
            room=room, data=data, kind=api.DataPacket.Kind.RELIABLE, destination_identities=[identity], topic=topic,
        )
        await self._call(creds, "send_data", lambda lk: lk.room.send_data(req))

    async def update_room_metadata(self, creds: LiveKitCredentials, *, room: str, metadata: str) -> None:
        req = api.UpdateRoomMetadataRequest(room=room, metadata=metadata)
        await self._call(creds, "update_room_metadata", lambda lk: lk.room.update_room_metadata(req))

    async def observe_rooms(
        self, creds: LiveKitCredentials, *, names: list[str], concurrency: int = 16
    ) -> dict[str, RoomSnapshot]:
        """ListRooms for `names`, then ListParticipants of each existing one (at most `concurrency` at once)."""
        if not names:
            return {}
        found = {r.name: r for r in await self.list_rooms(creds, names=names)}
        views = {n: RoomSnapshot(exists=False) for n in names if n not in found}
        gate = asyncio.Semaphore(concurrency)

        async def one(room: api.Room) -> None:
            async with gate:
                people = await self.list_participants(creds, room=room.name)
            agents = frozenset(p.identity for p in people if is_agent(p))
            humans = frozenset(p.identity for p in people if not is_agent(p))
            views[room.name] = RoomSnapshot(exists=True, humans=humans, agents=agents, metadata=room.metadata)

        await asyncio.gather(*(one(r) for r in found.values()))
        return views

    async def delete_room(self, creds: LiveKitCredentials, *, room: str) -> None:
        """Deleting a room that is already gone counts as done."""
        try:
            await self._call(creds, "delete_room", lambda lk: lk.room.delete_room(api.DeleteRoomRequest(room=room)))
        except LiveKitRejected as exc:
            if "not_found" not in str(exc.details.get("code", "")):
                raise

    async def _call(self, creds: LiveKitCredentials, what: str, fn):  # type: ignore[no-untyped-def]
        lk = self._api(creds)
        try:
            return await fn(lk)
        except api.TwirpError as exc:
            if exc.status >= 500 or exc.status in (408, 429):
                raise DependencyUnavailable(
                    f"LiveKit at {creds.url} failed {what}: {exc.message}", dependency="livekit",
                    details={"code": exc.code, "upstream_status": exc.status},
                ) from None
            raise LiveKitRejected(
                f"LiveKit at {creds.url} refused {what} ({exc.code}): check the client's LiveKit API key and secret"
                if exc.status in (401, 403)
                else f"LiveKit at {creds.url} refused {what} ({exc.code}): {exc.message}",
                details={"code": exc.code, "upstream_status": exc.status},
            ) from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise DependencyUnavailable(
                f"LiveKit at {creds.url} is unreachable ({type(exc).__name__}); retry shortly", retry_after=5,
                dependency="livekit",
            ) from None


def is_active(participant: api.ParticipantInfo) -> bool:
    """Connected with its transport up: a participant listed while still JOINING/JOINED drops a data packet."""
    return participant.state == api.ParticipantInfo.State.ACTIVE


def is_agent(participant: api.ParticipantInfo) -> bool:
    """LiveKit's own participant kind decides; identities are never parsed."""
    return participant.kind == api.ParticipantInfo.Kind.AGENT


def webhook_issuer(auth_token: str) -> str:
    """The `iss` (API key) of a webhook JWT, read *unverified* only to pick which secret verifies it."""
    try:
        payload = auth_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        iss = claims.get("iss") if isinstance(claims, dict) else None
    except (IndexError, ValueError, binascii.Error, UnicodeDecodeError):
        iss = None
    if not isinstance(iss, str) or not iss:
        raise Unauthorized("webhook Authorization is not a LiveKit-signed token")
    return iss


def verify_webhook(
    body: str, auth_token: str, *, candidates: list[LiveKitCredentials]
) -> tuple[WebhookNotice, LiveKitCredentials]:
    """Verify signature, expiry and body hash with the secret of the key in `iss`; 401 on any doubt."""
    for creds in candidates:
        receiver = api.WebhookReceiver(api.TokenVerifier(creds.api_key, creds.api_secret.get_secret_value()))
        try:
            event = receiver.receive(body, auth_token)
        except Exception:  # jwt errors, hash mismatch, bad JSON: all mean "not from this tenant's LiveKit"
            continue
        return WebhookNotice(
            id=event.id,
            event=event.event,
            room=event.room.name,
            identity=event.participant.identity,
            is_agent=is_agent(event.participant),
            created_at=int(event.created_at),
            api_key=creds.api_key,
            room_client_id=owner(event.room.metadata),
        ), creds
    raise Unauthorized("webhook signature does not verify with the secret of its API key")
