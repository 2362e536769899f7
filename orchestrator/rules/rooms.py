"""The room lifecycle state machine (pure): EMPTY → STARTING → ACTIVE → GRACE_PERIOD → CLOSING.

Nothing here does I/O or reads a clock: every function takes `now`. A room is keyed by
(client id, room name) because two tenants may share one LiveKit project. Humans and agents
are told apart by LiveKit's participant kind, never by identity prefix.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from orchestrator.rules import room_metadata


class RoomState(str, enum.Enum):
    EMPTY = "empty"
    STARTING = "starting"  # an agent was launched (or a human waits) but no agent has joined yet
    ACTIVE = "active"  # humans and at least one agent present
    GRACE_PERIOD = "grace_period"  # no human present; closes at since + grace unless one (re)joins
    CLOSING = "closing"  # terminal: containers go, the LiveKit room is deleted


class Due(str, enum.Enum):
    """What the clock says must happen to a room now."""

    GRACE_EXPIRED = "grace_expired"
    STARTUP_TIMEOUT = "startup_timeout"


@dataclass(frozen=True)
class Room:
    client_id: str
    name: str
    state: RoomState = RoomState.EMPTY
    humans: frozenset[str] = frozenset()
    agents: frozenset[str] = frozenset()
    since: datetime | None = None  # when STARTING or GRACE_PERIOD began (the clock of `due`)
    updated_at: datetime | None = None  # last event applied; an older observation must not undo it
    reason: str = ""  # why CLOSING
    confirmed_at: datetime | None = None  # last evidence the room exists in LiveKit (our create, a webhook, a poll)
    observed_at: datetime | None = None  # last LiveKit poll of this room (membership + metadata)
    metadata: str = ""  # the room metadata as last polled or written by us

    @property
    def key(self) -> tuple[str, str]:
        return (self.client_id, self.name)


# ---- events -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentLaunched:
    """The trigger created or reused an agent container for this room."""


@dataclass(frozen=True)
class ParticipantJoined:
    identity: str
    is_agent: bool


@dataclass(frozen=True)
class ParticipantLeft:
    identity: str
    is_agent: bool


@dataclass(frozen=True)
class RoomFinished:
    """LiveKit closed the room (room_finished) or it no longer exists."""


@dataclass(frozen=True)
class CloseRequested:
    reason: str = "requested"


@dataclass(frozen=True)
class RoomSnapshot:
    """LiveKit's view of one room at one moment (ListRooms + ListParticipants; humans vs agents by kind)."""

    exists: bool
    humans: frozenset[str] = frozenset()
    agents: frozenset[str] = frozenset()
    metadata: str = ""


@dataclass(frozen=True)
class RoomObserved:
    """A fresh snapshot from LiveKit plus what the engine runs for the room.

    `launched_at` is the creation time of the room's oldest live agent container; the grace start
    persisted in the snapshot's metadata (room_metadata) survives our restarts.
    """

    snapshot: RoomSnapshot
    has_containers: bool = True
    launched_at: datetime | None = None


@dataclass(frozen=True)
class MetadataWritten:
    """We wrote the room metadata (grace start persisted or cleared): the view of it follows."""

    metadata: str


Event = AgentLaunched | ParticipantJoined | ParticipantLeft | RoomFinished | CloseRequested | RoomObserved | MetadataWritten


def _settle(room: Room, *, now: datetime, grace_hint: datetime | None = None, start_hint: datetime | None = None) -> Room:
    """Derive the state from who is present, keeping the clock of a state that continues."""
    if room.state is RoomState.CLOSING:
        return room
    if room.humans and room.agents:
        return replace(room, state=RoomState.ACTIVE, since=None)
    if room.humans:
        # A human waits for an agent (not launched yet, starting, or crashed): the startup clock runs.
        since = room.since if room.state is RoomState.STARTING else (start_hint or now)
        return replace(room, state=RoomState.STARTING, since=since)
    if room.agents or room.state in (RoomState.ACTIVE, RoomState.GRACE_PERIOD):
        # Nobody human is here: the grace clock runs (it never restarts while it is running).
        since = room.since if room.state is RoomState.GRACE_PERIOD else (grace_hint or now)
        return replace(room, state=RoomState.GRACE_PERIOD, since=since)
    if room.state is RoomState.STARTING:
        return room
    return replace(room, state=RoomState.EMPTY, since=None)


