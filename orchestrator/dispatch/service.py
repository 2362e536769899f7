"""Jobs LiveKit dispatches become trigger keys: one registration per (client, agent slug), each job the
same reuse-or-launch a trigger does (TriggerService.launch_dispatched), its status reported back.

State here is only what LiveKit's protocol needs (which job is on which connection); what runs is read
from the engine's labels like everywhere else, so a restart loses nothing but open jobs' bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from livekit.protocol import agent as pb

from orchestrator.core.errors import InvalidInput, NotFound, OrchestratorError
from orchestrator.observability.events import EventFeed
from orchestrator.livekit.client import LiveKitGateway, is_agent
from orchestrator.observability.metrics import Metrics
from orchestrator.observability.starts import Measured, Stage
from orchestrator.core.models import Agent, Client, ContainerKey, ContainerStatus, Mode
from orchestrator.rules.naming import Label, agent_identity, container_name, key_from_labels, validate_room
from orchestrator.rules import ownership
from orchestrator.runtime import ContainerRuntime
from orchestrator.services.signing_key import signing_key
from orchestrator.settings import Settings
from orchestrator.tenants import TenantStore
from orchestrator.services.trigger import TriggerService
from orchestrator.dispatch.rules import (
    RegistrationKey,
    agent_for_job,
    job_mode,
    load_for,
    room_owner,
)
from orchestrator.dispatch.registrations import Registrations
from orchestrator.dispatch.worker import Accept, Reject, Served

log = logging.getLogger(__name__)

_LIVE = {ContainerStatus.running, ContainerStatus.created, ContainerStatus.restarting}
_JOIN_POLL_S = 0.25  # one ListParticipants per joining room per poll: a burst of N rooms costs 4N calls/s
_JOIN_GIVE_UP_S = 30.0  # stop looking for an agent that never came (the reconciler's startup rule handles it)
_ASSIGNMENT_WAIT_S = 15.0  # LiveKit assigns within its 10 s availability timeout or not at all


@dataclass
class JobRecord:
    """A job we accepted: where to report its status, and what it became."""

    job_id: str
    dispatch_id: str
    reg: RegistrationKey
    key: ContainerKey
    client: Client
    agent: Agent
    mode: Mode
    received_at: float  # monotonic
    decided: tuple[Measured, ...] = ()  # the availability answer's stages, the first of the start the assignment opens
    status: str = "accepted"  # accepted → running → ended | failed
    container: str | None = None
    joined_after_s: float | None = None

    def row(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id, "dispatch_id": self.dispatch_id, "client_id": self.key.client_id,
            "agent": self.key.agent_slug, "room": self.key.room, "registration": str(self.reg), "status": self.status,
            "container": self.container, "joined_after_s": self.joined_after_s,
        }


class DispatchService:
    """Holds the registrations, answers jobs, reports load and job ends. Runs inside `serve`."""

    def __init__(
        self, *, settings: Settings, tenants: TenantStore, runtime: ContainerRuntime, trigger: TriggerService,
        metrics: Metrics, feed: EventFeed, livekit: LiveKitGateway | None = None, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`livekit`: the engine's gateway when it has the real one (for ListParticipants); else dispatch owns one."""
        self._settings = settings
        self._tenants = tenants
        self._runtime = runtime
        self._trigger = trigger
        self._own_livekit = livekit is None
        self._livekit = livekit or LiveKitGateway()
        self._metrics = metrics
        self._feed = feed
        self._clock = clock
        self._patterns = [re.compile(p) for p in settings.dispatch_room_patterns]
        self.registrations = Registrations(settings=settings, tenants=tenants, metrics=metrics, feed=feed, handler=lambda: self)
        self._connections = self.registrations.connections  # the same dict: registration → its connection
        self._pending: dict[str, JobRecord] = {}  # accepted, not yet assigned
        self._jobs: dict[str, JobRecord] = {}  # assigned: launching or running
        self._joining: asyncio.Task[None] | None = None

    @property
    def last_sync_error(self) -> str:
        return self.registrations.last_sync_error

    # -- loop -----------------------------------------------------------------------------------------------
    async def run_forever(self) -> None:
        s = self._settings
        next_sync = 0.0
        try:
            while True:
                try:
                    if self._clock() >= next_sync:
                        await self.sync()
                        next_sync = self._clock() + s.dispatch_sync_interval_s
                    await self.tick()
                except Exception:  # one bad pass must not end dispatch for the process's lifetime
                    log.exception("dispatch pass failed; trying again in %.1fs", s.dispatch_status_interval_s)
                await asyncio.sleep(s.dispatch_status_interval_s)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        await self.registrations.aclose()
        if self._joining is not None:
            self._joining.cancel()
        if self._own_livekit:
            await self._livekit.aclose()

    async def sync(self) -> None:
        """Registrations follow the tenants (Registrations.sync)."""
        await self.registrations.sync()

    async def tick(self) -> None:
        """One labelled list: the load each registration reports, and which jobs' agents have ended."""
        try:
            containers = await self._runtime.list_managed(scope=self._settings.scope)
        except OrchestratorError:
            return  # Docker away: report nothing rather than a wrong load
        live = {k: c for c in containers if c.status in _LIVE and (k := key_from_labels(c.labels)) is not None}
        ended = {k: c for c in containers if c.status not in _LIVE and (k := key_from_labels(c.labels)) is not None}
        s = self._settings
        now = self._clock()
        for job_id in [j.job_id for j in self._pending.values() if now - j.received_at > _ASSIGNMENT_WAIT_S]:
            self._pending.pop(job_id)  # LiveKit gave the job to another worker, or gave up: free the reservation
        for reg, conn in self._connections.items():
            load = load_for(
                client_running=sum(k.client_id == reg.client_id for k in live), total_running=len(live),
                max_per_client=s.max_agents_per_client, max_total=s.max_agents_total,
            )
            conn.report_load(load, job_count=sum(j.reg == reg for j in self._jobs.values()))
        for rec in [j for j in self._jobs.values() if j.status == "running" and j.key not in live]:
            gone = ended.get(rec.key)
            code = gone.exit_code if gone is not None else None
            if code:
                self._end(rec, pb.JobStatus.JS_FAILED, f"agent exited with code {code}")
            else:
                self._end(rec, pb.JobStatus.JS_SUCCESS, "")

    # -- the worker protocol's questions ----------------------------------------------------------------------
    async def availability(self, reg: RegistrationKey, job: pb.Job) -> Accept | Reject | Served:
        received = self._clock()
        self._metrics.dispatch_jobs.labels(outcome="received").inc()
        answer = await self._decide(reg, job, received=received)
        where = {"client_id": reg.client_id, "room": job.room.name, "job_id": job.id, "dispatch_id": job.dispatch_id or None}
        if isinstance(answer, Served):
            self._metrics.dispatch_jobs.labels(outcome="served").inc()
            self._feed.publish("dispatch", f"job {job.id}: the agent already runs ({answer.container}); no second container",
                               agent=reg.agent_name or "*", container=answer.container, outcome="reused", **where)
        if isinstance(answer, Reject):
            self._metrics.dispatch_jobs.labels(outcome="rejected").inc()
            self._metrics.dispatch_rejections.labels(reason=answer.kind).inc()
            if answer.kind != "no_pattern":  # every room reaches an unnamed registration: only log the interesting ones
                log.info("dispatch job %s rejected: %s", job.id, answer.reason, extra=where)
            self._feed.publish("dispatch", f"job {job.id} rejected: {answer.reason}", agent=reg.agent_name or "*",
                               reason=answer.kind, ok=False, **where)
        return answer

    async def _decide(self, reg: RegistrationKey, job: pb.Job, *, received: float) -> Accept | Reject | Served:
        room, room_meta, job_meta = job.room.name, job.room.metadata, job.metadata
        asked = time.time_ns()  # the job's start: its trace and timeline begin here (wall clock, as spans)
        try:
            client = await self._tenants.get_client(reg.client_id)
        except NotFound as exc:
            return Reject(exc.message, kind="unknown_client")
        ref = agent_for_job(
            agent_name=reg.agent_name, room=room, room_metadata=room_meta, job_metadata=job_meta, patterns=self._patterns
        )
        if ref.reason:
            return Reject(ref.reason, kind="no_pattern")
        owner = room_owner(
            registered_for=client.id, room_metadata=room_meta, job_metadata=job_meta,
            proven=ownership.verified_owner(signing_key(self._settings), room_meta, room=room),
            sharing_server=self.registrations.sharing(client.livekit.url),
        )
        if owner.client_id is None:
            return Reject(owner.reason, kind="other_client")
        try:
            agent = (
                await self._tenants.get_agent(client, ref.slug) if ref.slug is not None
                else await self._tenants.get_agent_by_id(client, ref.agent_id or "")
            )
            validate_room(room)
        except NotFound as exc:
            return Reject(exc.message, kind="unknown_agent")
        except InvalidInput as exc:
            return Reject(exc.message, kind="invalid")
        key = ContainerKey(client_id=client.id, agent_slug=agent.slug, room=room)
        looked_up = time.time_ns()
        if (serving := await self._serving(key)) is not None:
            return Served(serving)
        refused = await self._trigger.admission_error(key, reserved=self._promised())
        if refused is not None:
            return Reject(refused.message, kind="limits")
        self._pending[job.id] = JobRecord(
            job_id=job.id, dispatch_id=job.dispatch_id, reg=reg, key=key, client=client, agent=agent,
            mode=job_mode(job_meta, room_meta), received_at=received,
            decided=(Measured(Stage.tenant_lookup, asked, looked_up), Measured(Stage.admission, looked_up, time.time_ns())),
        )
        return Accept(identity=agent_identity(agent.slug), name=agent.name)

    async def _serving(self, key: ContainerKey) -> str | None:
        """The container (or promised job) that already serves `key`: a second job for it gets no container."""
        if (rec := next((j for j in [*self._pending.values(), *self._jobs.values()] if j.key == key), None)) is not None:
            return rec.container or f"job {rec.job_id}"
        info = await self._runtime.get(container_name(key))
        return info.name if info is not None and info.status in _LIVE else None

    def _promised(self) -> set[ContainerKey]:
        return {j.key for j in self._pending.values()} | {j.key for j in self._jobs.values() if j.status == "accepted"}

    async def assigned(self, reg: RegistrationKey, assignment: pb.JobAssignment) -> None:
        job = assignment.job
        rec = self._pending.pop(job.id, None)
        conn = self._connections.get(reg)
        if rec is None:
            if conn is not None:
                conn.job_status(job.id, pb.JobStatus.JS_FAILED, "assignment for a job this worker did not accept")
            return
        self._jobs[job.id] = rec
        where = {"client_id": rec.key.client_id, "agent": rec.key.agent_slug, "room": rec.key.room, "job_id": job.id}
        labels = {Label.JOB_ID: job.id, **({Label.DISPATCH_ID: job.dispatch_id} if job.dispatch_id else {})}
        try:
            outcome, info = await self._trigger.launch_dispatched(
                rec.key, client=rec.client, agent=rec.agent, mode=rec.mode, token=assignment.token, labels=labels,
                earlier=rec.decided,
            )
        except OrchestratorError as exc:
            self._end(rec, pb.JobStatus.JS_FAILED, exc.message)
            self._metrics.dispatch_jobs.labels(outcome="failed").inc()
            log.warning("dispatch job %s failed: %s", job.id, exc.message, extra=where)
            return
        rec.status, rec.container = "running", info.name
        if conn is not None:
            conn.job_status(job.id, pb.JobStatus.JS_RUNNING)
        self._metrics.dispatch_jobs.labels(outcome="accepted").inc()
        self._feed.publish("dispatch", f"job {job.id}: {outcome.value} {info.name}", container=info.name,
                           outcome=outcome.value, dispatch_id=rec.dispatch_id or None, **where)
        log.info("dispatch job %s: %s container %s", job.id, outcome.value, info.name, extra={**where, "container": info.name})
        self._watch_join()

    async def terminated(self, reg: RegistrationKey, job_id: str) -> None:
        """LiveKit ended a job: its dispatch was deleted, or its agent left the room.

        Deleted while the agent is still in the room → stop it (SIGTERM within the stop timeout: the agent
        says goodbye and leaves; the reconciler removes the exited container). An agent that left on its
        own is the reconciler's business (restart in a call, clean-up after the grace).
        """
        rec = self._jobs.pop(job_id, None) or self._pending.pop(job_id, None)
        if rec is None:
            return
        rec.status = "ended"
        self._metrics.dispatch_jobs.labels(outcome="ended").inc()
        where = {"client_id": rec.key.client_id, "agent": rec.key.agent_slug, "room": rec.key.room, "job_id": job_id}
        if rec.container is None:
            self._feed.publish("dispatch", f"job {job_id} ended before its agent started", **where)
            return
        try:
            people = await self._livekit.list_participants(rec.client.livekit, room=rec.key.room)
        except OrchestratorError:
            people = []
        if not any(is_agent(p) and p.identity == agent_identity(rec.key.agent_slug) for p in people):
            self._feed.publish("dispatch", f"job {job_id} ended: the agent left the room", **where)
            return
        self._feed.publish("dispatch", f"job {job_id} ended by LiveKit (dispatch deleted): stopping {rec.container}",
                           container=rec.container, **where)
        with contextlib.suppress(OrchestratorError):
            await self._runtime.stop(rec.container, timeout_s=self._settings.agent_stop_timeout_s)

    def connection_changed(self, reg: RegistrationKey, state: str, detail: str) -> None:
        self.registrations.count()
        if state in ("registered", "backoff"):
            self._feed.publish("dispatch", f"registration {reg} {state}{': ' + detail if detail else ''}",
                               client_id=reg.client_id, agent=reg.agent_name or "*", ok=state == "registered")

    # -- helpers ----------------------------------------------------------------------------------------------
    def _end(self, rec: JobRecord, status: int, error: str) -> None:
        self._jobs.pop(rec.job_id, None)
        rec.status = "failed" if status == pb.JobStatus.JS_FAILED else "ended"
        conn = self._connections.get(rec.reg)
        if conn is not None:
            conn.job_status(rec.job_id, status, error)
        self._feed.publish(
            "dispatch", f"job {rec.job_id} {rec.status}{': ' + error if error else ''}", ok=rec.status == "ended",
            client_id=rec.key.client_id, agent=rec.key.agent_slug, room=rec.key.room, job_id=rec.job_id,
        )

    def _watch_join(self) -> None:
        if self._joining is None or self._joining.done():
            self._joining = asyncio.create_task(self._join_loop(), name="dispatch-join-watch")

    async def _join_loop(self) -> None:
        """While an accepted job's agent is not listed in its room yet, look (ListParticipants) every 0.25 s."""
        while waiting := [j for j in self._jobs.values() if j.status == "running" and j.joined_after_s is None]:
            for rec in waiting:
                if self._clock() - rec.received_at > _JOIN_GIVE_UP_S:
                    rec.joined_after_s = -1.0
                    continue
                try:
                    people = await self._livekit.list_participants(rec.client.livekit, room=rec.key.room)
                except OrchestratorError:
                    continue
                if any(is_agent(p) and p.identity == agent_identity(rec.key.agent_slug) for p in people):
                    rec.joined_after_s = round(self._clock() - rec.received_at, 3)
                    self._metrics.dispatch_join_seconds.observe(rec.joined_after_s)
                    self._feed.publish(
                        "dispatch", f"job {rec.job_id}: agent in {rec.key.room} {rec.joined_after_s:.2f}s after dispatch",
                        client_id=rec.key.client_id, agent=rec.key.agent_slug, room=rec.key.room, job_id=rec.job_id,
                    )
            await asyncio.sleep(_JOIN_POLL_S)

    # -- what operators see -----------------------------------------------------------------------------------
    def registration_rows(self) -> list[dict[str, Any]]:
        return self.registrations.rows()

    def job_rows(self) -> list[dict[str, Any]]:
        return [j.row() for j in [*self._pending.values(), *self._jobs.values()]]

    def registered(self, client_id: str, agent_name: str) -> bool:
        return self.registrations.registered(client_id, agent_name)
