"""Small probes shared by the swarm tests: services of a scope, participants of a room."""

from __future__ import annotations

from contextlib import closing
from typing import Any

from livekit import api

from orchestrator.livekit.client import LiveKitGateway
from orchestrator.core.models import LiveKitCredentials
from orchestrator.rules.naming import Label
from devtools.swarm_cluster import Node, SwarmCluster


def manager(swarm: SwarmCluster, *, avoid: Node | None = None) -> Node:
    return next(n for n in swarm.nodes if n.running() and n is not avoid)


def services(swarm: SwarmCluster, scope: str, *, via: Node | None = None) -> list[dict[str, Any]]:
    with closing((via or manager(swarm)).client()) as c:
        return c.api.services(filters={"label": f"{Label.SCOPE}={scope}"})


def running_tasks(swarm: SwarmCluster, service_id: str, *, via: Node | None = None) -> list[dict[str, Any]]:
    with closing((via or manager(swarm)).client()) as c:
        return [t for t in c.api.tasks(filters={"service": service_id}) if t["Status"]["State"] == "running" and t["DesiredState"] == "running"]


def node_names(swarm: SwarmCluster, *, via: Node | None = None) -> dict[str, str]:
    with closing((via or manager(swarm)).client()) as c:
        return {n["ID"]: n["Description"]["Hostname"] for n in c.api.nodes()}


async def identities(gw: LiveKitGateway, creds: LiveKitCredentials, room: str) -> list[tuple[str, int]]:
    return [(p.identity, p.kind) for p in await gw.list_participants(creds, room=room)]


AGENT_KIND = api.ParticipantInfo.Kind.AGENT
