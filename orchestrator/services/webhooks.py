"""LiveKit webhooks into room events: deduplicated by event id, applied to the rooms this process tracks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from orchestrator.core.bounded import Newest
from orchestrator.core.models import WebhookNotice
from orchestrator.rules.rooms import Event, ParticipantJoined, ParticipantLeft, Room, RoomFinished, RoomRegistry

log = logging.getLogger(__name__)

REMEMBER_S = 300.0  # LiveKit retries a failed delivery within seconds; an id older than this will not come again


def room_event(notice: WebhookNotice) -> Event | None:
    """The state-machine event a webhook means, or None for events that do not change a room."""
    match notice.event:
        case "participant_joined":
            return ParticipantJoined(identity=notice.identity, is_agent=notice.is_agent)
        case "participant_left" | "participant_connection_aborted":
            return ParticipantLeft(identity=notice.identity, is_agent=notice.is_agent)
        case "room_finished":
            return RoomFinished()
    return None  # room_started, track_*, egress_*: nothing to do until a participant shows up


class WebhookIntake:
    """Remembers recent event ids (LiveKit retries deliveries) and feeds the registry."""

    def __init__(
        self, *, registry: RoomRegistry, on_change: Callable[[], None], remember: int = 10_000,
        remember_s: float = REMEMBER_S,
        on_event: Callable[[WebhookNotice, str, Room, Room], None] | None = None,
        reconciling: bool = True,
    ) -> None:
        self._registry = registry
        self._on_change = on_change
        self._on_event = on_event  # (notice, client_id, before, after): the lifecycle feed hears every room event
        # Event ids against a retried delivery: past the retry window, or the oldest over the cap, they go (memory
        # follows the event rate, not the history).
        self._seen: Newest[str, None] = Newest(cap=remember, max_age=timedelta(seconds=remember_s))
        # Without the reconcile loop in this process nothing acts on a finished room: forget it at once.
        self._forget_finished = not reconciling

    def accept(self, notice: WebhookNotice, *, client_ids: list[str], now: datetime) -> bool:
        """Apply once; returns False for a duplicate delivery."""
        if notice.id:
            if notice.id in self._seen:
                return False
            self._seen.put(notice.id, None, now=now)
        for client_id in client_ids:
            self._registry.webhooks_seen[client_id] = now  # the pipeline works: rooms may be kept by webhooks
        event = room_event(notice)
        if event is None or not notice.room:
            return True
        changed = False
        for client_id in client_ids:
            if (client_id, notice.room) not in self._registry.rooms:
                # Only rooms a trigger launched into, or a pass saw a container of ours in, are tracked: a
                # shared LiveKit project reports every room, and those entries would never be cleaned up.
                continue
            before, after = self._registry.apply(client_id, notice.room, event, now=now)
            if self._forget_finished and isinstance(event, RoomFinished):
                self._registry.forget(client_id, notice.room)
            changed |= (before.state, before.since) != (after.state, after.since)
            if self._on_event is not None:
                self._on_event(notice, client_id, before, after)
            log.info(
                "webhook %s %s: %s → %s", notice.event, notice.identity or "-", before.state.value, after.state.value,
                extra={"client_id": client_id, "room": notice.room, "event_id": notice.id},
            )
        if changed:
            self._on_change()
        return True

    def __len__(self) -> int:
        """Event ids remembered against a retried delivery."""
        return len(self._seen)
