"""GET /metrics: Prometheus text format. Gauges are refreshed at scrape time from cheap in-memory views
(containers from the watch-fed view, or one labelled list while it is not synced, rooms from the room registry, CPU/memory from the background
sampler's latest samples): a scrape never makes a Docker call per container."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from orchestrator.core.errors import OrchestratorError
from orchestrator.core.models import ContainerStatus
from orchestrator.rules.rooms import grace_remaining
from orchestrator.observability.telemetry import room_state_counts

from api.auth import require_metrics_reader
from api.deps import ClockDep, InformerDep, MetricsDep, ReconcilerDep, RuntimeDep, SamplerDep, SettingsDep, count_dependency
from api.schemas import ErrorBody

# An admin or a metrics-only key (Prometheus sends it as a bearer token): per-client figures are not for every
# caller, and a scraper should not hold a key that can close rooms.
router = APIRouter(tags=["operations"], dependencies=[Depends(require_metrics_reader)],
                   responses={code: {"model": ErrorBody} for code in (401, 403, 429)})  # 429: too many wrong keys from one address


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
async def metrics_endpoint(
    metrics: MetricsDep, runtime: RuntimeDep, settings: SettingsDep, reconciler: ReconcilerDep, sampler: SamplerDep,
    clock: ClockDep, informer: InformerDep,
) -> Response:
    now = clock()
    view = informer.view
    try:
        containers = view.state.containers() if view.synced else await runtime.list_managed(scope=settings.scope)
    except OrchestratorError as exc:
        count_dependency(metrics, exc)
    else:
        states = Counter(c.status.value for c in containers)
        for state in ContainerStatus:
            metrics.containers.labels(state=state.value).set(states.get(state.value, 0))
    metrics.view_synced.set(1 if view.synced else 0)
    if (age := view.age_s(now=now)) is not None:
        metrics.view_age.set(age)
    if view.last_event_at is not None:
        metrics.view_event_age.set((now - view.last_event_at).total_seconds())
    rooms = list(reconciler.registry.rooms.values())
    for state, count in room_state_counts(rooms).items():
        metrics.rooms.labels(state=state).set(count)
    metrics.rooms_grace_overdue.set(
        sum(grace_remaining(r, now=now, grace_s=settings.grace_period_s) == 0 for r in rooms)
    )
    cpu = [({"container": u.container, "client_id": u.client_id, "agent": u.agent}, u.cpu_seconds)
           for u in sampler.latest.values() if u.cpu_seconds is not None]
    metrics.agent_cpu_source = lambda: cpu
    metrics.agent_cpu.clear()  # containers gone since the last sample must not linger as flat lines
    metrics.agent_memory.clear()
    for u in sampler.latest.values():
        labels = {"container": u.container, "client_id": u.client_id, "agent": u.agent}
        if u.cpu_ratio is not None:
            metrics.agent_cpu.labels(**labels).set(round(u.cpu_ratio, 4))
        if u.memory_bytes is not None:
            metrics.agent_memory.labels(**labels).set(u.memory_bytes)
    if sampler.last_pass_at is not None:
        metrics.usage_sample_age.set((now - sampler.last_pass_at).total_seconds())
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
