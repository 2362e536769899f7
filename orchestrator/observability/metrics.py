"""Prometheus metrics, in a registry per app (so tests and two apps in one process never clash).

Counters move where things happen (trigger route, reconciler, runtime errors); gauges of containers
and rooms are computed at scrape time from what the runtime reports, never from a cache that can lie.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from orchestrator import __version__

# A start's stages span 1 ms (a view answer) to a minute (a cold image on a busy node).
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # process_cpu_seconds_total (a counter: rate() it), memory, fds, start time: the standard process_* set.
        ProcessCollector(registry=r)
        build = Gauge("orchestrator_build_info", "Always 1; the labels say which build runs", ["version", "python"], registry=r)
        build.labels(version=__version__, python=platform.python_version()).set(1)
        self.start_stage_seconds = Histogram(
            "orchestrator_start_stage_duration_seconds",
            "Time a start spent in each stage (tenant_lookup, room_claim, admission, engine, agent_joined, close)",
            ["stage", "engine", "launch", "outcome"], registry=r, buckets=STAGE_BUCKETS,
        )
        # Every 4xx/5xx the orchestrator decides, by a reason from a fixed set (observability.refusals).
        self.refusals = Counter("orchestrator_refusals", "Requests refused, by why", ["reason", "status"], registry=r)
        # Agents' CPU as a counter (the engine's cumulative CPU time, read by the background sampler): rate() it.
        self.agent_cpu_source: Callable[[], Iterable[tuple[dict[str, str], float]]] = lambda: ()
        r.register(_AgentCpuSeconds(lambda: self.agent_cpu_source()))
        # The warm pool's members and claims, read at scrape time from its snapshot (services.pool).
        self.pool_source: Callable[[], Mapping[str, Any]] = dict
        r.register(_PoolSeries(lambda: self.pool_source()))
        self.triggers = Counter("orchestrator_triggers", "Trigger requests by outcome", ["outcome"], registry=r)
        self.trigger_seconds = Histogram(
            "orchestrator_trigger_seconds", "Trigger latency by outcome", ["outcome"], registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.containers = Gauge("orchestrator_containers", "Managed containers by state", ["state"], registry=r)
        self.rooms = Gauge("orchestrator_rooms", "Rooms by lifecycle state", ["state"], registry=r)
        self.reconcile_actions = Counter(
            "orchestrator_reconcile_actions", "Reconciler actions by kind and result", ["action", "result"], registry=r
        )
        self.reconcile_seconds = Histogram("orchestrator_reconcile_seconds", "Duration of one reconcile pass", registry=r)
        self.restarts = Counter("orchestrator_agent_restarts", "Crashed agents restarted by the orchestrator", registry=r)
        self.dependency_errors = Counter(
            "orchestrator_dependency_errors", "Errors talking to Docker or LiveKit", ["dependency"], registry=r
        )
        self.agent_cpu = Gauge("orchestrator_agent_cpu_ratio", "Agent container CPU use (1 = one core)", ["container", "client_id", "agent"], registry=r)
        self.agent_memory = Gauge("orchestrator_agent_memory_bytes", "Agent container memory use", ["container", "client_id", "agent"], registry=r)
        # The operator surface: what the alert rules in deploy/alerts.yml need.
        self.reconcile_removals = Counter(
            "orchestrator_reconcile_removals", "Containers removed by the reconciler, by why", ["reason"], registry=r
        )
        self.restart_give_ups = Counter("orchestrator_agent_restart_give_ups", "Crashed agents given up on after the restart cap", registry=r)
        self.container_deaths = Counter("orchestrator_container_deaths", "Docker die/oom events of managed containers", ["event"], registry=r)
        self.rooms_grace_overdue = Gauge(
            "orchestrator_rooms_grace_overdue", "Rooms still in grace although their grace period has ended", registry=r
        )
        self.agent_limit = Gauge("orchestrator_agent_limit", "Configured agent limits", ["limit"], registry=r)
        self.view_synced = Gauge("orchestrator_view_synced", "1 while the watch-fed view of containers is current", registry=r)
        self.view_age = Gauge("orchestrator_view_age_seconds", "Seconds since the view's last full relist", registry=r)
        self.view_event_age = Gauge(
            "orchestrator_view_last_event_age_seconds", "Seconds since the runtime's watch last delivered anything", registry=r
        )
        self.usage_sample_age = Gauge(
            "orchestrator_usage_sample_age_seconds", "Age of the newest CPU/memory sample (background sampler)", registry=r
        )
        # LiveKit dispatch: jobs by outcome (received/accepted/rejected/failed/ended), rejections by why,
        # and how long from a job's arrival to its agent listed in the room.
        self.dispatch_jobs = Counter("orchestrator_dispatch_jobs", "Jobs LiveKit dispatched, by outcome", ["outcome"], registry=r)
        self.dispatch_rejections = Counter(
            "orchestrator_dispatch_rejections", "Dispatched jobs refused at availability, by why", ["reason"], registry=r
        )
        self.dispatch_join_seconds = Histogram(
            "orchestrator_dispatch_join_seconds", "Job received → its agent listed in the room", registry=r,
            buckets=(0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30),
        )
        self.dispatch_registrations = Gauge(
            "orchestrator_dispatch_registrations", "Agent-worker registrations with LiveKit, by state", ["state"], registry=r
        )


class _AgentCpuSeconds(Collector):
    """`orchestrator_agent_cpu_seconds_total{container,client_id,agent}`, read at scrape time from the last samples."""

    def __init__(self, source: Callable[[], Iterable[tuple[dict[str, str], float]]]) -> None:
        self._source = source

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "orchestrator_agent_cpu_seconds", "CPU time used by each agent container since it started (rate() it)",
            labels=["container", "client_id", "agent"],
        )
        for labels, seconds in self._source():
            family.add_metric([labels["container"], labels["client_id"], labels["agent"]], seconds)
        yield family


class _PoolSeries(Collector):
    """`orchestrator_pool_members{pool,state}`, `orchestrator_pool_target{pool}`, `orchestrator_pool_memory_bytes{pool}`
    and `orchestrator_pool_claims_total{outcome}` (warm | cold | handover-failed): what a pool holds, what it costs and
    how often a start found a member."""

    def __init__(self, source: Callable[[], Mapping[str, Any]]) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        snap = self._source()
        members = GaugeMetricFamily("orchestrator_pool_members", "Warm pool members by pool and state", labels=["pool", "state"])
        target = GaugeMetricFamily("orchestrator_pool_target", "Members each pool is sized to now (adaptive)", labels=["pool"])
        memory = GaugeMetricFamily("orchestrator_pool_memory_bytes", "Memory the idle members of each pool use (last usage sample)",
                                   labels=["pool"])
        for p in snap.get("pools", ()):
            members.add_metric([p["pool"], "idle"], p["idle"])
            members.add_metric([p["pool"], "creating"], p["creating"])
            target.add_metric([p["pool"]], p["target"])
            if p.get("memory_used_bytes") is not None:
                memory.add_metric([p["pool"]], p["memory_used_bytes"])
        claims = CounterMetricFamily("orchestrator_pool_claims", "Starts that asked the pool, by outcome", labels=["outcome"])
        for outcome, n in sorted((snap.get("claims") or {}).items()):
            claims.add_metric([outcome], n)
        yield members
        yield target
        yield memory
        yield claims
