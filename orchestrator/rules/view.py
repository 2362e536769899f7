"""The watch-fed picture of our agents (an informer's store): pure update rules, no I/O.

A relist replaces everything; `upsert`/`delete` change one container. Events carry the engine's
ordering number (`seq`) where it has one, and an event older than what the view holds for that
container is dropped, so duplicates and out-of-order deliveries cannot roll state back. A deleted
container leaves a bounded tombstone so a late `upsert` for it does not resurrect it.

Readers get immutable snapshots (`ViewState`): every update builds a new one and swaps it in, so
nobody ever sees half an update. The view makes answers faster, never authoritative: callers fall
back to the engine on a miss, and the 409/lock rules still decide creation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from orchestrator.core.bounded import Newest
from orchestrator.rules.agent_exits import failing
from orchestrator.core.models import ContainerInfo, ContainerKey, Health
from orchestrator.rules.naming import key_from_labels
from orchestrator.core.models import WatchEvent

_TOMBSTONES = 4096  # deleted ids remembered against late upserts; older ones fall off (a relist resets all)
TOMBSTONE_S = 300.0  # ... and for this long at most: a late upsert comes within a watch's lag, not minutes later


@dataclass(frozen=True)
class ViewState:
    """One consistent picture: by id, by engine name and by key (several ids per key while duplicates exist)."""

    by_id: Mapping[str, ContainerInfo] = field(default_factory=lambda: MappingProxyType({}))
    by_name: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    by_key: Mapping[ContainerKey, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def of(cls, items: Iterable[ContainerInfo]) -> "ViewState":
        by_id = {c.id: c for c in items}
        by_name = {c.name: c.id for c in by_id.values()}
        by_key: dict[ContainerKey, tuple[str, ...]] = {}
        for c in by_id.values():
            if (key := key_from_labels(c.labels)) is not None:
                by_key[key] = (*by_key.get(key, ()), c.id)
        return cls(MappingProxyType(by_id), MappingProxyType(by_name), MappingProxyType(by_key))

    def with_upsert(self, info: ContainerInfo) -> "ViewState":
        """A new state with one container set (copies the maps: C-speed, no re-parse of every label set)."""
        state = self.without(info.id)
        by_id, by_name, by_key = dict(state.by_id), dict(state.by_name), dict(state.by_key)
        by_id[info.id] = info
        by_name[info.name] = info.id
        if (key := key_from_labels(info.labels)) is not None:
            by_key[key] = (*by_key.get(key, ()), info.id)
        return ViewState(MappingProxyType(by_id), MappingProxyType(by_name), MappingProxyType(by_key))

    def without(self, cid: str) -> "ViewState":
        old = self.by_id.get(cid)
        if old is None:
            return self
        by_id, by_name, by_key = dict(self.by_id), dict(self.by_name), dict(self.by_key)
        del by_id[cid]
        if by_name.get(old.name) == cid:
            del by_name[old.name]
        if (key := key_from_labels(old.labels)) is not None:
            rest = tuple(i for i in by_key.get(key, ()) if i != cid)
            if rest:
                by_key[key] = rest
            else:
                by_key.pop(key, None)
        return ViewState(MappingProxyType(by_id), MappingProxyType(by_name), MappingProxyType(by_key))

    def containers(self) -> tuple[ContainerInfo, ...]:
        return tuple(self.by_id.values())

    def named(self, name: str) -> ContainerInfo | None:
        cid = self.by_name.get(name)
        return self.by_id.get(cid) if cid is not None else None

    def for_key(self, key: ContainerKey) -> tuple[ContainerInfo, ...]:
        return tuple(self.by_id[cid] for cid in self.by_key.get(key, ()))


class AgentView:
    """The store: `apply(event, now)` is the one way in; `state` is the current snapshot."""

    def __init__(self) -> None:
        self.state = ViewState()
        self.synced_at: datetime | None = None  # last relist applied: None until the first one
        self.last_event_at: datetime | None = None  # last event of any kind applied (or dropped as stale)
        self._seq: dict[str, int] = {}  # newest seq applied per container id
        # id -> seq of its delete, bounded by count and age
        self._tombstones: Newest[str, int] = Newest(cap=_TOMBSTONES, max_age=timedelta(seconds=TOMBSTONE_S))

    @property
    def synced(self) -> bool:
        return self.synced_at is not None

    def invalidate(self) -> None:
        """The stream broke: until the next relist, nobody may answer from this view."""
        self.synced_at = None

    def apply(self, event: WatchEvent, *, now: datetime) -> bool:
        """Apply one event; returns False when it was dropped as older than what the view holds."""
        self.last_event_at = now
        match event.kind:
            case "relist":
                self._relist(event, now=now)
                return True
            case "broken":
                self.invalidate()
                return True
            case "upsert" if event.info is not None:
                return self._upsert(event.info, event.seq)
            case "delete" if event.info is not None:
                return self._delete(event.info, event.seq, now=now)
        raise ValueError(f"malformed watch event: {event!r}")

    def _stale(self, cid: str, seq: int | None) -> bool:
        if seq is None:
            return False
        tomb = self._tombstones.get(cid)
        newest = max(self._seq.get(cid, -1), tomb if tomb is not None else -1)
        return seq < newest

    def _relist(self, event: WatchEvent, *, now: datetime) -> None:
        self.state = ViewState.of(event.items)
        self._seq = {c.id: event.seq for c in event.items} if event.seq is not None else {}
        self._tombstones.clear()
        self.synced_at = now

    def _upsert(self, info: ContainerInfo, seq: int | None) -> bool:
        if self._stale(info.id, seq) or (seq is None and info.id in self._tombstones):
            return False
        self.state = self.state.with_upsert(info)  # a rename arrives as an upsert of the same id, new name
        if seq is not None:
            self._seq[info.id] = seq
        return True

    def _delete(self, info: ContainerInfo, seq: int | None, *, now: datetime) -> bool:
        if self._stale(info.id, seq):
            return False
        self.state = self.state.without(info.id)
        self._seq.pop(info.id, None)
        self._tombstones.put(info.id, seq if seq is not None else max(self._seq.values(), default=0), now=now)
        return True

    @property
    def tombstones(self) -> int:
        """Deleted ids remembered (bounded by count and age)."""
        return len(self._tombstones)

    def saw_deleted(self, cid: str) -> bool:
        """Whether this view saw `cid` deleted (since its last relist): a container it has seen come and go."""
        return cid in self._tombstones

    def age_s(self, *, now: datetime) -> float | None:
        """Seconds since the last relist; None before the first."""
        return None if self.synced_at is None else (now - self.synced_at).total_seconds()


def change_signal(event: WatchEvent, before: ContainerInfo | None) -> str | None:
    """What an upsert/delete means for operators and the reconciler ("die", "health_status: unhealthy",
    "destroy"), or None when nothing worth a pass changed. Counted once per transition, not per event."""
    info = event.info
    if info is None or event.kind not in ("upsert", "delete"):
        return None
    if event.kind == "delete":
        return "destroy" if before is not None else None
    if info.status.gone and (before is None or not before.status.gone):  # exited, dead or paused (models)
        return "die"
    if info.health is Health.unhealthy and (before is None or before.health is not Health.unhealthy):
        return "health_status: unhealthy"
    if failing(info.reason) and (before is None or before.reason != info.reason):
        return "failing"  # exited with an error and restarted by the engine (agent_exits: why, in words)
    return None
