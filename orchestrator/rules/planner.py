"""The reconciler's rules as one pure function: plan(observed, rooms, settings, now) → actions.

No side effects and no clock: everything it needs is passed in, so every rule is a table test.
It only ever names containers that carry this deployment's scope label.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from orchestrator.core.models import ContainerInfo, ContainerKey, ContainerStatus, Health
from orchestrator.rules.naming import Label, agent_identity, container_name, key_from_labels, label_time
from orchestrator.rules import room_metadata
from orchestrator.rules.rooms import Due, Room, RoomSnapshot, RoomState, deadline, due
from orchestrator.settings import Settings

RoomKey = tuple[str, str]  # (client id, room name)


@dataclass(frozen=True)
class Observation:
    """One observation: this scope's containers (one list call) plus LiveKit and the tenant store.

    A room missing from `rooms` was not observable (its LiveKit did not answer): room rules skip it.
    A client in neither `agents_by_client` nor `unknown_clients` could not be looked up: the tenant rule skips it.
    """

    at: datetime
    containers: tuple[ContainerInfo, ...]
    rooms: Mapping[RoomKey, RoomSnapshot] = field(default_factory=dict)
    agents_by_client: Mapping[str, frozenset[str]] = field(default_factory=dict)
    unknown_clients: frozenset[str] = frozenset()
    polled: frozenset[RoomKey] = frozenset()  # rooms LiveKit was asked about in this observation (others: webhook-fed)


@dataclass(frozen=True)
class RestartRecord:
    attempts: int
    last_at: datetime


# ---- actions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    reason: str

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        body = {
            k: v.model_dump() if hasattr(v, "model_dump") else v.value if isinstance(v, enum.Enum) else v
            for k, v in asdict(self).items()
        }
        return {"kind": self.kind, **body}


class Removal(str, enum.Enum):
    """Why a container goes, as a small stable set (metrics labels, alerts); `reason` is the human sentence."""

    orphan = "orphan"  # labels incomplete, unknown client or agent
    duplicate = "duplicate"
    room_gone = "room_gone"
    lifetime = "lifetime"
    exited = "exited"
    unhealthy = "unhealthy"
    never_started = "never_started"
    closed = "closed"  # the room's end: grace expired, startup timeout with no human, operator close


@dataclass(frozen=True)
class RemoveContainer(Action):
    """Stop gracefully, then remove; the last log lines are kept in our log first.

    The executor acts on `container_id`, not the name: a trigger may have replaced the container
    under the same name since the observation, and that new one must survive this pass.
    """

    category: Removal = Removal.closed
    name: str = ""
    container_id: str = ""
    client_id: str = ""
    room: str = ""


@dataclass(frozen=True)
class RestartAgent(Action):
    """Replace a crashed/unhealthy/absent agent while humans wait (attempt counts toward the cap)."""

    name: str = ""
    container_id: str = ""
    key: ContainerKey | None = None
    mode: str = "voice"
    attempt: int = 1


@dataclass(frozen=True)
class GiveUp(Action):
    """The restart cap is reached: remove the container (by id, as RemoveContainer) and report loudly."""

    name: str = ""
    container_id: str = ""
    key: ContainerKey | None = None
    attempts: int = 0


@dataclass(frozen=True)
class DeleteRoom(Action):
    client_id: str = ""
    room: str = ""


@dataclass(frozen=True)
class SetRoomMetadata(Action):
    """Persist (or clear) the grace start in the LiveKit room, so a restart never closes a room early."""

    client_id: str = ""
    room: str = ""
    metadata: str = ""


# ---- the rules ----------------------------------------------------------------------------


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def created(c: ContainerInfo) -> datetime | None:
    """Our own created-at label first (exact), the engine's time otherwise."""
    return label_time(c.labels.get(Label.CREATED_AT)) or _aware(c.created_at)


def backoff_s(attempts: int, *, settings: Settings) -> float:
    """Wait before restart number attempts+1: none for the first, then base·2^(n-1), capped."""
    if attempts <= 0:
        return 0.0
    return min(settings.restart_backoff_s * 2 ** (attempts - 1), settings.restart_backoff_max_s)


def _keeper(key: ContainerKey, cs: list[ContainerInfo]) -> ContainerInfo:
    """Of several containers claiming one key keep the running, healthy, canonically named, newest one."""
    canonical = container_name(key)
    epoch = datetime.min.replace(tzinfo=timezone.utc)
    return max(cs, key=lambda c: (
        c.status is ContainerStatus.running, c.health is not Health.unhealthy, c.name == canonical, created(c) or epoch, c.name,
    ))


