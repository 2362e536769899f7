"""Specs a warm pool test or bench starts from: an idle member's (as services.pool makes it) and a key's cold one."""

from __future__ import annotations

import secrets

from orchestrator.core.clock import utcnow
from orchestrator.core.models import Agent, ContainerKey, Mode
from orchestrator.rules import pool as rules
from orchestrator.rules.launch_spec import ContainerSpec
from orchestrator.rules.naming import container_labels, container_name
from devtools.world import CLIENT_ID

AGENT_IMAGE = "agent-orchestrator/agent:latest"


def member_spec(scope: str, *, image: str = AGENT_IMAGE, pool: str | None = None) -> ContainerSpec:
    """An idle member: a pool name, the member labels, nothing of any tenant (no key, no token) in it."""
    pool = pool or "p" + secrets.token_hex(5)
    labels = rules.member_labels(scope=scope, pool=pool, image_id=image, created_at=utcnow().isoformat())
    return ContainerSpec(
        name=rules.member_name(scope=scope, pool=pool, nonce=secrets.token_hex(4)), image=image, labels=labels,
        env={"AGENT_WARM": "1", "AGENT_WARM_MAX_AGE_SECONDS": "600"}, memory="64m", cpus=0.1, pids=64, network="",
        restart_policy="no", restart_max=0, stop_timeout_s=2, stdin=True,
    )


def key_spec(scope: str, room: str, *, client: str = CLIENT_ID, image: str = AGENT_IMAGE) -> ContainerSpec:
    """The cold spec of one key, as the trigger would start it (labels of the key, a token in env)."""
    key = ContainerKey(client_id=client, agent_slug="farah", room=room)
    labels = container_labels(key, agent=Agent(id="a1", slug="farah", name="Farah"), mode=Mode.voice, scope=scope, spec="s1",
                              created_at=utcnow())
    return ContainerSpec(
        name=container_name(key), image=image, labels=labels, env={"LIVEKIT_TOKEN": "not-a-real-token", "LIVEKIT_ROOM": room},
        memory="64m", cpus=0.1, pids=64, network="", restart_policy="no", restart_max=0, stop_timeout_s=2,
    )
