"""The warm pool: members made ahead per isolation domain, claimed by a start, handed their assignment.

The handover is the engine's to name (`handover`): stdin-v1 through the engine (Docker), or livekit-lobby-v1
(services.pool_lobby: a server data packet to a member waiting in a LiveKit lobby; Swarm).

The pool never learns which engine it runs on (runtime.WarmPoolEngine). A domain's template is the cold
spec with its tenant fields taken out; it is learnt from the first start in that domain (a cold one) and
kept on every member (a label), so a restarted orchestrator refills the pools its members name. A claim
that finds no member, or a member that fails its handover, returns None: the caller starts cold.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections import Counter
from datetime import datetime
from typing import Any, Awaitable, Callable

from orchestrator.core.clock import utcnow
from orchestrator.core.errors import ConfigurationError, DependencyUnavailable, OrchestratorError
from orchestrator.core.waiting import wait_event
from orchestrator.core.models import ContainerInfo, ContainerStatus, LiveKitCredentials
from orchestrator.observability.starts import note
from orchestrator.rules import pool as rules
from orchestrator.rules.naming import Label
from orchestrator.runtime import ContainerSpec, MemberGone, WarmPoolEngine
from orchestrator.services.pool_lobby import LOBBY_TOKEN_ENV, LobbyHandover, LobbyService
from orchestrator.settings import Settings

log = logging.getLogger(__name__)

# Tuning that operators have not needed to change (settings.py holds the knobs they do).
WARM_TIME_S = 1.5  # what making one member takes until one has been made (then measured per pool; sizing: rate × it × 2)
HANDOVER_TIMEOUT_S = 5.0  # writing an assignment (a busy daemon is slow); past it the start goes cold
LOBBY_JOIN_TIMEOUT_S = 60.0  # a new lobby member loads Python and the rtc library, then joins its lobby
RESERVE_TIMEOUT_S = 30.0  # a claim stuck between its record and its rename is undone after this
TEMPLATE = rules.LABEL_PREFIX + "pool-template"  # the member spec, as JSON (no tenant field in it)


class WarmPool:
    """Per pool: idle members (ids, oldest first), in-flight creations, the claim rate; one refill loop."""

    def __init__(self, *, settings: Settings, engine: WarmPoolEngine, clock: Callable[[], datetime] = utcnow,
                 publish: Callable[..., object] = lambda message, **fields: None, livekit: LobbyService | None = None,
                 otlp_endpoint: str | None = None) -> None:
        self._s = settings
        self._otlp_endpoint = otlp_endpoint  # tracing on: members load the OpenTelemetry SDK while they wait
        self._publish = publish  # the event feed: members recycled, handovers failed, settings that cannot be met
        self._engine = engine
        offered = tuple(getattr(engine, "handovers", (rules.WARM_PROTOCOL,)))
        try:
            self._handover = rules.handover_for(setting=settings.pool_handover, offered=offered, runtime=settings.agent_runtime)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        # An engine that can write a member's stdin hands a lobby member its token there, never in its env.
        self._token_on_stdin = self._handover == rules.LOBBY_PROTOCOL and rules.WARM_PROTOCOL in offered
        self._lobby = LobbyHandover(livekit=livekit, scope=settings.scope, token_ttl_s=int(settings.pool_max_age_s + 120)) if (
            self._handover == rules.LOBBY_PROTOCOL and livekit is not None) else None
        self._clock = clock
        self._templates: dict[str, ContainerSpec] = {}
        self._idle: dict[str, list[ContainerInfo]] = {}
        self._made_at: dict[str, float] = {}  # member id -> monotonic time it joined the idle list (sweep race)
        self._creating: Counter[str] = Counter()
        self._rates: dict[str, rules.ClaimRate] = {}
        self._warm_time: dict[str, float] = {}  # per pool: seconds to make a member, as measured (rules.smoothed)
        self._images: dict[str, tuple[str, bool]] = {}  # image reference -> (its id now, can it wait warm)
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.outcomes: Counter[str] = Counter()  # warm | cold | handover-failed, for metrics and the admin API
        self.last_problem = ""  # a pool setting that cannot be met (image missing...): shown, never a crash loop

    @property
    def enabled(self) -> bool:
        return self._s.pool_max > 0

    # ---- claim ---------------------------------------------------------------------------------------------

    def pool_of(self, spec: ContainerSpec, livekit: LiveKitCredentials | None = None) -> str:
        lobby = {"lobby": LobbyHandover.domain(spec, livekit)} if self._lobby is not None and livekit is not None else {}
        return rules.pool_hash(engine=getattr(self._engine, "engine", "?"), spec={**spec.model_dump(), **lobby})

    async def claim(self, spec: ContainerSpec, *, livekit: LiveKitCredentials | None = None) -> ContainerInfo | None:
        """The spec's container made from a warm member, or None (start cold). Raises NameTaken as a create does.
        `livekit`: the start's LiveKit credentials (a lobby pool is per LiveKit and sends with them)."""
        if not self.enabled:
            return None
        if (pool := await self.learn(spec, livekit=livekit)) is None:
            self.outcomes["cold"] += 1  # an image without warm mode is never pooled: it would start unconfigured
            return None
        self._rates.setdefault(pool, rules.ClaimRate()).record(time.monotonic())
        idle = self._idle.get(pool, [])
        try:
            while idle:
                member = idle.pop(0)
                try:
                    claimed = await self._engine.claim_member(member, name=spec.name, labels=spec.labels)
                except MemberGone:
                    continue
                if await self._hand_over(pool, claimed, spec):
                    self.outcomes["warm"] += 1
                    note(launch="warm")  # the start's stages and trace say it came from the pool
                    return claimed
                self.outcomes["handover-failed"] += 1
                return None
            self.outcomes["cold"] += 1
            return None
        finally:
            self._wake.set()

    async def learn(self, spec: ContainerSpec, *, livekit: LiveKitCredentials | None = None) -> str | None:
        """The spec's pool, its template kept (the refill makes members of it); None when it cannot be pooled."""
        image = await self._image(spec.image)
        # A lobby handover needs the start's LiveKit credentials and an assignment that fits one data packet.
        lobby_ok = self._handover != rules.LOBBY_PROTOCOL or (
            self._lobby is not None and livekit is not None and LobbyHandover.payload(spec) is not None)
        if image is None or not image[1] or not lobby_ok:
            return None
        pool = self.pool_of(spec, livekit)
        if self._lobby is not None and livekit is not None:
            self._lobby.learn(pool, livekit)
        self._learn(pool, spec)
        return pool

    async def _hand_over(self, pool: str, claimed: ContainerInfo, spec: ContainerSpec) -> bool:
        line = json.dumps({"env": spec.env}, separators=(",", ":")).encode() + b"\n"
        send = (self._lobby.hand_over(pool, claimed, line.rstrip(), timeout_s=HANDOVER_TIMEOUT_S) if self._lobby is not None
                else self._engine.hand_over(claimed.name, line, timeout_s=HANDOVER_TIMEOUT_S))
        if (why := await self._delivered_or_removed(claimed, send)) is None:
            return True
        log.warning("handover to %s failed (%s); removed it, the start goes cold", claimed.name, why)
        self._publish(f"handover to {claimed.name} failed ({why}): the start went cold", container=claimed.name)
        return False

    async def _delivered_or_removed(self, member: ContainerInfo, send: Awaitable[None]) -> str | None:
        """None when `send` reached the member within the bound; else why not, and the member is removed (freeing a key's name)."""
        try:
            async with asyncio.timeout(HANDOVER_TIMEOUT_S):  # not wait_for: see core.waiting
                await send
            return None
        except (OrchestratorError, TimeoutError) as exc:
            with contextlib.suppress(OrchestratorError):
                await self._engine.remove_member(member)
            return exc.message if isinstance(exc, OrchestratorError) else "timed out"

    async def _image(self, ref: str, *, refresh: bool = False) -> tuple[str, bool] | None:
        """(id, warm-capable) of an image reference; cached, refreshed by every sweep (drift: the tag moved)."""
        if refresh or ref not in self._images:
            got = await self._engine.image_id(ref)
            if got is None:
                self._images.pop(ref, None)
                return None
            self._images[ref] = (got[0], self._handover in rules.protocols(got[1].get(rules.WARM_MODE)))
        return self._images[ref]

    # ---- templates and refill ------------------------------------------------------------------------------

    def _learn(self, pool: str, spec: ContainerSpec) -> None:
        if pool in self._templates:
            return
        self._templates[pool] = spec.model_copy(update={
            "name": "", "labels": {}, "restart_policy": "no", "stdin": True,
            # Nothing of the tenant: the member is told only that it is warm and how long to wait, and (tracing on)
            # the deployment's collector, so it loads the OpenTelemetry SDK while waiting rather than after the claim;
            # a lobby member also where its lobby is (services.pool_lobby).
            "env": {"AGENT_WARM": "1", "AGENT_WARM_MAX_AGE_SECONDS": str(int(self._s.pool_max_age_s + 60)),
                    **({"OTEL_EXPORTER_OTLP_ENDPOINT": self._otlp_endpoint} if self._otlp_endpoint else {}),
                    **(self._lobby.template_env(pool, spec) if self._lobby is not None else {})},
        })
        self._wake.set()

    def target(self, pool: str) -> int:
        rate, now = self._rates.get(pool), time.monotonic()
        return rules.target_size(
            minimum=self._s.pool_min, maximum=self._s.pool_max, warm_time_s=self.warm_time(pool),
            claims_per_s=rate.per_second(now) if rate is not None else 0.0, peak=rate.peak(now) if rate is not None else 0,
        )

    def warm_time(self, pool: str) -> float:
        """Seconds making one of this pool's members takes, as measured lately (WARM_TIME_S before the first)."""
        return self._warm_time.get(pool, WARM_TIME_S)

    def refill(self) -> None:
        """Start creations up to each pool's target, bounded by the refill concurrency (per pool)."""
        for pool, template in self._templates.items():
            if self._lobby is not None and not self._lobby.knows(pool):
                continue  # a lobby pool adopted after a restart: its LiveKit credentials come with its next claim
            n = rules.to_create(
                target=self.target(pool), idle=len(self._idle.get(pool, [])), creating=self._creating[pool],
                concurrency=self._s.pool_refill_concurrency,
            )
            for _ in range(n):
                self._creating[pool] += 1
                task = asyncio.create_task(self._make(pool, template), name=f"pool-make-{pool}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _make(self, pool: str, template: ContainerSpec) -> None:
        began = time.monotonic()
        try:
            image = await self._image(template.image)
            if image is None or not image[1]:
                raise DependencyUnavailable(
                    f"image {template.image} is missing or has no warm mode (label {rules.WARM_MODE} listing {self._handover})",
                    dependency="pool",
                )
            image_id = image[0]
            labels = rules.member_labels(
                scope=self._s.scope, pool=pool, image_id=image_id, created_at=self._clock().isoformat(),
            )
            labels[TEMPLATE] = template.model_dump_json()
            env, own = self._lobby.member(pool) if self._lobby is not None else ({}, {})
            name = rules.member_name(scope=self._s.scope, pool=pool, nonce=secrets.token_hex(4))
            info = await self._engine.create_member(template.model_copy(update={
                "name": name, "labels": {**labels, **own}, "env": {**template.env, **({} if self._token_on_stdin else env)}}))
            if self._token_on_stdin:
                await self._lobby_token(info, env[LOBBY_TOKEN_ENV])
            if self._lobby is not None and not await self._lobby.joined(pool, info, timeout_s=LOBBY_JOIN_TIMEOUT_S):
                await self._engine.remove_member(info)
                raise DependencyUnavailable(f"member {info.name} never reached its lobby", dependency="livekit")
            if all(m.id != info.id for m in self._idle.setdefault(pool, [])):  # a sweep may have found it ready first
                self._idle[pool].append(info)
            self._made_at[info.id] = time.monotonic()
            self._warm_time[pool] = rules.smoothed(self._warm_time.get(pool), self._made_at[info.id] - began)
            self.last_problem = ""
        except OrchestratorError as exc:
            if exc.message != self.last_problem:  # once per new problem, not once per retry
                self._publish(f"pool {pool}: cannot make a member: {exc.message}", pool=pool)
            self.last_problem = exc.message
            log.warning("pool %s: cannot make a member: %s", pool, exc.message)
            await asyncio.sleep(1.0)  # a setting that cannot be met is retried slowly, not in a loop
        finally:
            self._creating[pool] -= 1
            self._wake.set()

    async def _lobby_token(self, member: ContainerInfo, token: str) -> None:
        """A new lobby member's token, written to its stdin; a member that cannot take it is removed."""
        send = self._engine.hand_over(member.name, rules.lobby_token_line(token), timeout_s=HANDOVER_TIMEOUT_S)
        if (why := await self._delivered_or_removed(member, send)) is not None:
            raise DependencyUnavailable(f"member {member.name} did not take its lobby token ({why})", dependency="pool")

    # ---- sweep: what the engine says, recycling ------------------------------------------------------------

    async def sweep(self) -> dict[str, int]:
        """Re-read members from the engine (a restart, another process's claims), recycle and remove."""
        listed_at = time.monotonic()
        members = await self._engine.list_members(scope=self._s.scope)
        now = self._clock()
        current: dict[str, str] = {}
        for pool, template in list(self._templates.items()):
            if (image := await self._image(template.image, refresh=True)) is not None:
                current[pool] = image[0]
        idle: dict[str, list[ContainerInfo]] = {}
        verdicts: Counter[str] = Counter()
        for info, record in members:
            pool = info.labels.get(rules.POOL, "")
            if pool not in self._templates and TEMPLATE in info.labels:
                try:
                    self._templates[pool] = ContainerSpec.model_validate_json(info.labels[TEMPLATE])
                except ValueError:
                    pass
            age = rules.stamp_age(info.labels.get(Label.CREATED_AT), now)
            facts = rules.MemberFacts(
                name=info.name, has_record=record is not None, age_s=age, record_age_s=rules.stamp_age((record or {}).get(Label.CREATED_AT), now),
                running=rules.alive(gone=info.status.gone, created=info.status is ContainerStatus.created, age_s=age),
                image_id=info.labels.get(rules.POOL_IMAGE, ""), pool=pool)
            v = rules.verdict(
                facts, current_image=current, wanted=frozenset(self._templates),
                max_age_s=self._s.pool_max_age_s, reserve_timeout_s=RESERVE_TIMEOUT_S,
            )
            verdicts[v.value] += 1
            # Only a running member is claimable: stdin written before its process starts could be lost.
            if v is rules.Verdict.keep and record is None and not rules.is_canonical(info.name) and info.status.value == "running":
                idle.setdefault(pool, []).append(info)
            elif v not in (rules.Verdict.keep, rules.Verdict.leave):
                log.info("pool %s: removing member %s (%s)", pool, info.name, v.value)
                self._publish(f"pool {pool}: removing member {info.name} ({v.value})", pool=pool, container=info.name)
                await self._engine.remove_member(info)
        # Oldest first, so max age recycles in order; members claimed since the listing are gone from the engine's
        # next answer, and a claim of one already taken fails with MemberGone.
        # Members made while the listing ran are not in it: keep those (still idle in memory) as they are.
        if self._lobby is not None:  # running is not ready: a member is claimable once it waits in its lobby
            idle = {p: await self._lobby.ready(p, ms) for p, ms in idle.items()}
        listed = {info.id for info, _ in members}
        for pool, ms in self._idle.items():
            idle.setdefault(pool, []).extend(m for m in ms if m.id not in listed and self._made_at.get(m.id, 0.0) > listed_at)
        self._made_at = {i: t for i, t in self._made_at.items() if t > listed_at - 60}
        self._idle = {p: sorted(ms, key=lambda m: m.created_at or now) for p, ms in idle.items()}
        self._wake.set()
        return dict(verdicts)

    def idle_names(self) -> list[str]:
        """The idle members' names (the usage sampler reads their memory; claimed ones are agents)."""
        return [m.name for members in self._idle.values() for m in members]

    def snapshot(self) -> dict[str, Any]:
        """For `ps --pool`, the admin API, the dashboard and metrics."""
        now = self._clock()
        return {
            "enabled": self.enabled,
            "pools": [
                {"pool": p, "image": t.image, "network": t.network, "runtime": t.runtime or "default", "memory": t.memory,
                 "idle": len(self._idle.get(p, [])), "creating": self._creating[p], "target": self.target(p),
                 "warm_time_s": round(self.warm_time(p), 3)}
                for p, t in sorted(self._templates.items())
            ],
            # Each idle member (the dashboard's rows): claimed ones are agents, shown as such elsewhere.
            "members": [
                {"name": m.name, "domain": p, "engine": getattr(self._engine, "engine", None), "node": m.node, "state": "idle",
                 "age_s": int((now - m.created_at).total_seconds()) if m.created_at is not None else None}
                for p, members in sorted(self._idle.items()) for m in members
            ],
            "claims": dict(self.outcomes),
            "problem": self.last_problem,
        }

    async def run_forever(self) -> None:
        next_sweep = 0.0
        while True:
            if time.monotonic() >= next_sweep:
                try:
                    await self.sweep()
                except OrchestratorError as exc:
                    log.warning("pool sweep failed: %s", exc.message)
                next_sweep = time.monotonic() + self._s.pool_sweep_s
            self.refill()
            self._wake.clear()
            await wait_event(self._wake, timeout_s=max(0.1, next_sweep - time.monotonic()))

    async def aclose(self) -> None:
        """Cancel the creations in flight and wait for them (a create already in the engine's hands finishes first),
        then remove the idle members: they hold nothing, the next start refills, and a retired deployment's `down`
        leaves no container behind. Each is removed by its pool name, so one another process claimed since is kept."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        idle, self._idle = [m for ms in self._idle.values() for m in ms], {}
        with contextlib.suppress(OrchestratorError, TimeoutError):
            async with asyncio.timeout(10):  # a slow engine must not hold the shutdown
                await asyncio.gather(*(self._engine.remove_member(m) for m in idle))
