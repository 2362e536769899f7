"""One agent-worker registration over LiveKit's worker WebSocket (`/agent`, messages from livekit.protocol.agent).

The messages, the `/agent` path, the Bearer token with the `agent` grant and the register-first handshake
are the ones livekit-agents' own worker uses (livekit/agents/worker.py); what differs is what happens on
an assignment: no job process here, the handler hands the job's token to a container.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Protocol
from dataclasses import dataclass, field
from urllib.parse import urlparse, urlunparse

import aiohttp
from livekit import api
from livekit.protocol import agent as pb
from livekit.protocol import models

from orchestrator import __version__
from orchestrator.core.models import LiveKitCredentials
from orchestrator.core.retry import Backoff
from orchestrator.dispatch.rules import Load, RegistrationKey

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0  # as livekit-agents: the WebSocket ping that notices a dead server
ANSWER_TIMEOUT_S = 8.0  # LiveKit gives a worker 10 s (AssignJobTimeout) to answer an availability request


@dataclass(frozen=True)
class Accept:
    identity: str
    name: str
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reject:
    reason: str
    kind: str = "error"  # unknown_client | unknown_agent | other_client | no_pattern | invalid | limits | error


@dataclass(frozen=True)
class Served:
    """The job's key already has its agent: LiveKit records the job as done, with no second participant.

    (Accepting it under the same identity would let LiveKit tie two jobs to one participant and kick the
    agent out of the room when either dispatch is deleted.)
    """

    container: str


class JobHandler(Protocol):
    """What a registration asks of the dispatch service."""

    async def availability(self, reg: RegistrationKey, job: pb.Job) -> Accept | Reject | Served: ...

    async def assigned(self, reg: RegistrationKey, assignment: pb.JobAssignment) -> None: ...

    async def terminated(self, reg: RegistrationKey, job_id: str) -> None: ...

    def connection_changed(self, reg: RegistrationKey, state: str, detail: str) -> None: ...


def availability_response(job_id: str, answer: Accept | Reject | Served) -> pb.AvailabilityResponse:
    """Accept → available with our identity; Served → terminate (LiveKit marks the job done); Reject → not available."""
    resp = pb.AvailabilityResponse(job_id=job_id, available=isinstance(answer, Accept), terminate=isinstance(answer, Served))
    if isinstance(answer, Accept):
        resp.participant_identity = answer.identity
        resp.participant_name = answer.name
        resp.participant_attributes.update(answer.attributes)
    return resp


def agent_url(livekit_url: str) -> str:
    """`ws(s)://host[/path]/agent` from the client's LiveKit URL (http(s) becomes ws(s))."""
    parsed = urlparse(livekit_url)
    scheme = {"http": "ws", "https": "wss"}.get(parsed.scheme, parsed.scheme)
    return urlunparse((scheme, parsed.netloc, parsed.path.rstrip("/") + "/agent", "", "", ""))