def apply(room: Room, event: Event, *, now: datetime) -> Room:
    """The one transition function: (room, event, now) → room. No side effects."""
    if room.state is RoomState.CLOSING:
        if isinstance(event, AgentLaunched):
            # A new trigger after (or during) a close starts the room afresh.
            return Room(client_id=room.client_id, name=room.name, state=RoomState.STARTING, since=now, updated_at=now)
        return room  # terminal: the executor is already tearing it down
    if isinstance(event, MetadataWritten):
        return replace(room, metadata=event.metadata)  # bookkeeping, not news: updated_at stays
    r = replace(room, updated_at=now)
    if isinstance(event, ParticipantJoined | ParticipantLeft):
        r = replace(r, confirmed_at=now)  # a webhook comes from the room itself
    match event:
        case AgentLaunched():
            if r.state is RoomState.EMPTY:
                return replace(r, state=RoomState.STARTING, since=now)
            if r.state is RoomState.GRACE_PERIOD:
                # A fresh trigger means a user is on the way: give them a whole grace period.
                return replace(r, since=now)
            return r
        case ParticipantJoined(identity=identity, is_agent=True):
            return _settle(replace(r, agents=r.agents | {identity}), now=now)
        case ParticipantJoined(identity=identity, is_agent=False):
            return _settle(replace(r, humans=r.humans | {identity}), now=now)
        case ParticipantLeft(identity=identity, is_agent=True):
            return _settle(replace(r, agents=r.agents - {identity}), now=now)
        case ParticipantLeft(identity=identity, is_agent=False):
            return _settle(replace(r, humans=r.humans - {identity}), now=now)
        case RoomFinished():
            return replace(r, state=RoomState.CLOSING, since=now, reason="room finished")
        case CloseRequested(reason=reason):
            return replace(r, state=RoomState.CLOSING, since=now, reason=reason)
        case RoomObserved() as obs:
            return _observe(room, obs, now=now)
    raise TypeError(f"unknown room event {event!r}")


def _observe(room: Room, obs: RoomObserved, *, now: datetime) -> Room:
    """Resync membership from LiveKit. The observation does not bump `updated_at` (it is not news)."""
    seen = obs.snapshot
    if not seen.exists:
        return replace(room, state=RoomState.CLOSING, since=now, reason="room gone from LiveKit", observed_at=now)
    r = replace(room, humans=seen.humans, agents=seen.agents, observed_at=now, confirmed_at=now, metadata=seen.metadata)
    if not seen.humans and not seen.agents and obs.has_containers and r.state is RoomState.EMPTY:
        # Launched before we knew (e.g. after our restart): the container's age is the startup clock.
        return replace(r, state=RoomState.STARTING, since=obs.launched_at or now)
    if not seen.humans and not seen.agents and not obs.has_containers:
        return replace(r, state=RoomState.EMPTY, since=None) if r.state is not RoomState.GRACE_PERIOD else r
    # After a restart the grace start comes from the room metadata, else from now: never earlier. A trigger
    # stamped into a room in grace restarts its grace (another process answered someone who is on the way).
    persisted = max((t for t in (room_metadata.grace_started(seen.metadata), room_metadata.triggered(seen.metadata)) if t),
                    default=None)
    grace_hint = min(persisted, now) if persisted else None
    return _settle(r, now=now, grace_hint=grace_hint, start_hint=obs.launched_at)


def known_to_exist(room: Room, *, now: datetime, trust_s: float) -> bool:
    """A live room with recent evidence of existing: a trigger need not ask LiveKit to create it again."""
    return (
        room.state in (RoomState.STARTING, RoomState.ACTIVE, RoomState.GRACE_PERIOD)
        and room.confirmed_at is not None
        and (now - room.confirmed_at).total_seconds() < trust_s
    )


REPEAT_TRUST_S = 5.0  # a trigger repeated this soon after our own room claim may answer before claiming again