def plan(
    observed: Observation,
    rooms: Mapping[RoomKey, Room],
    settings: Settings,
    now: datetime,
    *,
    restarts: Mapping[ContainerKey, RestartRecord] | None = None,
) -> list[Action]:
    """The actions that bring Docker (and LiveKit rooms we own) to what should exist. Pure."""
    restarts = restarts or {}
    actions: list[Action] = []
    by_key: dict[ContainerKey, list[ContainerInfo]] = defaultdict(list)

    for c in observed.containers:
        if not _ours(c, settings):
            continue  # another deployment's container, or one already being removed: never touched
        key = key_from_labels(c.labels)
        if key is None:
            actions.append(RemoveContainer(
                reason="labels incomplete (no client/agent/room)", category=Removal.orphan, name=c.name, container_id=c.id
            ))
        elif key.client_id in observed.unknown_clients:
            actions.append(_remove(c, key, f"unknown client '{key.client_id}'", Removal.orphan))
        elif key.client_id in observed.agents_by_client and key.agent_slug not in observed.agents_by_client[key.client_id]:
            actions.append(_remove(c, key, f"unknown agent '{key.agent_slug}' for client '{key.client_id}'", Removal.orphan))
        else:
            by_key[key].append(c)

    survivors: dict[ContainerKey, ContainerInfo] = {}
    for key, cs in by_key.items():
        keep = _keeper(key, cs)
        survivors[key] = keep
        actions.extend(_remove(c, key, f"duplicate of {keep.name} for the same key", Removal.duplicate) for c in cs if c is not keep)

    by_room: dict[RoomKey, list[tuple[ContainerKey, ContainerInfo]]] = defaultdict(list)
    for k, c in survivors.items():
        by_room[(k.client_id, k.room)].append((k, c))
    closed: set[RoomKey] = set()
    for room_key, members in sorted(by_room.items()):
        view, room = observed.rooms.get(room_key), rooms.get(room_key)
        if view is None or room is None:
            continue  # LiveKit not observable for this client: no room rule can be decided safely
        if not view.exists:
            closed.add(room_key)
            actions.extend(_remove(c, k, "room finished or gone in LiveKit", Removal.room_gone) for k, c in members)
        elif room.state is RoomState.CLOSING or due(
            room, now=now, grace_s=settings.grace_period_s, startup_timeout_s=settings.agent_startup_timeout_s
        ) is Due.GRACE_EXPIRED:
            why = (
                (room.reason or "closing")
                if room.state is RoomState.CLOSING
                else f"grace period ({settings.grace_period_s:g} s) expired with no human"
            )
            closed.add(room_key)
            actions.extend(_closing(room_key, members, why))
        else:
            actions.extend(_grace_metadata(room, view))

    for key, c in sorted(survivors.items(), key=lambda kc: kc[1].name):
        room_key = (key.client_id, key.room)
        if room_key in closed:
            continue
        view, room = observed.rooms.get(room_key), rooms.get(room_key)
        humans = room.humans if (view is not None and room is not None) else None  # None: unknown
        born = created(c)
        age = (now - born).total_seconds() if born else 0.0
        if age > settings.max_container_lifetime_s and humans is not None and not humans:
            # Only when nobody is in the call: a call is never cut short (the grace rule ends it after the
            # call). An old agent that crashes mid-call is relaunched by the crash rule below, fresh token and all.
            actions.append(_remove(c, key, f"older than the maximum lifetime ({settings.max_container_lifetime_s:g} s)", Removal.lifetime))
        elif c.status.gone:  # exited, dead, or paused by someone (a frozen agent serves nobody)
            crashed = c.exit_code != 0
            how = f"crashed (exit {c.exit_code})" if c.exit_code is not None else c.status.value
            gone = f"exited (code {c.exit_code})" if c.exit_code is not None else c.status.value
            # A room still waiting for its agent (a trigger was just answered) needs it back, whatever the exit code;
            # so does a young agent that failed before anyone came (a process that did not see the trigger, e.g. a
            # separate reconciler, knows the start by the agent's age): it is retried, and shows why, until its
            # restarts run out, as a cold agent restarted in place by its engine is.
            fresh_failure = crashed and humans is not None and not humans and age < settings.agent_startup_timeout_s
            awaited = (room is not None and room.state is RoomState.STARTING) or fresh_failure
            if crashed and humans:
                actions.extend(_restart(c, key, f"{how} with humans in the room", restarts, settings, now))
            elif awaited and view is not None:
                actions.extend(_restart(c, key, f"{gone} while its room waits for it", restarts, settings, now))
            elif humans is not None or not (crashed or awaited):
                actions.append(_remove(c, key, gone, Removal.exited))
            # crashed or awaited, and LiveKit not observable: wait for a pass that can see it
        elif c.status is ContainerStatus.running and c.health is Health.unhealthy:
            if humans:
                actions.extend(_restart(c, key, "unhealthy with humans in the room", restarts, settings, now))
            elif humans is not None:
                actions.append(_remove(c, key, "unhealthy", Removal.unhealthy))
        elif (
            c.status is ContainerStatus.running
            and room is not None
            and view is not None
            and due(room, now=now, grace_s=settings.grace_period_s, startup_timeout_s=settings.agent_startup_timeout_s)
            is Due.STARTUP_TIMEOUT
            and agent_identity(key.agent_slug) not in room.agents
            and age >= settings.agent_startup_timeout_s
        ):
            why = f"agent did not join within {settings.agent_startup_timeout_s:g} s"
            if humans:
                actions.extend(_restart(c, key, why, restarts, settings, now))
            else:
                actions.append(_remove(c, key, why, Removal.closed))
        elif c.status is ContainerStatus.created and age > max(settings.agent_startup_timeout_s, settings.container_start_timeout_s):
            actions.append(_remove(c, key, "created but never started", Removal.never_started))
    return actions


