"""The composition root: settings → adapters → services, and who starts and stops them.

The HTTP app, `orchestrator reconcile`, the bench and the tests build their engine here and nowhere
else, so the wiring is written once. Adapters can be passed in (a test's fake runtime, rooms or
tenant store); whatever the engine built or was given, it closes at stop.

    async with Orchestrator.running(settings) as engine:
        report = await engine.reconciler.run_once()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from orchestrator.services.agent_networks import AgentNetworks
from orchestrator.services.livekit_reach import LiveKitReach
from orchestrator.core.clock import utcnow
from orchestrator.core.errors import ConfigurationError, DependencyRejected, DependencyUnavailable, OrchestratorError
from orchestrator.observability.events import EventFeed
from orchestrator.services.informer import Informer
from orchestrator.observability.metrics import Metrics
from orchestrator.observability.starts import Starts
from orchestrator.observability.tracing import Tracing
from orchestrator.core.models import ContainerInfo, ContainerKey, Mode
from orchestrator.rules import pool as pool_rules
from orchestrator.rules.naming import Label, key_from_labels
from orchestrator.services.operations import Operations
from orchestrator.services.reconciler import Reconciler
from orchestrator.livekit.service import RoomService
from orchestrator.rules.rooms import AgentLaunched, RoomRegistry
from orchestrator.runtime import ContainerRuntime, LiveKitEgress, Preflight, WarmPoolEngine, WatchEvent
from orchestrator.services.sampler import UsageSampler
from orchestrator.settings import Settings
from orchestrator.observability.telemetry import Telemetry
from orchestrator.tenants import TenantStore
from orchestrator.services.pool import WarmPool
from orchestrator.services.prewarm import prewarm
from orchestrator.services.trigger import TriggerService
from orchestrator.rules.view import AgentView, change_signal
from orchestrator.services.webhooks import WebhookIntake

if TYPE_CHECKING:
    from orchestrator.dispatch import DispatchService

log = logging.getLogger(__name__)


def default_runtime(settings: Settings) -> ContainerRuntime:
    from orchestrator.runtime.factory import runtime_from_settings  # ORCH_RUNTIME picks the engine; only its SDK is imported

    return runtime_from_settings(settings)


def default_rooms() -> RoomService:
    from orchestrator.livekit.client import LiveKitGateway

    return LiveKitGateway()


def default_tenants(settings: Settings) -> TenantStore:
    from orchestrator.tenants.factory import tenant_store

    return tenant_store(settings)


class Orchestrator:
    """Every long-lived part of one deployment, built once from its settings."""

    def __init__(
        self,
        settings: Settings,
        *,
        runtime: ContainerRuntime | None = None,
        livekit: RoomService | None = None,
        tenants: TenantStore | None = None,
        clock: Callable[[], datetime] = utcnow,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        # Adapters.
        self.runtime = runtime or default_runtime(settings)
        self.livekit = livekit or default_rooms()
        self.tenants = tenants or default_tenants(settings)
        # Services.
        self.registry = RoomRegistry()
        self.metrics = Metrics()
        self.metrics.agent_limit.labels(limit="total").set(settings.max_agents_total)
        self.metrics.agent_limit.labels(limit="per_client").set(settings.max_agents_per_client)
        # Traces from the standard OTEL_* variables (off unless an OTLP endpoint is set); every start's stages.
        self.tracing = tracing or Tracing.from_env()
        self.starts = Starts(metrics=self.metrics, tracing=self.tracing, engine=getattr(self.runtime, "engine", "unknown"), clock=clock)
        self.telemetry = Telemetry(
            metrics=self.metrics, feed=EventFeed(size=settings.event_buffer_size, clock=clock), starts=self.starts,
        )
        self.sampler = UsageSampler(
            runtime=self.runtime, scope=settings.scope, interval_s=settings.usage_sample_interval_s,
            concurrency=settings.usage_sample_concurrency, clock=clock,
            members=lambda: self.pool.idle_names() if self.pool is not None else [],  # the pool is made below
            on_error=lambda dependency: self.metrics.dependency_errors.labels(dependency=dependency).inc(),
        )
        self.view = AgentView()  # watch-fed: reuse and limits answered without engine calls once synced
        # The agents' own network (made by a runtime that can, else the one named or the host's).
        self.networks = AgentNetworks(settings=settings, provider=self.runtime)
        # Warm members for every start path (trigger, dispatch, crash restart): on an engine that can keep them.
        self.pool: WarmPool | None = (
            WarmPool(settings=settings, engine=self.runtime, clock=clock, livekit=self.livekit,  # type: ignore[arg-type]
                     otlp_endpoint=settings.agent_otlp_endpoint if self.tracing.enabled else None,
                     publish=lambda message, **fields: self.telemetry.feed.publish("pool", message, **fields))
            if isinstance(self.runtime, WarmPoolEngine) and settings.pool_max > 0 else None
        )
        if self.pool is not None:
            self.metrics.pool_source = self.pool_state
        self.livekit_reach = LiveKitReach(  # start-up check: each served client's LiveKit in reach of agents
            settings=settings, tenants=self.tenants, networks=self.networks, runtime=self.runtime,
            publish=lambda problem: self.telemetry.feed.publish("preflight", problem, check="livekit_reach"),
        )
        self.trigger = TriggerService(
            settings=settings, tenants=self.tenants, livekit=self.livekit, runtime=self.runtime,
            clock=clock, on_launched=self._launched, view=self.view, rooms=self.registry, networks=self.networks,
            pool=self.pool,
            starts=self.starts,
        )
        self.reconciler = Reconciler(
            settings=settings, runtime=self.runtime, tenants=self.tenants, livekit=self.livekit,
            launcher=self.trigger, registry=self.registry, clock=clock, on_pass=self.telemetry.reconcile_pass,
            view=self.view, room_locks=self.trigger.room_locks,
        )
        self.operations = Operations(settings=settings, runtime=self.runtime, trigger=self.trigger, reconciler=self.reconciler)
        self.informer = Informer(
            runtime=self.runtime, scope=settings.scope, view=self.view, resync_s=settings.view_resync_s, clock=clock,
            on_change=self._view_changed,
        )
        self.webhooks = WebhookIntake(
            registry=self.registry, on_change=self.reconciler.wake, reconciling=settings.reconcile_enabled,
            on_event=lambda notice, client_id, before, after: self.telemetry.room_event(
                notice.event, notice.identity, client_id, before, after
            ),
        )
        # LiveKit dispatch: registers as an agent worker and runs each job through the trigger (off by default).
        self.dispatch: DispatchService | None = self._dispatch_service() if settings.dispatch_enabled else None
        self._tasks: list[asyncio.Task[None]] = []
        self._resettling: set[asyncio.Task[None]] = set()  # held so they are not garbage-collected
        self._stream_broken = False
        self._closed = False

    @classmethod
    @asynccontextmanager
    async def running(
        cls,
        settings: Settings,
        *,
        loops: bool = True,
        runtime: ContainerRuntime | None = None,
        livekit: RoomService | None = None,
        tenants: TenantStore | None = None,
        clock: Callable[[], datetime] = utcnow,
        tracing: Tracing | None = None,
    ) -> AsyncIterator[Orchestrator]:
        """Build, check and start; stop and close everything on the way out (errors included).

        `loops=False` starts no background work (the cron pass, the bench): only the checks run.
        """
        engine = cls(settings, runtime=runtime, livekit=livekit, tenants=tenants, clock=clock, tracing=tracing)
        try:
            await engine.start(loops=loops)
            yield engine
        finally:
            await engine.stop()

    def pool_state(self) -> dict[str, Any]:
        """The pools as `ps --pool`, the admin API, the dashboard and metrics show them: with their members' memory."""
        if self.pool is None:
            return {}
        return pool_rules.with_memory(self.pool.snapshot(), self.sampler.member_memory)

    def _dispatch_service(self) -> DispatchService:
        from orchestrator.dispatch import DispatchService  # the worker protocol is only loaded when dispatch is on
        from orchestrator.livekit.client import LiveKitGateway

        return DispatchService(
            settings=self.settings, tenants=self.tenants, runtime=self.runtime, trigger=self.trigger,
            metrics=self.metrics, feed=self.telemetry.feed,
            # A test's in-memory room service cannot list a real room's participants: dispatch then has its own gateway.
            livekit=self.livekit if isinstance(self.livekit, LiveKitGateway) else None,
        )

    def _launched(self, key: ContainerKey) -> None:
        """The room registry hears of every launch or reuse (the room is STARTING)."""
        self.registry.apply(key.client_id, key.room, AgentLaunched(), now=self.clock())

    async def preflight(self) -> None:
        """Settings only the engine can judge fail here, naming the variable (errors.ConfigurationError).

        The agents' network is made first (a bad network setting stops us here, not at the first trigger),
        then checked. An engine that does not answer yet is no reason to refuse to start: /healthz reports it,
        and the first trigger makes the network instead.
        """
        try:
            network = await self.networks.ensure_default()
        except DependencyUnavailable as exc:
            log.warning("agent network not ready at start (%s); the first trigger makes it", exc.message)
            return
        except DependencyRejected as exc:
            raise ConfigurationError(f"ORCH_AGENT_NETWORK={self.networks.configured!r}: {exc.message}") from None
        if (problem := await self.networks.otlp_problem(network)) is not None:
            log.warning("agent tracing: %s", problem)
        if isinstance(self.runtime, Preflight) and network is not None:
            try:
                await self.runtime.preflight(network=network.name)
            except DependencyUnavailable as exc:
                log.warning("start-up check skipped: %s", exc.message)
        if isinstance(self.runtime, LiveKitEgress):
            await self._allow_livekit(self.runtime)
        await self.livekit_reach.at_start()

    async def _allow_livekit(self, runtime: LiveKitEgress) -> None:
        """The served clients' LiveKit addresses, as their agents are told them, into the agents' egress rules."""
        try:
            clients = await self.livekit_reach.served()
            await runtime.allow_livekit([self.settings.agent_livekit_url or c.livekit.url for c in clients])
        except OrchestratorError as exc:  # a store or engine not answering yet: the policy keeps what it had
            log.warning("agents' LiveKit egress not updated at start: %s", exc.message)

    async def _prewarm(self, pool: WarmPool) -> None:
        """The served clients' pools filled from the start (services.prewarm); a store not answering yet only
        means the pools learn from their first starts."""
        try:
            await prewarm(self.trigger, pool, await self.livekit_reach.served())
        except OrchestratorError as exc:
            log.warning("warm pool not filled at start: %s", exc.message)

    async def start(self, *, loops: bool = True) -> None:
        await self.preflight()
        if not loops:
            return
        s = self.settings
        if s.usage_sampling_enabled:
            self._tasks.append(asyncio.create_task(self.sampler.run_forever(), name="usage-sampler"))
        if s.docker_events_enabled:
            # The watch-fed view: reuse and limits answered without engine calls, deaths seen at once.
            self._tasks.append(asyncio.create_task(self.informer.run_forever(), name="informer"))
        if self.dispatch is not None:
            self._tasks.append(asyncio.create_task(self.dispatch.run_forever(), name="dispatch"))
        if self.pool is not None:
            await self._prewarm(self.pool)
            self._tasks.append(asyncio.create_task(self.pool.run_forever(), name="warm-pool"))
        if s.reconcile_enabled:
            # The first pass rebuilds room state from the engine's labels + LiveKit (nothing else survives a restart).
            self._tasks.append(asyncio.create_task(self.reconciler.run_forever(), name="reconciler"))

    def _view_changed(self, event: WatchEvent, before: ContainerInfo | None) -> None:
        """Deaths, unhealthy agents and removals wake the reconciler; after a broken stream, one catch-up pass."""
        if event.kind in ("broken", "relist"):
            if event.kind == "relist" and self._stream_broken:
                self.telemetry.container_event("reconnected", "")
                self.reconciler.wake()
            self._stream_broken = event.kind == "broken"
            return
        if event.info is None or (action := change_signal(event, before)) is None:
            return
        self.telemetry.container_event(action, event.info.name, reason=event.info.reason)
        self.reconciler.wake()
        if action == "die" and (key := key_from_labels(event.info.labels)) is not None:
            self.registry.unconfirm(key.client_id, key.room)
        if action in ("die", "destroy") and (key := self.trigger.answered_from_view(before or event.info)):
            # A reuse answer from the view may have been stale by the event's lag: settle that key again.
            mode = Mode((before or event.info).labels.get(Label.MODE, Mode.voice.value))
            self._resettling.add(task := asyncio.create_task(self.trigger.resettle(key, mode=mode)))
            task.add_done_callback(self._resettling.discard)

    async def stop(self) -> None:
        """Stop background work, then close every adapter; safe to call twice."""
        tasks, self._tasks = self._tasks + list(self._resettling), []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.livekit_reach.close()
        if self._closed:
            return
        self._closed = True
        await self.trigger.rooms.settled()  # room claims that follow answered triggers: before LiveKit closes
        if self.pool is not None:
            await self.pool.aclose()
        if self.dispatch is not None:
            await self.dispatch.aclose()  # also when its task was cancelled before it ran
        await self.livekit.aclose()
        self.runtime.close()
        await self.tenants.aclose()
        await asyncio.to_thread(self.tracing.shutdown)  # flush the batched spans
