"""Turns what happened (reconcile passes, webhook room events, Docker deaths) into metrics and feed events.

The counting rules (`removal_category`, `failed_dependency`) are pure; `Telemetry` only applies them.
Categories and dependencies come typed from the planner and the adapters; no message text is read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from orchestrator.observability.events import EventFeed
from orchestrator.observability.metrics import Metrics
from orchestrator.rules.planner import Action, DeleteRoom, GiveUp, RemoveContainer, RestartAgent, SetRoomMetadata
from orchestrator.observability.pass_report import ActionResult, PassReport
from orchestrator.observability.starts import Starts
from orchestrator.rules.rooms import Room, RoomState

def removal_category(action: RemoveContainer) -> str:
    """orphan | duplicate | room_gone | lifetime | exited | unhealthy | never_started | closed (set by the planner)."""
    return action.category.value


def failed_dependency(result: ActionResult) -> str | None:
    """Which dependency a failed action points at: the adapter's typed error says; room calls are LiveKit's."""
    if result.ok:
        return None
    if result.dependency is not None:
        return result.dependency
    return "livekit" if isinstance(result.action, DeleteRoom | SetRoomMetadata) else "docker"


def room_state_counts(rooms: Iterable[Room]) -> dict[str, int]:
    counts = Counter(r.state.value for r in rooms)
    return {s.value: counts.get(s.value, 0) for s in RoomState}


def _where(a: Action) -> dict[str, Any]:
    """client_id, room and container of an action, whichever it names."""
    key = getattr(a, "key", None)
    return {
        "client_id": getattr(a, "client_id", None) or (key.client_id if key else None),
        "room": getattr(a, "room", None) or (key.room if key else None),
        "container": getattr(a, "name", None),
    }


def _target(a: Action) -> str:
    return getattr(a, "name", "") or f"room {getattr(a, 'room', '')}"


class Telemetry:
    """The one place that both counts and announces; wired in the app factory."""

    def __init__(self, *, metrics: Metrics, feed: EventFeed, starts: Starts | None = None) -> None:
        self.metrics = metrics
        self.feed = feed
        self.starts = starts or Starts(metrics=metrics)

    def reconcile_pass(self, report: PassReport) -> None:
        m = self.metrics
        if report.observe_error:
            m.dependency_errors.labels(dependency="docker").inc()
            self.feed.publish("reconcile", f"reconcile could not observe Docker: {report.observe_error}", ok=False)
        for dependency in report.unobservable:
            m.dependency_errors.labels(dependency=dependency).inc()
        if report.dry_run:
            return  # a plan changed nothing: no action counts, no duration of work done
        m.reconcile_seconds.observe(report.duration_s)
        for r in report.results:
            a = r.action
            m.reconcile_actions.labels(action=a.kind, result="ok" if r.ok else "failed").inc()
            if isinstance(a, RemoveContainer):
                m.reconcile_removals.labels(reason=removal_category(a)).inc()
            if isinstance(a, RestartAgent) and r.ok:
                m.restarts.inc()
            if isinstance(a, GiveUp):
                m.restart_give_ups.inc()
            if (dep := failed_dependency(r)) is not None:
                m.dependency_errors.labels(dependency=dep).inc()
            if isinstance(a, SetRoomMetadata):
                continue  # book-keeping of the grace clock: noise on a live feed
            self.feed.publish("reconcile", f"{a.kind} {_target(a)}: {a.reason}", action=a.kind, ok=r.ok, error=r.error, **_where(a))

    def room_event(self, event: str, identity: str, client_id: str, before: Room, after: Room) -> None:
        if event == "participant_joined" and identity in after.agents:
            self.starts.joined(client_id=client_id, room=after.name, identity=identity)  # a start's last stage ends
        change = f"{before.state.value} → {after.state.value}" if before.state != after.state else after.state.value
        self.feed.publish(
            "room", f"{event} {identity or '-'} in {after.name}: {change}",
            client_id=client_id, room=after.name, state=after.state.value, humans=len(after.humans), agents=len(after.agents),
        )

    def container_event(self, action: str, name: str, *, reason: str | None = None) -> None:
        if action == "reconnected":
            self.feed.publish("container", "docker event stream reconnected: catching up with one pass", event=action)
            return
        if action.startswith("die") or action == "oom":
            self.metrics.container_deaths.labels(event="oom" if action == "oom" else "die").inc()
        if reason:  # why it died or restarts, in words (an agent that cannot reach LiveKit says so)
            self.feed.publish("container", f"{action} {name}: {reason}", container=name, event=action, reason=reason)
            return
        self.feed.publish("container", f"{action} {name}", container=name, event=action)
