"""GET /metrics: Prometheus text format; container gauges are refreshed from Docker at scrape time."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from orchestrator.errors import OrchestratorError
from orchestrator.models import ContainerStatus

from ..auth import require_admin
from ..deps import MetricsDep, RuntimeDep, SettingsDep

# Admin key needed (Prometheus sends it as a bearer token): per-client figures are not for every caller.
router = APIRouter(tags=["operations"], dependencies=[Depends(require_admin)])


@router.get("/metrics", response_class=Response)
async def metrics_endpoint(metrics: MetricsDep, runtime: RuntimeDep, settings: SettingsDep) -> Response:
    try:
        states = Counter(c.status.value for c in await runtime.list_managed(scope=settings.scope))
    except OrchestratorError:
        metrics.dependency_errors.labels(dependency="docker").inc()
    else:
        for state in ContainerStatus:
            metrics.containers.labels(state=state.value).set(states.get(state.value, 0))
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
