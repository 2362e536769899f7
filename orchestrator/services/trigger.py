"""Reuse or launch: the one path from a trigger request to exactly one running container."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Collection, Mapping

from orchestrator.core.clock import utcnow
from orchestrator.services.agent_networks import AgentNetworks
from orchestrator.core.errors import Conflict, ContainerFailed, DependencyUnavailable, ImageNotAllowed, LimitExceeded, OrchestratorError
from orchestrator.services.admission import Admissions
from orchestrator.rules.isolation import AgentNetwork, agent_livekit_url, image_allowed
from orchestrator.core.locks import KeyedLocks
from orchestrator.core.models import Agent, Client, ContainerInfo, ContainerKey, ContainerStatus, Mode, TriggerOutcome
from orchestrator.rules.naming import (
    Label,
    container_labels,
    container_name,
    generated_room,
    key_from_labels,
    spec_hash,
    validate_room,
)
from orchestrator.rules import room_metadata
from orchestrator.livekit.service import RoomService
from orchestrator.rules.rooms import RoomRegistry, RoomState, known_to_exist
from orchestrator.runtime import ContainerRuntime, ContainerSpec, NameTaken
from orchestrator.settings import Settings
from orchestrator.tenants import TenantStore
from orchestrator.rules.view import AgentView
from orchestrator.observability.starts import Stage, Starts, agent_traceparent, settled, stage

log = logging.getLogger(__name__)

_MAX_ROUNDS = 8
_NAME_RACE_BACKOFF_S = 0.02  # doubles per round: up to ~2.5 s in all for a slow winner's create
_VIEW_RECHECK_S = 10.0  # a death reported this soon after a reuse answer from the view re-settles the key


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
        starts: Starts | None = None,
    ) -> None:
        self._settings = settings
        self._tenants = tenants
        self._livekit = livekit
        self._runtime = runtime
        self._clock = clock
        self._locks = KeyedLocks()
        # Per (client, room): a trigger claims its room under it, a closing pass closes the room under it,
        # so a trigger never reuses a container that a close is about to remove (reconciler._close_room).
        self.room_locks = KeyedLocks()
        self._on_launched = on_launched  # the room registry hears of every launch/reuse (STARTING)
        self._limits = Admissions(settings)  # in-flight and recent creations, counted against the limits
        self._view = view  # watch-fed: a running agent and the limits are answered without an engine call
        self._rooms = rooms  # a live room confirmed recently is not created again
        self._view_answers: dict[ContainerKey, float] = {}  # reuse answers given from the view, by monotonic time
        self.networks = networks or AgentNetworks(settings=settings, provider=runtime)
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
        image = agent.image or s.agent_image
        stale = info.labels.get(Label.SPEC_HASH) != spec_hash(agent, image=image, mode=mode)
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
            if await self._needs_admission(key):
                await self._admit(key, reserve=False)  # a refusal must not leave a LiveKit room behind
        with stage(Stage.room_claim):
            await self._settle_room(key, client=client, agent=agent, announce=announce)
        with stage(Stage.engine):
            async with self._locks.hold(key):
                outcome, info = await self._reuse_or_launch(key, client=client, agent=agent, mode=mode)
        settled(outcome=outcome.value, container=info.name, node=info.node, agent_slug=key.agent_slug)
        return outcome, info

    async def _settle_room(self, key: ContainerKey, *, client: Client, agent: Agent, announce: bool) -> None:
        s = self._settings
        async with self.room_locks.hold((key.client_id, key.room)):
            # Inside the lock: a close that held it may just have deleted the room.
            tracked = self._rooms.get(client.id, key.room) if self._rooms is not None else None
            known = (
                tracked is not None
                # Only a room in a call: any other may be closing in another process, whose close looks for
                # the trigger stamp that only _claim_room writes.
                and tracked.state is RoomState.ACTIVE
                and known_to_exist(tracked, now=self._clock(), trust_s=s.room_trust_s)
            )
            if not known:
                await self._claim_room(key, client=client, agent=agent)
                if self._rooms is not None:
                    self._rooms.confirm(client.id, key.room, now=self._clock())
            if announce and self._on_launched is not None:
                self._on_launched(key)  # before the reuse: a close that has not started yet now sees the trigger

    def _check_image(self, agent: Agent) -> None:
        """The deployment's image allowlist, before any room or container: a refused agent leaves nothing behind."""
        image = agent.image or self._settings.agent_image
        if not image_allowed(image, allowlist=self._settings.image_allowlist):
            raise ImageNotAllowed(
                f"agent '{agent.slug}' names image '{image}', which this deployment does not allow; ask the operator "
                "to add its repository or digest to ORCH_AGENT_IMAGE_ALLOWLIST",
                details={"field": "agent.image", "image": image},
            )

    async def _needs_admission(self, key: ContainerKey) -> bool:
        """Whether this trigger may create a container (then the limits apply): none of the key is live."""
        if self._running_in_view(key) is not None:
            return False
        if self._view is not None and self._view.synced:
            return all(c.status.gone for c in self._view.state.for_key(key))
        existing = await self._runtime.get(container_name(key))
        return existing is None or existing.status.gone

    async def _claim_room(self, key: ContainerKey, *, client: Client, agent: Agent) -> None:
        """Create the room, or accept an existing one only when its metadata names this client.

        Tenants may share one LiveKit project: a room named by another client's metadata, or by none
        (made outside the orchestrator, e.g. auto-created by a join) on a shared project, is refused.
        On a project of this client alone, an unnamed room is its own and is claimed.
        """
        s = self._settings
        ours = room_metadata.for_new_room(agent=agent, client_id=client.id)
        room = await self._livekit.ensure_room(
            client.livekit, room=key.room, metadata=ours,
            empty_timeout_s=s.room_empty_timeout_s, departure_timeout_s=s.room_departure_timeout_s,
        )
        owner = room_metadata.owner(room.metadata)
        if owner == client.id:
            if room_metadata.grace_started(room.metadata) is not None:
                # The room is in grace, so a pass of another process may be about to close it: stamp the
                # trigger where every process looks before closing (reconciler._close_room).
                stamped = room_metadata.with_trigger(room.metadata, self._clock())
                if stamped is not None:
                    await self._livekit.update_room_metadata(client.livekit, room=key.room, metadata=stamped)
            return
        if owner is None and not await self._shared_project(client):
            if (claimed := room_metadata.claimed(room.metadata, ours=ours)) is not None:
                await self._livekit.update_room_metadata(client.livekit, room=key.room, metadata=claimed)
            return
        log.warning(
            "refused room %s: it belongs to %s", key.room, "another client" if owner else "no client of ours",
            extra={"client_id": client.id, "room": key.room, "room_owner": owner or "-"},
        )
        raise Conflict(
            f"room_name '{key.room}' is already in use on this LiveKit project by "
            f"{'another client' if owner else 'a room the orchestrator did not create'}; "
            "choose another room_name, or omit it to get a fresh room",
            details={"field": "room_name"},
        )

    async def _shared_project(self, client: Client) -> bool:
        """Whether another client uses the same LiveKit project (url and API key)."""
        same_key = await self._tenants.clients_for_livekit_key(client.livekit.api_key)
        return any(c.id != client.id and c.livekit.url == client.livekit.url for c in same_key)

    async def _admit(self, key: ContainerKey, *, reserve: bool = True) -> None:
        """The limits (admission.Admissions), counted from the watch-fed view when it is synced, else one list.

        `reserve=False` only checks (before the room is made: a refusal must leave no LiveKit room behind)."""
        if self._view is not None and self._view.synced:
            self._limits.admit(key, self._view.state.containers(), asked_at=None, reserve=reserve)
            return
        asked_at = self._limits.listing()
        try:
            listed = await self._runtime.list_managed(scope=self._settings.scope)
        finally:
            self._limits.listed(asked_at)
        self._limits.admit(key, listed, asked_at=asked_at, reserve=reserve)

    async def admission_error(self, key: ContainerKey, *, reserved: Collection[ContainerKey] = ()) -> LimitExceeded | None:
        """Why a new container for `key` would be over a limit now, or None; changes nothing.

        Counted as `_admit` counts (admission.Admissions), plus `reserved`: keys a caller has promised
        but not launched yet (dispatch jobs accepted before LiveKit assigns them).
        """
        if self._view is not None and self._view.synced:
            return self._limits.refusal(key, self._view.state.containers(), asked_at=None, reserved=reserved)
        asked_at = self._limits.listing()
        try:
            listed = await self._runtime.list_managed(scope=self._settings.scope)
        finally:
            self._limits.listed(asked_at)
        return self._limits.refusal(key, listed, asked_at=asked_at, reserved=reserved)

    async def launch_dispatched(
        self, key: ContainerKey, *, client: Client, agent: Agent, mode: Mode, token: str, labels: Mapping[str, str]
    ) -> tuple[TriggerOutcome, ContainerInfo]:
        """A job LiveKit dispatched: the room exists already; same lock, limits and reuse-or-launch as a trigger.

        The container joins with `token` (the one LiveKit minted for the job) and carries `labels` on top of ours.
        """
        async with self.starts.begin("dispatch", client_id=key.client_id, room=key.room, agent_slug=key.agent_slug):
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
        if (seen := self._running_in_view(key)) is not None:
            if len(self._view_answers) > 10_000:  # deaths pop entries; prune what no event ever came for
                cutoff = time.monotonic() - _VIEW_RECHECK_S
                self._view_answers = {k: t for k, t in self._view_answers.items() if t > cutoff}
            self._view_answers[key] = time.monotonic()
            return TriggerOutcome.reused, seen
        for _ in range(_MAX_ROUNDS):
            info = await self._runtime.get(name)
            if info is None:
                network = await self.networks.for_client(client.id)
                await self._admit(key)
                made: ContainerInfo | None = None
                try:
                    made = await self._runtime.create_and_start(
                        self._spec(
                            key, name=name, client=client, agent=agent, mode=mode, network=network, token=token,
                            extra_labels=extra_labels,
                        )
                    )
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
                    self._limits.finished(key, container_id=made.id if made is not None else None)
            self._check_owner(key, info)
            if info.status.reusable:
                return TriggerOutcome.reused, info
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
        """The key of a container the watch now reports dead or gone, if a reuse answer named it from the view
        within the last few seconds: that answer may have been stale by the event's lag, so settle it again."""
        key = key_from_labels(info.labels) if info is not None else None
        at = self._view_answers.pop(key, None) if key is not None else None
        return key if at is not None and time.monotonic() - at < _VIEW_RECHECK_S else None

    def forget_view_answers(self, client_id: str, room: str) -> None:
        """Its agents are being stopped on purpose (room closed, agent stopped): their deaths are no stale answer."""
        for key in [k for k in self._view_answers if (k.client_id, k.room) == (client_id, room)]:
            self._view_answers.pop(key, None)

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

    def _running_in_view(self, key: ContainerKey) -> ContainerInfo | None:
        """The key's running container from the watch-fed view; None (ask the engine) on any doubt."""
        if self._view is None or not self._view.synced:
            return None
        running = [c for c in self._view.state.for_key(key) if c.status.reusable]
        return running[0] if len(running) == 1 else None  # a duplicate is the engine's (and reconciler's) call

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

    def _spec(
        self, key: ContainerKey, *, name: str, client: Client, agent: Agent, mode: Mode, network: AgentNetwork,
        token: str | None = None, extra_labels: Mapping[str, str] | None = None,
    ) -> ContainerSpec:
        s = self._settings
        image = agent.image or s.agent_image
        labels = {**(extra_labels or {}), **container_labels(
            key, agent=agent, mode=mode, scope=s.scope,
            spec=spec_hash(agent, image=image, mode=mode), created_at=self._clock(),
        )}
        env = {
            "LIVEKIT_URL": agent_livekit_url(client.livekit.url, network=network, override=s.agent_livekit_url),
            "LIVEKIT_ROOM": key.room,
            # A room-scoped agent token (ours, or the one LiveKit minted for a dispatched job); the
            # tenant's API secret never enters the container.
            "LIVEKIT_TOKEN": token or self._livekit.agent_token(
                client.livekit, slug=agent.slug, name=agent.name, room=key.room, ttl_s=s.agent_token_ttl_s,
                client_id=client.id,
            ),
            "AGENT_MODE": mode.value,
            "AGENT_CONFIG": json.dumps(agent.public_config()),
            "AGENT_GRACE_SECONDS": str(s.grace_period_s),
        }
        if (traceparent := agent_traceparent()) is not None:  # tracing on: the agent continues this start's trace
            env["TRACEPARENT"] = traceparent
            if s.agent_otlp_endpoint:
                env["OTEL_EXPORTER_OTLP_ENDPOINT"] = s.agent_otlp_endpoint
        # The client's own LLM key; the operator's key only as the explicit fallback (never both).
        llm_key = client.llm_api_key or s.agent_llm_api_key
        if llm_key is not None:
            env["OPENAI_API_KEY"] = llm_key.get_secret_value()
        res = agent.resources
        # Hardened unless the operator (never the tenant) loosened this one agent.
        loosen = s.agent_security_exceptions.get(f"{key.client_id}/{key.agent_slug}")
        return ContainerSpec(
            name=name, image=image, labels=labels, env=env,
            memory=res.memory or s.agent_memory, cpus=res.cpus or s.agent_cpus, pids=res.pids or s.agent_pids,
            network=network.name, restart_policy=s.agent_restart_policy, restart_max=s.agent_restart_max,
            stop_timeout_s=s.agent_stop_timeout_s, log_max_size=s.agent_log_max_size, log_max_files=s.agent_log_max_files,
            user=(loosen and loosen.user) or s.agent_user,
            read_only_root=not (loosen and loosen.writable_root),
            tmpfs={"/tmp": f"rw,nosuid,nodev,noexec,size={s.agent_tmpfs_size},mode=1777"},
            cap_add=tuple(loosen.cap_add) if loosen else (),
            no_new_privileges=not (loosen and loosen.allow_new_privileges),
            runtime=(loosen and loosen.runtime) or s.agent_runtime,
        )


def _mode_of(info: ContainerInfo, *, default: Mode) -> Mode:
    """The mode a container was launched with (its label); `default` for one without a readable label."""
    try:
        return Mode(info.labels.get(Label.MODE, default.value))
    except ValueError:
        return default
