"""The one adapter for `livekit-api`: rooms, participants and tokens, per client credentials."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import aiohttp
from livekit import api

from .errors import DependencyUnavailable, PermanentError
from .models import LiveKitCredentials
from .naming import agent_identity

log = logging.getLogger(__name__)


class LiveKitRejected(PermanentError):
    """LiveKit answered, but refused: usually the client's key/secret are wrong."""

    status_code = 502
    code = "livekit_rejected"


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


def agent_token(creds: LiveKitCredentials, *, slug: str, name: str, room: str, ttl_s: int) -> str:
    """The container's only credential: join one room as kind=agent under a fixed identity."""
    return (
        api.AccessToken(creds.api_key, creds.api_secret.get_secret_value())
        .with_identity(agent_identity(slug))
        .with_name(name)
        .with_kind("agent")
        .with_ttl(dt.timedelta(seconds=ttl_s))
        .with_grants(api.VideoGrants(room_join=True, room=room, agent=True))
        .to_jwt()
    )


class LiveKitGateway:
    """Room-service calls for many tenants, sharing one HTTP session; errors mapped to ours."""

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
            if exc.status >= 500:
                raise DependencyUnavailable(f"LiveKit at {creds.url} failed {what}: {exc.message}") from None
            raise LiveKitRejected(
                f"LiveKit at {creds.url} refused {what} ({exc.code}): check the client's LiveKit API key and secret"
                if exc.status in (401, 403)
                else f"LiveKit at {creds.url} refused {what} ({exc.code}): {exc.message}",
                details={"code": exc.code},
            ) from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise DependencyUnavailable(
                f"LiveKit at {creds.url} is unreachable ({type(exc).__name__}); retry shortly", retry_after=5
            ) from None