def claim_may_follow(room: Room | None, *, now: datetime, trust_s: float, grace_s: float, startup_timeout_s: float) -> bool:
    """Whether a trigger may answer first and claim its room right after (a page reload before the user joined).

    Only for a room this process claimed moments ago (confirmed within REPEAT_TRUST_S) whose grace or startup clock
    is younger than half its length: whatever another process may hold, no close of this room can come due until
    long after the deferred claim has stamped its trigger into the room metadata (room_claim.RoomClaims.claimed).
    A room in a call needs no claim at all (known_to_exist); a room closing, or any other, is claimed first.
    """
    if room is None or room.state not in (RoomState.STARTING, RoomState.GRACE_PERIOD) or room.confirmed_at is None:
        return False
    if (now - room.confirmed_at).total_seconds() >= min(REPEAT_TRUST_S, trust_s):
        return False
    clock = min(grace_s, startup_timeout_s) if startup_timeout_s > 0 else grace_s
    return room.since is None or (now - room.since).total_seconds() < clock / 2


def needs_poll(room: Room | None, *, now: datetime, resync_s: float, webhooks_flowing: bool) -> bool:
    """Whether the reconciler must ask LiveKit about this room, or may trust what webhooks keep current.

    Webhooks are trusted only once they have been seen for the room's client (proof they are set up),
    and only for a room polled once within `resync_s` (the slow sweep that repairs a lost webhook).
    """
    if room is None or room.observed_at is None or not webhooks_flowing or room.state is RoomState.CLOSING:
        return True
    return (now - room.observed_at).total_seconds() >= resync_s


def due(room: Room, *, now: datetime, grace_s: float, startup_timeout_s: float) -> Due | None:
    """What the clock demands now; `startup_timeout_s` 0 disables the startup rule."""
    if room.since is None:
        return None
    if room.state is RoomState.GRACE_PERIOD and now >= room.since + timedelta(seconds=grace_s):
        return Due.GRACE_EXPIRED
    if (
        room.state is RoomState.STARTING
        and startup_timeout_s > 0
        and now >= room.since + timedelta(seconds=startup_timeout_s)
    ):
        return Due.STARTUP_TIMEOUT
    return None


def deadline(room: Room, *, grace_s: float, startup_timeout_s: float) -> datetime | None:
    """When `due` will next fire for this room, so the loop can wake exactly then."""
    if room.since is None:
        return None
    if room.state is RoomState.GRACE_PERIOD:
        return room.since + timedelta(seconds=grace_s)
    if room.state is RoomState.STARTING and startup_timeout_s > 0:
        return room.since + timedelta(seconds=startup_timeout_s)
    return None


def grace_remaining(room: Room, *, now: datetime, grace_s: float) -> float | None:
    if room.state is not RoomState.GRACE_PERIOD or room.since is None:
        return None
    return max(0.0, (room.since + timedelta(seconds=grace_s) - now).total_seconds())


@dataclass
class RoomRegistry:
    """The live view of rooms, fed by webhooks and reconcile observations; rebuilt from both after a restart."""

    rooms: dict[tuple[str, str], Room] = field(default_factory=dict)
    webhooks_seen: dict[str, datetime] = field(default_factory=dict)  # client id -> last verified webhook

    def get(self, client_id: str, name: str) -> Room:
        return self.rooms.get((client_id, name)) or Room(client_id=client_id, name=name)

    def apply(self, client_id: str, name: str, event: Event, *, now: datetime) -> tuple[Room, Room]:
        """Apply one event; returns (before, after) so callers can react to a change."""
        before = self.get(client_id, name)
        after = apply(before, event, now=now)
        self.rooms[(client_id, name)] = after
        return before, after

    def confirm(self, client_id: str, name: str, *, now: datetime) -> None:
        """LiveKit just answered for this room (CreateRoom): evidence that it exists."""
        room = self.get(client_id, name)
        self.rooms[(client_id, name)] = replace(room, confirmed_at=now)

    def unconfirm(self, client_id: str, name: str) -> None:
        """Its agent died: the room may be gone with it (a LiveKit restart), so the next trigger asks LiveKit."""
        if (room := self.rooms.get((client_id, name))) is not None:
            self.rooms[(client_id, name)] = replace(room, confirmed_at=None)

    def forget(self, client_id: str, name: str) -> None:
        self.rooms.pop((client_id, name), None)
