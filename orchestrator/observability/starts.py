"""Where each start spends its time: every stage is timed once and feeds the stage histograms, the timelines of
the last starts, the progress stream of the people waiting, and (when tracing is on) the start's trace.

A service opens a start (`Starts.begin`) and wraps each stage in `stage(...)`; the start in progress travels in a
context variable, so the services below the trigger (admission, the engine call, a pool claim) mark their stage
without being handed anything. Outside a start, `stage` does nothing.
"""

from __future__ import annotations

import contextvars
import enum
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from orchestrator.core.clock import utcnow
from orchestrator.observability.metrics import Metrics
from orchestrator.observability.progress import ProgressHub
from orchestrator.observability.tracing import Tracing
from orchestrator.rules.naming import agent_identity


class Stage(str, enum.Enum):
    tenant_lookup = "tenant_lookup"
    room_claim = "room_claim"
    admission = "admission"
    engine = "engine"  # create (cold), claim (warm, a pool member) or find (reuse)
    agent_joined = "agent_joined"  # the engine call's end → LiveKit says the agent is in the room
    close = "close"


@dataclass
class StageMark:
    stage: str
    offset_s: float  # from the start's beginning
    duration_s: float | None = None  # None while it runs
    outcome: str = "running"  # ok | an error code


@dataclass
class StartRecord:
    """One start (or restart, dispatch, close) as the operator's timeline shows it."""

    id: int
    kind: str  # trigger | restart | dispatch | close
    client_id: str
    room: str | None
    agent_slug: str | None
    started_at: datetime
    engine: str
    launch: str = "none"  # cold | warm | reuse | none (nothing launched: a refusal, a close)
    outcome: str = "running"  # created | reused | closed | an error code
    container: str | None = None
    node: str | None = None
    trace_id: str | None = None
    stages: list[StageMark] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "started_at": self.started_at.isoformat()}


@dataclass(frozen=True)
class Measured:
    """A stage timed before its start opened: a dispatched job's lookup and limits, answered at LiveKit's
    availability request, become the first stages of the start its assignment opens (`Starts.begin(earlier=...)`)."""

    stage: Stage
    start_ns: int  # wall clock (time.time_ns): the trace's clock
    end_ns: int


@dataclass
class _Run:
    record: StartRecord
    t0: float
    span: Any = None  # the start's span when tracing is on
    engine_span: Any = None
    engine_ended: float | None = None


_current: contextvars.ContextVar[tuple[Starts, _Run] | None] = contextvars.ContextVar("orchestrator_start", default=None)
_JOIN_WAIT_S = 600.0  # an expected join never reported is dropped after this (its record says `agent_joined: running`)
JOINS_MAX = 1000  # expected joins held at most (oldest dropped first): a burst of agents that never join is no leak


def current_record() -> StartRecord | None:
    cur = _current.get()
    return cur[1].record if cur is not None else None


def stage(name: Stage) -> Any:
    """Time a stage of the start in progress (a no-op outside one). Usable as `with` and `async with`."""
    cur = _current.get()
    return cur[0]._stage(cur[1], name) if cur is not None else nullcontext()


def note(*, launch: str | None = None, container: str | None = None, node: str | None = None) -> None:
    """What the engine call found out: the launch type (a pool claim says `warm`), the container and its node."""
    cur = _current.get()
    if cur is None:
        return
    r = cur[1].record
    r.launch, r.container, r.node = launch or r.launch, container or r.container, node or r.node


def agent_traceparent() -> str | None:
    """The `traceparent` an agent launched now continues from (the engine call's span); None when tracing is off."""
    cur = _current.get()
    if cur is None or not cur[0].tracing.enabled:
        return None
    starts, run = cur
    return starts.tracing.traceparent(run.engine_span or run.span)


