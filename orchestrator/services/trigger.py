"""Reuse or launch: the one path from a trigger request to exactly one running container.

One way down: the limits (admission), the room (room_claim), then under the key's lock the container —
reused (from the view: answers, else the engine) or launched with the pure launch spec (rules/launch_spec).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Collection, Mapping, Sequence

from orchestrator.core.clock import utcnow
from orchestrator.core.errors import Conflict, ContainerFailed, DependencyUnavailable, ImageNotAllowed, LimitExceeded, OrchestratorError
from orchestrator.core.locks import KeyedLocks
from orchestrator.core.models import Agent, Client, ContainerInfo, ContainerKey, ContainerStatus, Mode, TriggerOutcome
from orchestrator.livekit.service import RoomService
from orchestrator.rules.isolation import AgentNetwork, image_allowed
from orchestrator.rules.launch_spec import agent_image, launch_spec
from orchestrator.rules.naming import Label, container_name, generated_room, key_from_labels, spec_hash, validate_room
from orchestrator.rules.rooms import RoomRegistry
from orchestrator.rules.view import AgentView
from orchestrator.runtime import ContainerRuntime, ContainerSpec, NameTaken
from orchestrator.observability.starts import Measured, Stage, Starts, agent_trace_env, settled, stage
from orchestrator.services.admission import AdmissionGate
from orchestrator.services.agent_networks import AgentNetworks
from orchestrator.services.answers import ViewAnswers
from orchestrator.services.pool import WarmPool
from orchestrator.services.room_claim import RoomClaims
from orchestrator.settings import Settings
from orchestrator.tenants import TenantStore

log = logging.getLogger(__name__)

_MAX_ROUNDS = 8
_NAME_RACE_BACKOFF_S = 0.02  # doubles per round: up to ~2.5 s in all for a slow winner's create


@dataclass(frozen=True)
class TriggerResult:
    outcome: TriggerOutcome
    client: Client
    agent: Agent
    room: str
    mode: Mode
    container: ContainerInfo
    spec_stale: bool
    user_token: str


class TriggerService:
    """Resolves tenant and agent, makes sure the room exists, then reuses or launches the container."""

    def __init__(
        self,
        *,
        settings: Settings,
        tenants: TenantStore,
        livekit: RoomService,
        runtime: ContainerRuntime,
        clock: Callable[[], datetime] = utcnow,
        on_launched: Callable[[ContainerKey], None] | None = None,
        view: AgentView | None = None,
        rooms: RoomRegistry | None = None,
        networks: AgentNetworks | None = None,
        pool: WarmPool | None = None,
        starts: Starts | None = None,
    ) -> None:
        self._settings = settings
        self._tenants = tenants
        self._livekit = livekit
        self._runtime = runtime
        self._clock = clock
        self._locks = KeyedLocks()
        self._on_launched = on_launched  # the room registry hears of every launch/reuse (STARTING)
        # Watch-fed: a running agent and the limits are answered without an engine call once synced.
        self.answers = ViewAnswers(view)
        self.admission = AdmissionGate(settings=settings, runtime=runtime, view=view, answers=self.answers)
        self.rooms = RoomClaims(settings=settings, tenants=tenants, livekit=livekit, clock=clock, rooms=rooms)
        self.room_locks = self.rooms.locks  # shared with the reconciler's close (reconciler._close_room)
        self.networks = networks or AgentNetworks(settings=settings, provider=runtime)
        self.pool = pool  # warm members: a start claims one, and starts cold when there is none
        self.starts = starts or Starts()  # each start's stages: histograms, timelines, progress, trace

    async def trigger(
        self, *, client_id: str, agent_slug: str, mode: Mode, user_id: str, room_name: str | None = None
    ) -> TriggerResult:
        """`agent_slug` must already be clean (naming.clean_slug); everything else is checked here."""
        async with self.starts.begin("trigger", client_id=client_id, room=room_name, agent_slug=agent_slug):
            return await self._trigger(client_id=client_id, agent_slug=agent_slug, mode=mode, user_id=user_id, room_name=room_name)

    async def _trigger(
        self, *, client_id: str, agent_slug: str, mode: Mode, user_id: str, room_name: str | None = None
    ) -> TriggerResult:
        with stage(Stage.tenant_lookup):
            client = await self._tenants.get_client(client_id)
            agent = await self._tenants.get_agent(client, agent_slug)
        room = validate_room(room_name) if room_name else generated_room(agent.id, secrets.token_hex(4))
        self.starts.bind(room=room, agent_slug=agent.slug)
        ctx = {"client_id": client.id, "agent_slug": agent.slug, "room": room}
        s = self._settings
        key = ContainerKey(client_id=client.id, agent_slug=agent.slug, room=room)
        outcome, info = await self._settle(key, client=client, agent=agent, mode=mode, announce=True)
        mode = _mode_of(info, default=mode)  # a reused container keeps the mode it was launched with
        stale = info.labels.get(Label.SPEC_HASH) != spec_hash(agent, image=agent_image(agent, s), mode=mode)
        log.info(
            "agent %s: %s container %s", outcome.value, agent.slug, info.name,
            extra={**ctx, "container": info.name, "outcome": outcome.value, "spec_stale": stale},
        )
        token = self._livekit.user_token(client.livekit, identity=user_id, room=room, ttl_s=s.user_token_ttl_s)
        return TriggerResult(
            outcome=outcome, client=client, agent=agent, room=room, mode=mode,
            container=info, spec_stale=stale, user_token=token,
        )

    async def launch_for_key(self, key: ContainerKey, *, mode: Mode) -> tuple[TriggerOutcome, ContainerInfo]:
        """The reconciler's restart path: same tenant lookup, room, lock and launch as a trigger."""
        async with self.starts.begin("restart", client_id=key.client_id, room=key.room, agent_slug=key.agent_slug):
            with stage(Stage.tenant_lookup):
                client = await self._tenants.get_client(key.client_id)
                agent = await self._tenants.get_agent(client, key.agent_slug)
            return await self._settle(key, client=client, agent=agent, mode=mode)

    async def _settle(
        self, key: ContainerKey, *, client: Client, agent: Agent, mode: Mode, announce: bool = False
    ) -> tuple[TriggerOutcome, ContainerInfo]:
        """Limits, then the room (ours, with timeouts covering the grace period), then the container under the key's lock."""
        with stage(Stage.admission):
            self._check_image(agent)
            if await self.admission.needed(key):
                await self.admission.admit(key, reserve=False)  # a refusal must not leave a LiveKit room behind
        with stage(Stage.room_claim):
            async with self.rooms.claimed(key, client=client, agent=agent):
                if announce and self._on_launched is not None:
                    self._on_launched(key)  # before the reuse: a close that has not started yet now sees the trigger
        with stage(Stage.engine):
            async with self._locks.hold(key):
                outcome, info = await self._reuse_or_launch(key, client=client, agent=agent, mode=mode)
        settled(outcome=outcome.value, container=info.name, node=info.node, agent_slug=key.agent_slug)
        return outcome, info

    def _check_image(self, agent: Agent) -> None:
        """The deployment's image allowlist, before any room or container: a refused agent leaves nothing behind."""
        image = agent_image(agent, self._settings)
        if not image_allowed(image, allowlist=self._settings.image_allowlist):
            raise ImageNotAllowed(
                f"agent '{agent.slug}' names image '{image}', which this deployment does not allow; ask the operator "
                "to add its repository or digest to ORCH_AGENT_IMAGE_ALLOWLIST",
                details={"field": "agent.image", "image": image},
            )

    async def admission_error(self, key: ContainerKey, *, reserved: Collection[ContainerKey] = ()) -> LimitExceeded | None:
        """Why a new container for `key` would be over a limit now, or None; changes nothing (AdmissionGate.refusal)."""
        return await self.admission.refusal(key, reserved=reserved)

    async def launch_dispatched(
        self, key: ContainerKey, *, client: Client, agent: Agent, mode: Mode, token: str, labels: Mapping[str, str],
        earlier: Sequence[Measured] = (),
    ) -> tuple[TriggerOutcome, ContainerInfo]:
        """A job LiveKit dispatched: the room exists already; same lock, limits and reuse-or-launch as a trigger.

        The container joins with `token` (the one LiveKit minted for the job) and carries `labels` on top of ours.
        `earlier`: the job's tenant lookup and limits, timed when LiveKit asked whether we take it (its start's beginning).
        """
        async with self.starts.begin("dispatch", client_id=key.client_id, room=key.room, agent_slug=key.agent_slug,
                                     earlier=earlier):
            with stage(Stage.engine):
                async with self._locks.hold(key):
                    result = await self._reuse_or_launch(
                        key, client=client, agent=agent, mode=mode, token=token, extra_labels=labels,
                    )
            settled(outcome=result[0].value, container=result[1].name, node=result[1].node, agent_slug=key.agent_slug)
        if self._on_launched is not None:
            self._on_launched(key)
        return result

    async def spawn(self, *, client_id: str, agent_id: str, mode: Mode, user_id: str) -> TriggerResult:
        """The dashboard's Test Agent: find the agent by id, then trigger it in a fresh `agent-<id>-<8 hex>` room.

        The room carries the agent id in its metadata (room_metadata), so a spawner that addresses agents by id
        finds the agent either way.
        """
        client = await self._tenants.get_client(client_id)
        agent = await self._tenants.get_agent_by_id(client, agent_id)
        return await self.trigger(
            client_id=client.id, agent_slug=agent.slug, mode=mode, user_id=user_id,
            room_name=validate_room(generated_room(agent.id, secrets.token_hex(4))),
        )

    async def _reuse_or_launch(
        self, key: ContainerKey, *, client: Client, agent: Agent, mode: Mode,
        token: str | None = None, extra_labels: Mapping[str, str] | None = None,
    ) -> tuple[TriggerOutcome, ContainerInfo]:
        name = container_name(key)
        backoff = _NAME_RACE_BACKOFF_S
        if (seen := self.answers.answer(key)) is not None:
            return TriggerOutcome.reused, seen
        for round_ in range(_MAX_ROUNDS):
            # A key the synced view has never seen skips the engine's lookup (one call less on every new start).
            info = None if round_ == 0 and self.answers.unseen(key) else await self._runtime.get(name)
            if info is None:
                network = await self.networks.for_client(client.id)
                await self.admission.admit(key)
                made: ContainerInfo | None = None
                try:
                    spec = self.spec_for(
                        key, name=name, client=client, agent=agent, mode=mode, network=network, token=token,
                        extra_labels=extra_labels,
                    )
                    made = await self.pool.claim(spec, livekit=client.livekit) if self.pool is not None else None
                    if made is None:
                        made = await self._runtime.create_and_start(spec)
                    return TriggerOutcome.created, made
                except DependencyUnavailable:
                    self.networks.forget(network)  # in case it was the network that went missing
                    raise
                except NameTaken:
                    # Another process won the name. Docker reserves a name before the container can be
                    # inspected, so give the winner's create a moment to become visible, then reuse it.
                    await asyncio.sleep(backoff)
                    backoff *= 2
                    continue
                finally:
                    self.admission.finished(key, container_id=made.id if made is not None else None)
            self._check_owner(key, info)
            if info.status.reusable:
                return TriggerOutcome.reused, info
            if info.status is ContainerStatus.created and self._runtime.starts_by_itself:
                return TriggerOutcome.reused, info  # as its create answered: the engine runs it (Kubernetes)
            if info.status is ContainerStatus.created:
                # Created but never started (a crash between create and start): starting is idempotent.
                try:
                    await self._runtime.start(name)
                except DependencyUnavailable as exc:
                    # A container created as the daemon went down can be unstartable for good after its
                    # restart ("failed to start shim ... file exists"): replace it. If the daemon is still
                    # down, the remove fails too and the caller gets the same 503.
                    log.warning(
                        "created container %s does not start (%s); replacing it", name, exc.message,
                        extra={"client_id": key.client_id, "agent_slug": key.agent_slug, "room": key.room, "container": name},
                    )
                    await self._runtime.remove(name)
                    continue
                return TriggerOutcome.reused, await self._wait_running(name)
            if info.status.waiting:
                try:
                    return TriggerOutcome.reused, await self._wait_running(name)
                except ContainerFailed:
                    pass
            tail = await self._runtime.logs_tail(name, lines=20)
            log.warning(
                "replacing %s container %s; its last log lines:\n%s", info.status.value, name, tail,
                extra={"client_id": key.client_id, "agent_slug": key.agent_slug, "room": key.room, "container": name},
            )
            await self._runtime.remove(name)
        raise ContainerFailed(f"could not settle container {name} after {_MAX_ROUNDS} attempts; retry shortly")

    def _check_owner(self, key: ContainerKey, info: ContainerInfo) -> None:
        """Only this key's container of this deployment may be reused, restarted or replaced."""
        if key_from_labels(info.labels) != key:
            raise Conflict(
                f"container name {info.name} is held by a container for another key; remove it or rename the room"
            )
        if info.labels.get(Label.SCOPE) != self._settings.scope:
            # Another deployment on this engine owns it: never reuse, restart or remove its containers.
            raise Conflict(
                f"container name {info.name} belongs to another deployment (scope "
                f"'{info.labels.get(Label.SCOPE, '')}'); use another room name or that deployment"
            )

    def answered_from_view(self, info: ContainerInfo | None) -> ContainerKey | None:
        """The key whose recent reuse answer from the view the watch now contradicts (ViewAnswers.contradicted)."""
        return self.answers.contradicted(info)

    def forget_view_answers(self, client_id: str, room: str) -> None:
        """Its agents are being stopped on purpose (room closed, agent stopped): their deaths are no stale answer."""
        self.answers.forget(client_id, room)

    async def resettle(self, key: ContainerKey, *, mode: Mode) -> None:
        """Reuse-or-launch through the engine (never the view), for a reuse answer the watch contradicted."""
        try:
            outcome, info = await self.launch_for_key(key, mode=mode)
        except OrchestratorError as exc:
            log.warning("re-settling %s after a stale view answer failed: %s", key.room, exc.message,
                        extra={"client_id": key.client_id, "agent_slug": key.agent_slug, "room": key.room})
            return
        log.info("re-settled %s after a stale view answer: %s %s", key.room, outcome.value, info.name,
                 extra={"client_id": key.client_id, "agent_slug": key.agent_slug, "room": key.room, "container": info.name})

    async def _wait_running(self, name: str) -> ContainerInfo:
        """Poll the real state until running (or dead), bounded by the start timeout."""
        deadline = asyncio.get_running_loop().time() + self._settings.container_start_timeout_s
        delay = 0.05
        while True:
            info = await self._runtime.get(name)
            if info is not None and info.status.reusable:
                return info
            if info is None or info.status.gone or asyncio.get_running_loop().time() > deadline:
                raise ContainerFailed(f"container {name} did not reach running (last state: {info and info.status.value})")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def spec_for(
        self, key: ContainerKey, *, name: str, client: Client, agent: Agent, mode: Mode, network: AgentNetwork,
        token: str | None = None, extra_labels: Mapping[str, str] | None = None,
    ) -> ContainerSpec:
        """The launch spec (rules/launch_spec) with a room-scoped agent token minted here unless a job brought one."""
        s = self._settings
        token = token or self._livekit.agent_token(
            client.livekit, slug=agent.slug, name=agent.name, room=key.room, ttl_s=s.agent_token_ttl_s, client_id=client.id,
        )
        spec = launch_spec(
            key, name=name, client=client, agent=agent, mode=mode, network=network, settings=s, token=token,
            created_at=self._clock(), extra_labels=extra_labels,
        )
        # Tracing on: the agent continues this start's trace (TRACEPARENT, and where to export when configured).
        trace_env = agent_trace_env(otlp_endpoint=s.agent_otlp_endpoint)
        return spec.model_copy(update={"env": {**spec.env, **trace_env}}) if trace_env else spec


def _mode_of(info: ContainerInfo, *, default: Mode) -> Mode:
    """The mode a container was launched with (its label); `default` for one without a readable label."""
    try:
        return Mode(info.labels.get(Label.MODE, default.value))
    except ValueError:
        return default
