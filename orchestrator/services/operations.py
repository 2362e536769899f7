"""What an operator or a tenant does by hand: close a room, stop one agent. One path for the API, the admin API
and the CLI (which calls the admin API), so a close means the same thing wherever it is asked for."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.observability.starts import Stage, stage
from orchestrator.core.errors import NotFound
from orchestrator.core.models import ContainerInfo
from orchestrator.observability.pass_report import PassReport
from orchestrator.rules.naming import Label
from orchestrator.runtime import ContainerRuntime
from orchestrator.services.reconciler import Reconciler
from orchestrator.services.trigger import TriggerService
from orchestrator.settings import Settings


@dataclass(frozen=True)
class Operations:
    """Hand-made changes; each forgets the view's answers for the room first so nothing re-launches what was closed."""

    settings: Settings
    runtime: ContainerRuntime
    trigger: TriggerService
    reconciler: Reconciler

    async def containers(self, client_id: str, room: str) -> list[ContainerInfo]:
        """This deployment's agent containers in one room of one client."""
        return [
            c for c in await self.runtime.list_managed(scope=self.settings.scope)
            if c.labels.get(Label.CLIENT_ID) == client_id and c.labels.get(Label.ROOM) == room
        ]

    async def close_room(self, client_id: str, room: str, *, reason: str = "closed by an operator") -> PassReport:
        """Stop every agent of the room and delete the LiveKit room (this room only: Reconciler.close_now); NotFound
        when none is ours (only rooms holding one of our agents are ours to delete)."""
        async with self.trigger.starts.begin("close", client_id=client_id, room=room):  # a close is timed and traced too
            with stage(Stage.close):
                if not (found := await self.containers(client_id, room)):
                    raise NotFound(f"no agent of client '{client_id}' in room '{room}' on this deployment")
                self.trigger.forget_view_answers(client_id, room)
                report = await self.reconciler.close_now(client_id, room, found, reason=reason)
                self.trigger.starts.abandon(client_id=client_id, room=room)  # its agents will not join now
            self.trigger.starts.bind(outcome="closed")
            return report

    async def stop_agent(self, client_id: str, room: str, agent_slug: str) -> list[str]:
        """Stop one agent of a room now (the room stays open); the names of the containers stopped."""
        found = [c for c in await self.containers(client_id, room) if c.labels.get(Label.AGENT_SLUG) == agent_slug]
        if not found:
            raise NotFound(f"no agent '{agent_slug}' of client '{client_id}' in room '{room}' on this deployment")
        self.trigger.forget_view_answers(client_id, room)
        for c in found:
            await self.runtime.stop(c.id, timeout_s=self.settings.agent_stop_timeout_s)
            await self.runtime.remove(c.id)
        self.reconciler.wake()
        return [c.name for c in found]