class WorkerConnection:
    """Register, answer, reconnect with backoff until closed. One task; sends go through one queue."""

    def __init__(
        self, reg: RegistrationKey, creds: LiveKitCredentials, *, handler: JobHandler, reconnect_max_s: float,
        session: aiohttp.ClientSession,
    ) -> None:
        self.reg = reg
        self.creds = creds
        self.state = "connecting"
        self.worker_id = ""
        self.last_error = ""
        self.registrations = 0  # how many times it registered (1 + reconnects)
        self._handler = handler
        self._reconnect_max_s = reconnect_max_s
        self._session = session
        self._outbox: asyncio.Queue[pb.WorkerMessage] = asyncio.Queue(maxsize=1000)
        self._task: asyncio.Task[None] | None = None
        self._answers: set[asyncio.Task[None]] = set()
        self._last_load: Load | None = None

    @property
    def load(self) -> Load | None:
        """The load last reported (or to be reported once registered)."""
        return self._last_load

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"dispatch-worker {self.reg}")

    async def close(self) -> None:
        self.state = "closed"
        for task in [self._task, *self._answers]:
            if task is not None:
                task.cancel()
        for task in [self._task, *self._answers]:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    # -- what the service sends ---------------------------------------------------------------------------
    def job_status(self, job_id: str, status: int, error: str = "") -> None:
        self._send(pb.WorkerMessage(update_job=pb.UpdateJobStatus(job_id=job_id, status=status, error=error)))  # type: ignore[arg-type]

    def report_load(self, load: Load, *, job_count: int) -> None:
        self._last_load = load
        status = pb.WorkerStatus.WS_FULL if load.full else pb.WorkerStatus.WS_AVAILABLE
        self._send(pb.WorkerMessage(update_worker=pb.UpdateWorkerStatus(status=status, load=load.value, job_count=job_count)))

    def _send(self, msg: pb.WorkerMessage) -> None:
        if self.state != "registered":
            return  # the server forgets a closed connection's jobs and status; the next registration starts afresh
        with contextlib.suppress(asyncio.QueueFull):
            self._outbox.put_nowait(msg)

    # -- the connection -----------------------------------------------------------------------------------
    async def _run(self) -> None:
        backoff = Backoff(first_s=0.5, cap_s=self._reconnect_max_s)
        while self.state != "closed":
            self._set_state("connecting", "")
            try:
                await self._session_once()
                backoff.reset()  # a session that ended after registering starts the backoff afresh
                raise ConnectionError("LiveKit closed the worker connection")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure means: back off and register again
                if self.state == "closed":
                    return
                delay = backoff.next()
                self._set_state("backoff", f"{type(exc).__name__}: {exc}"[:300])
                log.warning("dispatch registration %s lost (%s); reconnecting in %.1fs", self.reg, self.last_error, delay,
                            extra={"client_id": self.reg.client_id, "agent_name": self.reg.agent_name})
                await asyncio.sleep(delay)

    async def _session_once(self) -> None:
        token = (
            api.AccessToken(self.creds.api_key, self.creds.api_secret.get_secret_value())
            .with_grants(api.VideoGrants(agent=True))
            .to_jwt()
        )
        async with self._session.ws_connect(
            agent_url(self.creds.url), headers={"Authorization": f"Bearer {token}"}, heartbeat=HEARTBEAT_S,
            timeout=aiohttp.ClientWSTimeout(ws_close=5), autoping=True,
        ) as ws:
            register = pb.WorkerMessage()
            register.register.type = pb.JobType.JT_ROOM
            register.register.agent_name = self.reg.agent_name
            register.register.version = __version__
            register.register.allowed_permissions.CopyFrom(models.ParticipantPermission(
                can_publish=True, can_subscribe=True, can_publish_data=True, can_update_metadata=True, agent=True,
            ))
            await ws.send_bytes(register.SerializeToString())
            first = pb.ServerMessage()
            first.ParseFromString(await asyncio.wait_for(ws.receive_bytes(), timeout=10))
            if not first.HasField("register"):
                raise ConnectionError("LiveKit did not answer the worker registration")
            self.worker_id = first.register.worker_id
            self.registrations += 1
            while not self._outbox.empty():  # status of a previous connection means nothing to this one
                self._outbox.get_nowait()
            self._set_state("registered", "")
            log.info("dispatch registration %s registered as %s", self.reg, self.worker_id,
                     extra={"client_id": self.reg.client_id, "agent_name": self.reg.agent_name})
            if self._last_load is not None:
                self.report_load(self._last_load, job_count=0)
            sender = asyncio.create_task(self._send_loop(ws))
            try:
                await self._receive_loop(ws)
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender

    async def _send_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            msg = await self._outbox.get()
            await ws.send_bytes(msg.SerializeToString())

    async def _receive_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for raw in ws:
            if raw.type != aiohttp.WSMsgType.BINARY:
                continue
            msg = pb.ServerMessage()
            msg.ParseFromString(raw.data)
            which = msg.WhichOneof("message")
            if which == "availability":
                self._spawn(self._answer(msg.availability.job, received=time.monotonic()))
            elif which == "assignment":
                self._spawn(self._handler.assigned(self.reg, msg.assignment))
            elif which == "termination":
                self._spawn(self._handler.terminated(self.reg, msg.termination.job_id))
        if self.state != "closed":
            raise ConnectionError(f"worker connection closed (code {ws.close_code})")

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    async def _answer(self, job: pb.Job, *, received: float) -> None:
        try:
            answer = await asyncio.wait_for(self._handler.availability(self.reg, job), timeout=ANSWER_TIMEOUT_S)
        except Exception as exc:  # a slow or failing decision must still be answered: no is safe
            log.exception("dispatch availability for job %s failed", job.id)
            answer = Reject(f"could not decide: {type(exc).__name__}", kind="error")
        self._send(pb.WorkerMessage(availability=availability_response(job.id, answer)))

    def _set_state(self, state: str, detail: str) -> None:
        if self.state == "closed":
            return
        changed = state != self.state
        self.state = state
        if detail or state == "registered":
            self.last_error = detail
        if changed:
            self._handler.connection_changed(self.reg, state, detail)
