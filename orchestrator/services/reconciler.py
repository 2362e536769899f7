"""Observe → plan → execute: one pass (`run_once`, also the cron mode) and the loop around it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from orchestrator.core.clock import utcnow
from orchestrator.core.errors import NotFound, OrchestratorError
from orchestrator.core.locks import KeyedLocks
from orchestrator.core.models import ContainerInfo, ContainerKey
from orchestrator.core.waiting import wait_event
from orchestrator.livekit.service import RoomService
from orchestrator.observability.pass_report import ActionResult, PassReport, log_fields
from orchestrator.rules import ownership
from orchestrator.rules.agent_states import GaveUpRecord
from orchestrator.rules.naming import agent_identity, key_from_labels
from orchestrator.rules.planner import GiveUp, Observation, RestartAgent, RestartRecord, RoomKey, SetRoomMetadata, created, next_deadline, plan, room_close
from orchestrator.rules.rooms import (
    CloseRequested,
    MetadataWritten,
    RoomObserved,
    RoomRegistry,
    RoomSnapshot,
    RoomState,
    grace_remaining,
    needs_poll,
)
from orchestrator.rules.view import AgentView
from orchestrator.runtime import ContainerRuntime
from orchestrator.services.executor import Executor, Launcher, dependency_of
from orchestrator.services.signing_key import signing_key
from orchestrator.settings import Settings
from orchestrator.tenants import TenantStore

log = logging.getLogger(__name__)

# A room whose last event (a trigger, a close, a webhook) is younger than this is kept by a pass that sees no container
# of it: longer than the watch's lag behind a create (milliseconds; seconds on a loaded engine).
RECENT_ROOM_S = 10.0


class ObservationFailed(Exception):
    """Docker itself could not be listed: nothing can be planned (cron exit code 2)."""


class Reconciler:
    """Keeps Docker equal to what should exist. One pass at a time; passes are cheap to repeat."""

    def __init__(
        self,
        *,
        settings: Settings,
        runtime: ContainerRuntime,
        tenants: TenantStore,
        livekit: RoomService,
        launcher: Launcher,
        registry: RoomRegistry | None = None,
        clock: Callable[[], datetime] = utcnow,
        on_pass: Callable[["PassReport"], None] | None = None,
        room_locks: KeyedLocks | None = None,
        view: AgentView | None = None,
    ) -> None:
        self.settings = settings
        self._on_pass = on_pass  # metrics and the lifecycle feed hear every finished pass (dry runs too)
        self.registry = registry or RoomRegistry()
        self.restarts: dict[ContainerKey, RestartRecord] = {}
        self.gave_up: dict[ContainerKey, GaveUpRecord] = {}  # the client API reports these (last 1000 kept)
        self.heartbeat: datetime | None = None  # end of the last loop iteration; /healthz reads it
        self.started_at: datetime | None = None  # when the loop began: a first pass that never ends is a stall too
        self.last_report: PassReport | None = None
        self.passes = 0
        self._runtime = runtime
        self._tenants = tenants
        self._livekit = livekit
        self._view = view  # watch-fed containers; None (cron mode) or unsynced → one list call
        self._clock = clock
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.executor = Executor(
            settings=settings, runtime=runtime, tenants=tenants, livekit=livekit, launcher=launcher,
            registry=self.registry, clock=clock, view=view,
            # shared with the trigger (TriggerService.room_locks): a close and a claim of one room never overlap
            room_locks=room_locks if room_locks is not None else KeyedLocks(),
        )

    # ---- observe --------------------------------------------------------------------------

    async def observe(self, *, fresh: bool = True) -> tuple[Observation, list[tuple[str, str]]]:
        """Containers (the watch-fed view unless `fresh`, else one labelled list call), then per client: tenant
        lookup and LiveKit ListRooms/ListParticipants for the rooms webhooks do not keep current."""
        at, s = self._clock(), self.settings
        if not fresh and self._view is not None and self._view.synced:
            containers = list(self._view.state.containers())  # watch-fed: no list call
        else:
            try:
                containers = await self._runtime.list_managed(scope=s.scope)
            except OrchestratorError as exc:
                raise ObservationFailed(exc.message) from None
        rooms_by_client: dict[str, set[str]] = {}
        for c in containers:
            if (key := key_from_labels(c.labels)) is not None:
                rooms_by_client.setdefault(key.client_id, set()).add(key.room)
        warnings: list[tuple[str, str]] = []  # (dependency, message)
        views: dict[RoomKey, RoomSnapshot] = {}
        agents: dict[str, frozenset[str]] = {}
        unknown: set[str] = set()
        polled: set[RoomKey] = set()

        async def one(client_id: str, names: set[str]) -> None:
            try:
                client = await self._tenants.get_client(client_id)
                agents[client_id] = frozenset(await self._tenants.list_agent_slugs(client))
            except NotFound:
                unknown.add(client_id)
                return
            except OrchestratorError as exc:
                warnings.append((dependency_of(exc, "tenants"), f"tenant store: {exc.message}"))
                return
            flowing = client_id in self.registry.webhooks_seen
            poll = sorted(
                n for n in names
                if needs_poll(self.registry.rooms.get((client_id, n)), now=at, resync_s=s.room_resync_s, webhooks_flowing=flowing)
            )
            for n in set(names) - set(poll):  # kept current by webhooks since its last poll
                room = self.registry.rooms[(client_id, n)]
                views[(client_id, n)] = RoomSnapshot(exists=True, humans=room.humans, agents=room.agents, metadata=room.metadata)
            try:
                found = await self._livekit.observe_rooms(client.livekit, names=poll, concurrency=s.livekit_poll_concurrency)
            except OrchestratorError as exc:
                warnings.append((dependency_of(exc, "livekit"), f"LiveKit for client {client_id}: {exc.message}"))
                return
            signer = signing_key(s)
            for name, snap in list(found.items()):
                # A room of this name that is provably someone else's is not ours to observe: its people are not
                # shown to this client, and our leftover agent in it counts as having no room (planner: removed).
                if snap.exists and (why := ownership.someone_elses(signer, snap.metadata, client_id=client_id, room=name)):
                    log.warning("room %s of client %s: %s; treating it as gone", name, client_id, why,
                                extra={"client_id": client_id, "room": name})
                    found[name] = RoomSnapshot(exists=False)
            polled.update((client_id, name) for name in found)
            views.update({(client_id, name): v for name, v in found.items()})

        await asyncio.gather(*(one(cid, names) for cid, names in rooms_by_client.items()))
        return (
            Observation(
                at=at, containers=tuple(containers), rooms=views, agents_by_client=agents,
                unknown_clients=frozenset(unknown), polled=frozenset(polled),
            ),
            warnings,
        )

    def _sync_registry(self, observed: Observation) -> None:
        """Merge the observation into the registry; an event newer than the observation wins."""
        live: dict[RoomKey, list[datetime]] = {}
        for c in observed.containers:
            if (key := key_from_labels(c.labels)) is not None and not c.status.gone:
                live.setdefault((key.client_id, key.room), []).append(created(c) or observed.at)
        for (client_id, name), view in observed.rooms.items():
            if (client_id, name) not in observed.polled:
                continue  # the registry is where this view came from: nothing new to merge
            room = self.registry.get(client_id, name)
            if room.updated_at is not None and room.updated_at > observed.at:
                continue
            event = RoomObserved(
                view, has_containers=(client_id, name) in live,
                launched_at=min(live[(client_id, name)]) if (client_id, name) in live else None,
            )
            self.registry.apply(client_id, name, event, now=observed.at)
        owned = {(key.client_id, key.room) for c in observed.containers if (key := key_from_labels(c.labels))}
        settled_before = observed.at - timedelta(seconds=RECENT_ROOM_S)
        for room_key, room in list(self.registry.rooms.items()):
            # Rooms without a container of ours are not ours to track (webhooks cover the whole project). But not a
            # room that changed a moment ago: the watch-fed view may not show a container created just now, and
            # forgetting its room then lost an operator's close (the room came back STARTING, its agent ran on).
            if room_key not in owned and (room.updated_at is None or room.updated_at <= settled_before):
                self.registry.forget(*room_key)

    # ---- one pass -------------------------------------------------------------------------

    async def run_once(self, *, dry_run: bool = False, fresh: bool = True) -> PassReport:
        """One pass. The loop passes `fresh=False` (the view is enough); an explicit pass (an operator, cron) lists."""
        async with self._lock:
            started = time.monotonic()
            report = PassReport(started_at=self._clock(), dry_run=dry_run)
            try:
                observed, found = await self.observe(fresh=fresh)
                report.unobservable = [dependency for dependency, _ in found]
                report.warnings = [message for _, message in found]
            except ObservationFailed as exc:
                report.observe_error = str(exc)
                log.error("reconcile: could not observe Docker: %s", exc)
                self.last_report = report
                self._report(report)
                return report
            self._sync_registry(observed)
            now = self._clock()
            actions = plan(observed, self.registry.rooms, self.settings, now, restarts=self.restarts)
            report.containers, report.rooms = len(observed.containers), len(observed.rooms)
            if dry_run:
                report.results = [ActionResult(a, ok=True) for a in actions]
            else:
                report.results = await self.executor.execute_all(actions, observed_at=observed.at)
                self._after(observed, report.results, now)
            report.duration_s = time.monotonic() - started
            self.passes += 1
            self.last_report = report
            if actions:
                log.info(
                    "reconcile: %d actions (%d failed) in %.2fs", len(actions), report.failed, report.duration_s,
                    extra={"actions": [r.to_dict() for r in report.results]},
                )
            self._report(report)
            return report

    def _report(self, report: PassReport) -> None:
        if self._on_pass is None:
            return
        try:
            self._on_pass(report)
        except Exception:  # telemetry must never break a pass
            log.exception("reconcile pass observer failed")

    def _after(self, observed: Observation, results: list[ActionResult], now: datetime) -> None:
        """Book-keeping after executing: restart attempts, closed rooms forgotten."""
        for r in results:
            a = r.action
            if isinstance(a, RestartAgent) and a.key is not None:
                # A failed restart counts too: otherwise a broken image would be retried without backoff.
                self.restarts[a.key] = RestartRecord(attempts=a.attempt, last_at=now)
            if isinstance(a, GiveUp) and a.key is not None and r.ok:
                self.gave_up[a.key] = GaveUpRecord(reason=a.reason, at=now, attempts=a.attempts)
                while len(self.gave_up) > 1000:
                    del self.gave_up[next(iter(self.gave_up))]
            if isinstance(a, SetRoomMetadata) and r.ok:
                self.registry.apply(a.client_id, a.room, MetadataWritten(metadata=a.metadata), now=now)
        keys = {k for c in observed.containers if (k := key_from_labels(c.labels))}
        for key in list(self.restarts):
            room = self.registry.rooms.get((key.client_id, key.room))
            if key not in keys or (room is not None and agent_identity(key.agent_slug) in room.agents):
                if not any(isinstance(r.action, RestartAgent) and r.action.key == key for r in results):
                    del self.restarts[key]  # the agent is back (or gone for good): a fresh budget next time

    # ---- the loop -------------------------------------------------------------------------

    def wake(self) -> None:
        """Ask for a pass now (a webhook changed a room, Docker reported a death)."""
        self._wake.set()

    def seconds_to_next(self) -> float:
        interval = self.settings.reconcile_interval_s
        due_at = next_deadline(self.registry.rooms, self.restarts, self.settings)
        if due_at is None:
            return interval
        return max(0.05, min(interval, (due_at - self._clock()).total_seconds() + 0.05))

    async def run_forever(self) -> None:
        """Pass, then sleep until the interval, the next clock deadline or a wake-up, whichever is first."""
        self.started_at = self._clock()
        while True:
            try:
                await self.run_once(fresh=False)
            except Exception:  # the loop must outlive any one bad pass
                log.exception("reconcile pass crashed")
            self.heartbeat = self._clock()
            if await wait_event(self._wake, timeout_s=self.seconds_to_next()):
                # Coalesce a burst of events into one pass, briefly: a crashed agent with humans waiting is restarted
                # by this pass (a pass plans from the view in milliseconds, so a burst costs a few more passes at most).
                await asyncio.sleep(0.01)
            self._wake.clear()

    def stalled(self, *, now: datetime | None = None) -> bool:
        """True when the running loop has not completed an iteration in three intervals (+10 s for a slow pass).

        Counted from the loop's start until the first pass completes; a loop that never ran is not stalled.
        """
        last = self.heartbeat or self.started_at
        if last is None:
            return False
        limit = 3 * self.settings.reconcile_interval_s + 10
        return ((now or self._clock()) - last).total_seconds() > limit

    def room_rows(self) -> list[dict[str, Any]]:
        """The admin view of rooms (state, humans, agents, grace remaining)."""
        now = self._clock()
        rows = []
        for (client_id, name), room in sorted(self.registry.rooms.items()):
            rows.append({
                "client_id": client_id, "room": name, "state": room.state.value,
                "humans": sorted(room.humans), "agents": sorted(room.agents),
                "since": room.since.isoformat() if room.since else None,
                "grace_remaining_s": grace_remaining(room, now=now, grace_s=self.settings.grace_period_s),
            })
        return rows

    def close_room(self, client_id: str, room: str, *, reason: str = "closed by an operator") -> None:
        self.registry.apply(client_id, room, CloseRequested(reason=reason), now=self._clock())

    async def close_now(self, client_id: str, room: str, containers: list[ContainerInfo], *, reason: str) -> PassReport:
        """Close one room now (an operator's or its client's request): its agents among `containers` removed and the
        LiveKit room deleted, under the room's lock (the trigger's too), with no pass. A pass lists the engine and
        LiveKit and holds the one pass lock; closes made as passes queued behind each other, and at one close a
        second the agents of closed rooms ran on while new ones started (found by the pool's steady bench)."""
        started, now = time.monotonic(), self._clock()
        self.close_room(client_id, room, reason=reason)
        report = PassReport(started_at=now, dry_run=False, containers=len(containers), rooms=1)
        actions = room_close(containers, (client_id, room), self.settings, why=reason)
        report.results = await self.executor.close_room((client_id, room), actions, observed_at=now)
        report.duration_s = time.monotonic() - started
        self._report(report)
        return report


__all__ = ["ActionResult", "Launcher", "ObservationFailed", "PassReport", "Reconciler", "RoomState", "log_fields"]
