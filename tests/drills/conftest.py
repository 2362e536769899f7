"""What every drill checks afterwards: one container per key, none half-made, none outside the rooms asked for."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import docker

from orchestrator.rules.naming import Label


@dataclass(frozen=True)
class Row:
    """One container from a sparse list call (no per-container inspect to race with removals)."""

    id: str
    name: str
    status: str
    labels: dict[str, str]


def by_room(client: docker.DockerClient, scope: str) -> dict[str, list[Row]]:
    rooms: dict[str, list[Row]] = {}
    for r in client.api.containers(all=True, filters={"label": f"{Label.SCOPE}={scope}"}):
        row = Row(id=r["Id"], name=r["Names"][0].lstrip("/"), status=r["State"], labels=r.get("Labels") or {})
        rooms.setdefault(row.labels.get(Label.ROOM, "<no room label>"), []).append(row)
    return rooms


def assert_tidy(client: docker.DockerClient, scope: str, *, rooms: set[str]) -> dict[str, Row]:
    """No duplicate (one container per room and slug), no orphan (no container outside `rooms`, none stuck in
    `created`), nothing lost (every room in `rooms` has its running container). Returns room → container."""
    found = by_room(client, scope)
    per_key = Counter((c.labels.get(Label.ROOM), c.labels.get(Label.AGENT_SLUG)) for cs in found.values() for c in cs)
    duplicates = {k: n for k, n in per_key.items() if n > 1}
    assert not duplicates, f"duplicated containers: {duplicates}"
    orphans = sorted(set(found) - rooms)
    assert not orphans, f"containers for rooms nobody asked for: {orphans}"
    half_made = [c.name for cs in found.values() for c in cs if c.status == "created"]
    assert not half_made, f"created-but-never-started containers left: {half_made}"
    lost = sorted(r for r in rooms if r not in found or found[r][0].status != "running")
    assert not lost, f"rooms without a running container: {lost}"
    return {r: cs[0] for r, cs in found.items()}
