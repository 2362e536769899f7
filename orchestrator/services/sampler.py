"""Per-agent CPU and memory, sampled in the background so a /metrics scrape never waits on N Docker calls.

Every `interval_s` one labelled list call, then a one-shot stats call per running container with at
most `concurrency` in flight (docker-py's pool and the engine are shared with triggers). Scrapes and
the dashboard read `latest`, which is never older than one interval plus one pass. Idle warm-pool members
(`members`: their names) are sampled in the same pass into `member_memory`, never `latest`: they are not agents.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from orchestrator.core.clock import utcnow
from orchestrator.core.errors import DependencyError, OrchestratorError
from orchestrator.core.models import ContainerStatus
from orchestrator.rules.naming import Label
from orchestrator.runtime import ContainerRuntime
from orchestrator.rules.usage import UsageSample, cpu_ratio, parse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentUsage:
    container: str
    client_id: str
    agent: str
    cpu_ratio: float | None  # None until a second sample of the same container exists
    memory_bytes: int | None
    sampled_at: datetime
    cpu_seconds: float | None = None  # cumulative CPU time since the container started (the counter's value)


class UsageSampler:
    def __init__(
        self, *, runtime: ContainerRuntime, scope: str, interval_s: float, concurrency: int,
        on_error: Callable[[str], None] | None = None, clock: Callable[[], datetime] = utcnow,
        members: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self.latest: dict[str, AgentUsage] = {}
        self.member_memory: dict[str, int] = {}  # idle pool member's name -> bytes in use
        self.passes = 0
        self.last_pass_at: datetime | None = None
        self._runtime = runtime
        self._scope = scope
        self._interval_s = interval_s
        self._limit = asyncio.Semaphore(concurrency)
        self._previous: dict[str, UsageSample] = {}
        self._on_error = on_error or (lambda dependency: None)
        self._clock = clock
        self._members = members

    async def sample_once(self) -> None:
        try:
            containers = await self._runtime.list_managed(scope=self._scope)
        except OrchestratorError as exc:
            log.warning("usage sampler: cannot list containers: %s", exc.message)
            self._on_error(exc.dependency if isinstance(exc, DependencyError) else "docker")
            return
        running = [c for c in containers if c.status is ContainerStatus.running]

        async def one(name: str) -> tuple[str, dict | None]:
            async with self._limit:
                try:
                    return name, await self._runtime.stats(name)
                except OrchestratorError as exc:
                    log.warning("usage sampler: stats of %s failed: %s", name, exc.message, extra={"container": name})
                    self._on_error(exc.dependency if isinstance(exc, DependencyError) else "docker")
                    return name, None
                except Exception as exc:  # noqa: BLE001 - one unreadable answer must not cost the pass its other figures
                    # A container removed mid-pass: Docker answers its stats with an empty body, which the SDK
                    # fails to decode. Skip that one; it is gone (or back, and sampled next pass).
                    log.warning("usage sampler: skipped %s this pass, its stats were unreadable (removed meanwhile?): %s",
                                name, type(exc).__name__, extra={"container": name})
                    return name, None

        agents = {c.name for c in running}
        member_names = [n for n in self._members() if n not in agents]  # a member claimed meanwhile is an agent now
        raw = dict(await asyncio.gather(*(one(name) for name in [*agents, *member_names])))
        now = self._clock()
        latest: dict[str, AgentUsage] = {}
        samples: dict[str, UsageSample] = {}
        for c in running:
            sample = _parsed(c.id, c.name, raw.get(c.name))
            if sample is None:
                continue
            prev = self._previous.get(c.name)
            samples[c.name] = sample
            latest[c.name] = AgentUsage(
                container=c.name, client_id=c.labels.get(Label.CLIENT_ID, ""), agent=c.labels.get(Label.AGENT_SLUG, ""),
                cpu_ratio=cpu_ratio(prev, sample) if prev else None, memory_bytes=sample.memory_bytes, sampled_at=now,
                cpu_seconds=sample.cpu_total_ns / 1e9,
            )
        member_samples = {n: _parsed(n, n, raw.get(n)) for n in member_names}
        self.member_memory = {n: m.memory_bytes for n, m in member_samples.items() if m is not None and m.memory_bytes is not None}
        # Containers that stopped or went away drop out here, so their gauges disappear at the next scrape.
        self._previous, self.latest = samples, latest
        self.passes += 1
        self.last_pass_at = now

    async def run_forever(self) -> None:
        while True:
            try:
                await self.sample_once()
            except Exception:  # the sampler must outlive any one bad pass
                log.exception("usage sampler pass crashed")
            await asyncio.sleep(self._interval_s)


def _parsed(cid: str, name: str, body: dict | None) -> UsageSample | None:
    """The sample in a stats answer; None for none, or for a partial one (a container torn down as it answered)."""
    if not body:
        return None
    try:
        return parse(cid, body)
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("usage sampler: skipped %s this pass, its stats were incomplete: %s", name, type(exc).__name__,
                    extra={"container": name})
        return None