def room_close(containers: Iterable[ContainerInfo], room_key: RoomKey, settings: Settings, *, why: str) -> list[Action]:
    """A room closed on request, now (services.reconciler.close_now): this room's agents of ours, then the room. Pure."""
    keyed = [(k, c) for c in containers if _ours(c, settings) and (k := key_from_labels(c.labels)) is not None]
    return _closing(room_key, [(k, c) for k, c in keyed if (k.client_id, k.room) == room_key], why)


def _ours(c: ContainerInfo, settings: Settings) -> bool:
    """This deployment's managed container, not already being removed: the only kind a plan acts on."""
    return (c.labels.get(Label.SCOPE) == settings.scope and c.labels.get(Label.MANAGED) == "true"
            and c.status is not ContainerStatus.removing)


def _closing(room_key: RoomKey, members: list[tuple[ContainerKey, ContainerInfo]], why: str) -> list[Action]:
    """Its agents removed, then the room deleted: run as one unit under the room's lock (Executor.close_room)."""
    return [*(_remove(c, k, why, Removal.closed) for k, c in members), DeleteRoom(reason=why, client_id=room_key[0], room=room_key[1])]


def _remove(c: ContainerInfo, key: ContainerKey, reason: str, category: Removal) -> RemoveContainer:
    return RemoveContainer(
        reason=reason, category=category, name=c.name, container_id=c.id, client_id=key.client_id, room=key.room
    )


def _restart(
    c: ContainerInfo,
    key: ContainerKey,
    reason: str,
    restarts: Mapping[ContainerKey, RestartRecord],
    settings: Settings,
    now: datetime,
) -> list[Action]:
    record = restarts.get(key)
    attempts = record.attempts if record else 0
    if attempts >= settings.restart_max_attempts:
        return [GiveUp(reason=f"{reason}; gave up after {attempts} restarts", name=c.name, container_id=c.id, key=key, attempts=attempts)]
    if record and now < record.last_at + timedelta(seconds=backoff_s(attempts, settings=settings)):
        return []  # backing off; the loop wakes at next_deadline
    mode = c.labels.get(Label.MODE, "voice")
    return [RestartAgent(reason=reason, name=c.name, container_id=c.id, key=key, mode=mode, attempt=attempts + 1)]


def _grace_metadata(room: Room, view: RoomSnapshot) -> list[Action]:
    """Keep the persisted grace start equal to ours: set while in grace, cleared otherwise."""
    persisted = room_metadata.grace_started(view.metadata)
    wanted = room.since if room.state is RoomState.GRACE_PERIOD else None
    if persisted == wanted:
        return []
    metadata = room_metadata.with_grace(view.metadata, wanted)
    if metadata is None:
        return []  # not our JSON: fall back to "grace restarts at observation" after a restart
    what = "persist grace start" if wanted else "clear grace start (a human is back)"
    return [SetRoomMetadata(reason=what, client_id=room.client_id, room=room.name, metadata=metadata)]


def next_deadline(
    rooms: Mapping[RoomKey, Room], restarts: Mapping[ContainerKey, RestartRecord], settings: Settings
) -> datetime | None:
    """The earliest moment a rule will fire by the clock alone (grace, startup, restart backoff)."""
    times = [
        t
        for r in rooms.values()
        if (t := deadline(r, grace_s=settings.grace_period_s, startup_timeout_s=settings.agent_startup_timeout_s))
    ]
    times += [
        rec.last_at + timedelta(seconds=backoff_s(rec.attempts, settings=settings))
        for rec in restarts.values()
        if rec.attempts < settings.restart_max_attempts
    ]
    return min(times) if times else None
