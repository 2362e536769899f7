"""The LiveKit seam: what the engine needs from a room service, per client credentials.

`livekit.LiveKitGateway` implements it over livekit-api; devtools/fakes.py has an in-memory
one. Errors are typed at the implementation (errors.DependencyUnavailable / DependencyRejected with
`dependency="livekit"`); a missing room is never an error.
"""

from __future__ import annotations

from typing import Any, Protocol

from orchestrator.core.models import LiveKitCredentials
from orchestrator.rules.rooms import RoomSnapshot


class RoomService(Protocol):
    async def ensure_room(
        self, creds: LiveKitCredentials, *, room: str, metadata: str, empty_timeout_s: int, departure_timeout_s: int
    ) -> object:
        """Create the room, or leave an existing one as it is (LiveKit's CreateRoom is idempotent)."""
        ...

    async def observe_rooms(
        self, creds: LiveKitCredentials, *, names: list[str], concurrency: int = 16
    ) -> dict[str, RoomSnapshot]:
        """A snapshot of each named room (at most `concurrency` calls at once); absent rooms answer `exists=False`."""
        ...

    async def update_room_metadata(self, creds: LiveKitCredentials, *, room: str, metadata: str) -> None: ...

    async def list_rooms(self, creds: LiveKitCredentials, *, names: list[str] | None = None) -> list[Any]:
        """The rooms that exist (objects with at least `name` and `metadata`)."""
        ...

    async def delete_room(self, creds: LiveKitCredentials, *, room: str) -> None:
        """Deleting a room that is already gone counts as done."""
        ...

    def user_token(self, creds: LiveKitCredentials, *, identity: str, room: str, ttl_s: int) -> str:
        """A token that joins exactly one room and nothing else."""
        ...

    def agent_token(
        self, creds: LiveKitCredentials, *, slug: str, name: str, room: str, ttl_s: int, client_id: str | None = None
    ) -> str:
        """The agent container's only credential: one room, kind agent, a fixed identity per slug."""
        ...

    async def aclose(self) -> None: ...