def agent_trace_env(*, otlp_endpoint: str | None) -> dict[str, str]:
    """The variables an agent launched now gets to continue the trace (agent_image/tracing.py); {} with tracing off."""
    if (traceparent := agent_traceparent()) is None:
        return {}
    return {"TRACEPARENT": traceparent, **({"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint} if otlp_endpoint else {})}


class Starts:
    """The recorder: one per engine; it keeps the last `keep` starts and the joins it still waits for."""

    def __init__(self, *, metrics: Metrics | None = None, tracing: Tracing | None = None, engine: str = "docker",
                 keep: int = 200, clock: Callable[[], datetime] = utcnow) -> None:
        self.metrics = metrics
        self.tracing = tracing or Tracing.off()
        self.engine = engine
        self.progress = ProgressHub()
        self.recent: deque[StartRecord] = deque(maxlen=keep)
        self._clock = clock
        self._ids = 0
        self._joins: dict[tuple[str, str, str], _Run] = {}  # (client, room, agent identity) → its start

    @asynccontextmanager
    async def begin(self, kind: str, *, client_id: str, room: str | None = None, agent_slug: str | None = None,
                    parent: Any = None, earlier: Sequence[Measured] = ()) -> AsyncIterator[StartRecord]:
        """`earlier`: stages timed before this one opened (`Measured`); the start then began when the first of them did."""
        self._ids += 1
        ago_s = (time.time_ns() - earlier[0].start_ns) / 1e9 if earlier else 0.0
        record = StartRecord(id=self._ids, kind=kind, client_id=client_id, room=room, agent_slug=agent_slug,
                             started_at=self._clock() - timedelta(seconds=ago_s), engine=self.engine)
        run = _Run(record=record, t0=time.perf_counter() - ago_s)
        self.recent.append(record)
        token = _current.set((self, run))
        span_cm = (self.tracing.span(kind, attributes=self._attrs(record), parent=parent,
                                     start_ns=earlier[0].start_ns if earlier else None)
                   if self.tracing.enabled else nullcontext())
        try:
            with span_cm as span:
                run.span = span
                if span is not None:
                    record.trace_id = self.tracing.trace_id(span)
                self._replay(run, earlier)
                try:
                    yield record
                except BaseException as exc:
                    record.outcome = getattr(exc, "code", "internal") if isinstance(exc, Exception) else "cancelled"
                    raise
                finally:
                    if span is not None:
                        span.set_attributes({k: v for k, v in self._attrs(record).items() if v is not None})
        finally:
            _current.reset(token)
            self._finished(run)

    def _replay(self, run: _Run, earlier: Sequence[Measured]) -> None:
        """Stages timed before the start opened, into its timeline and its trace as they happened."""
        for m in earlier:
            mark = StageMark(stage=m.stage.value, offset_s=round((m.start_ns - earlier[0].start_ns) / 1e9, 4),
                             duration_s=round((m.end_ns - m.start_ns) / 1e9, 4), outcome="ok")
            run.record.stages.append(mark)
            self.progress.publish(run.record, mark)
            if run.span is not None:
                self.tracing.record_span(m.stage.value, parent=run.span, start_ns=m.start_ns, end_ns=m.end_ns, attributes={})

    def bind(self, *, room: str | None = None, agent_slug: str | None = None, outcome: str | None = None) -> None:
        """Facts learnt during the start (the room generated after the tenant lookup, the outcome)."""
        cur = _current.get()
        if cur is None:
            return
        r = cur[1].record
        if room and r.room is None:
            r.room = room
            for mark in r.stages:  # a frontend waiting on this room hears what happened before it was named
                self.progress.publish(r, mark)
        r.agent_slug, r.outcome = agent_slug or r.agent_slug, outcome or r.outcome

    def expect_join(self, *, identity: str) -> None:
        """The start launched an agent: its `agent_joined` stage runs until `joined` hears of it."""
        cur = _current.get()
        if cur is None or cur[1].record.room is None:
            return
        run = cur[1]
        now = time.perf_counter()
        mark = StageMark(stage=Stage.agent_joined.value, offset_s=round((run.engine_ended or now) - run.t0, 4))
        run.record.stages.append(mark)
        self.progress.publish(run.record, mark)
        key = (run.record.client_id, run.record.room, identity)
        if (replaced := self._joins.pop(key, None)) is not None:  # a relaunch waits anew, at the end of the order
            self._give_up(replaced, "relaunched")
        self._joins[key] = run
        self._expire(now)

    def abandon(self, *, client_id: str, room: str) -> int:
        """The room was closed: joins still awaited there will never come (their mark says `room_closed`)."""
        gone = [k for k in self._joins if k[:2] == (client_id, room)]
        for k in gone:
            self._give_up(self._joins.pop(k), "room_closed")
        return len(gone)

    @property
    def awaiting(self) -> int:
        """Joins still awaited (bounded by JOINS_MAX and _JOIN_WAIT_S)."""
        return len(self._joins)

    def _expire(self, now: float) -> None:
        """Oldest first (insertion order is start order): past the wait, or over the cap."""
        while self._joins:
            key, run = next(iter(self._joins.items()))
            if now - run.t0 < _JOIN_WAIT_S and len(self._joins) <= JOINS_MAX:
                return
            self._give_up(self._joins.pop(key), "never_joined")

    @staticmethod
    def _give_up(run: _Run, outcome: str) -> None:
        for mark in reversed(run.record.stages):
            if mark.stage == Stage.agent_joined.value and mark.outcome == "running":
                mark.outcome = outcome
                return

    def joined(self, *, client_id: str, room: str, identity: str) -> bool:
        """LiveKit reported the agent in its room (a webhook): close the start's last stage."""
        run = self._joins.pop((client_id, room, identity), None)
        if run is None:
            return False
        now = time.perf_counter()
        mark = next(m for m in reversed(run.record.stages) if m.stage == Stage.agent_joined.value)
        mark.duration_s, mark.outcome = round(now - (run.engine_ended or run.t0) , 4), "ok"
        self._observe(run.record, mark)
        self.progress.publish(run.record, mark)
        if self.tracing.enabled and run.span is not None:
            end_ns = time.time_ns()
            self.tracing.record_span(Stage.agent_joined.value, parent=run.span, start_ns=end_ns - int(mark.duration_s * 1e9),
                                     end_ns=end_ns, attributes={"livekit.identity": identity, "orchestrator.room": room})
        return True

    def timelines(self, *, client_id: str | None = None, room: str | None = None, limit: int = 20) -> list[StartRecord]:
        found = [r for r in reversed(self.recent)
                 if (client_id is None or r.client_id == client_id) and (room is None or r.room == room)]
        return found[:limit]

    @contextmanager
    def _stage(self, run: _Run, name: Stage) -> Iterator[StageMark]:
        started = time.perf_counter()
        mark = StageMark(stage=name.value, offset_s=round(started - run.t0, 4))
        run.record.stages.append(mark)
        self.progress.publish(run.record, mark)
        span_cm = self.tracing.span(name.value) if self.tracing.enabled else nullcontext()
        try:
            with span_cm as span:
                if name is Stage.engine:
                    run.engine_span = span
                yield mark
        except BaseException as exc:
            mark.outcome = getattr(exc, "code", "internal") if isinstance(exc, Exception) else "cancelled"
            raise
        else:
            mark.outcome = "ok"
        finally:
            ended = time.perf_counter()
            mark.duration_s = round(ended - started, 4)
            if name is Stage.engine:
                run.engine_ended = ended
            self.progress.publish(run.record, mark)

    def _finished(self, run: _Run) -> None:
        for mark in run.record.stages:
            if mark.duration_s is not None:
                self._observe(run.record, mark)
        self.progress.finished(run.record)

    def _observe(self, record: StartRecord, mark: StageMark) -> None:
        if self.metrics is not None and mark.duration_s is not None:
            self.metrics.start_stage_seconds.labels(
                stage=mark.stage, engine=record.engine, launch=record.launch, outcome=mark.outcome,
            ).observe(mark.duration_s)

    @staticmethod
    def _attrs(r: StartRecord) -> dict[str, Any]:
        return {"orchestrator.client_id": r.client_id, "orchestrator.room": r.room or "", "orchestrator.agent": r.agent_slug or "",
                "orchestrator.engine": r.engine, "orchestrator.launch": r.launch, "orchestrator.outcome": r.outcome,
                "orchestrator.container": r.container or "", "orchestrator.node": r.node or ""}


def settled(*, outcome: str, container: str, node: str | None, agent_slug: str) -> None:
    """The engine call's result: created (cold, or warm when a pool claim said so) or reused; a launch waits to join."""
    cur = _current.get()
    if cur is None:
        return
    starts, run = cur
    r = run.record
    if r.launch == "none":
        r.launch = "cold" if outcome == "created" else "reuse"
    r.outcome, r.container, r.node = outcome, container, node or r.node
    if outcome == "created":
        starts.expect_join(identity=agent_identity(agent_slug))
