"""The reconciler's executor: applies planned actions idempotently, a room being closed as one unit under its lock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from orchestrator.core.errors import DependencyError, NotFound, OrchestratorError
from orchestrator.core.locks import KeyedLocks
from orchestrator.core.models import ContainerInfo, ContainerKey, ContainerStatus, Mode
from orchestrator.livekit.service import RoomService
from orchestrator.observability.pass_report import ActionResult, log_fields
from orchestrator.rules import ownership, room_metadata
from orchestrator.rules.agent_states import ended_abnormally
from orchestrator.rules.planner import Action, DeleteRoom, GiveUp, RemoveContainer, RestartAgent, RoomKey, SetRoomMetadata
from orchestrator.rules.rooms import AgentLaunched, Due, RoomRegistry, RoomState, due
from orchestrator.rules.view import AgentView
from orchestrator.runtime import ContainerRuntime, NameRelease, WatchEvent
from orchestrator.services.signing_key import signing_key
from orchestrator.settings import Settings
from orchestrator.tenants import TenantStore

log = logging.getLogger(__name__)


def dependency_of(exc: Exception, default: str | None) -> str | None:
    """Which dependency an error names (typed at the adapter), or `default` when it names none."""
    return exc.dependency if isinstance(exc, DependencyError) and exc.dependency != "unknown" else default


class Launcher(Protocol):
    """What a restart needs from the trigger path (TriggerService implements it)."""

    async def launch_for_key(self, key: ContainerKey, *, mode: Mode) -> tuple[Any, ContainerInfo]: ...


class Executor:
    """Applies a pass's actions: all at once, except that the actions closing one room run together under its lock."""

    def __init__(
        self, *, settings: Settings, runtime: ContainerRuntime, tenants: TenantStore, livekit: RoomService,
        launcher: Launcher, registry: RoomRegistry, clock: Callable[[], datetime], room_locks: KeyedLocks,
        view: AgentView | None,
    ) -> None:
        self.settings = settings
        self._runtime = runtime
        self._tenants = tenants
        self._livekit = livekit
        self._launcher = launcher
        self._registry = registry
        self._clock = clock
        self._room_locks = room_locks  # shared with the trigger (TriggerService.room_locks)
        self._view = view

    async def execute_all(self, actions: list[Action], *, observed_at: datetime) -> list[ActionResult]:
        """Every action at once, except that a room being closed is closed as one unit (see close_room)."""
        closing: dict[RoomKey, list[int]] = {(a.client_id, a.room): [] for a in actions if isinstance(a, DeleteRoom)}
        for i, a in enumerate(actions):
            if isinstance(a, RemoveContainer | DeleteRoom) and (a.client_id, a.room) in closing:
                closing[(a.client_id, a.room)].append(i)
        grouped = {i for members in closing.values() for i in members}
        results: list[ActionResult | None] = [None] * len(actions)

        async def single(i: int) -> None:
            results[i] = await self.execute(actions[i])

        async def room(room_key: RoomKey, members: list[int]) -> None:
            for i, r in zip(members, await self.close_room(room_key, [actions[i] for i in members], observed_at=observed_at), strict=True):
                results[i] = r

        await asyncio.gather(
            *(single(i) for i in range(len(actions)) if i not in grouped),
            *(room(rk, members) for rk, members in closing.items()),
        )
        return [r for r in results if r is not None]

    async def close_room(self, room_key: RoomKey, actions: list[Action], *, observed_at: datetime) -> list[ActionResult]:
        """Close a room under its lock, after checking that no trigger came in since the observation.

        A trigger claims its room under the same lock (in this process) and stamps the room metadata
        when the room is in grace (for other processes): either it comes first and the room is kept
        with its agent, or the close comes first and the trigger then finds no container and launches
        a fresh one in a fresh room. It can never answer "reused" for a container this close removes.
        """
        client_id, name = room_key
        async with self._room_locks.hold(room_key):
            why, metadata = await self._retriggered(room_key, observed_at=observed_at)
            if why is not None:
                log.info("not closing room %s: %s", name, why, extra={"client_id": client_id, "room": name})
                return [ActionResult(a, ok=True, skipped=why) for a in actions]
            removals = [a for a in actions if not isinstance(a, DeleteRoom)]
            results = list(await asyncio.gather(*(self.execute(a) for a in removals)))
            if self._view is not None:
                # The trigger waiting on this lock answers from the view: it must not see the removed agent,
                # whose delete event may still be on its way from the engine.
                for r in results:
                    if r.ok and isinstance(r.action, RemoveContainer) and r.action.container_id:
                        gone = ContainerInfo(id=r.action.container_id, name=r.action.name, status=ContainerStatus.exited)
                        self._view.apply(WatchEvent(kind="delete", info=gone), now=self._clock())
            for a in actions:
                if isinstance(a, DeleteRoom):
                    # Re-checked on the metadata read just now: the room of that name may be another tenant's
                    # since ours closed (our agents go either way; the room only when its stamp proves it ours).
                    if metadata is not None and (mine := ownership.deletable(
                        signing_key(self.settings), metadata, client_id=client_id, room=name,
                    )):
                        log.warning("not deleting room %s: %s", name, mine, extra=log_fields(a))
                        results.append(ActionResult(a, ok=True, skipped=mine))
                        continue
                    results.append(r := await self.execute(a))
                    if r.ok:
                        self._registry.forget(client_id, name)
            order = {id(r.action): r for r in results}
            return [order[id(a)] for a in actions]

    async def _retriggered(self, room_key: RoomKey, *, observed_at: datetime) -> tuple[str | None, str | None]:
        """Why the room must not be closed after all (or None to go on), and the room's metadata as LiveKit has
        it now (None when it could not be read)."""
        client_id, name = room_key
        room, now = self._registry.rooms.get(room_key), self._clock()
        s = self.settings
        if room is not None and room.state is not RoomState.CLOSING and due(
            room, now=now, grace_s=s.grace_period_s, startup_timeout_s=s.agent_startup_timeout_s
        ) is not Due.GRACE_EXPIRED:
            return f"a trigger came in (room is {room.state.value} again)", None
        try:
            client = await self._tenants.get_client(client_id)
            found = await self._livekit.list_rooms(client.livekit, names=[name])
        except OrchestratorError:
            return None, None  # cannot see the stamp: close as planned (the in-process lock still holds)
        metadata = found[0].metadata if found else None
        stamp = room_metadata.triggered(metadata) if metadata is not None else None
        if stamp is not None and stamp > observed_at:
            # Another process triggered this room: treat it as a trigger here (a fresh grace period).
            self._registry.apply(client_id, name, AgentLaunched(), now=now)
            return "a trigger in another process came in (room metadata stamp)", metadata
        return None, metadata

    async def execute(self, action: Action) -> ActionResult:
        """Idempotent: NotFound counts as done; one failure never stops the other actions."""
        try:
            await self._apply(action)
        except NotFound:
            return ActionResult(action, ok=True)
        except Exception as exc:  # reported in the pass summary, not raised: the pass goes on
            message = exc.message if isinstance(exc, OrchestratorError) else f"{type(exc).__name__}: {exc}"
            log.warning("reconcile action %s failed: %s", action.kind, message, extra=log_fields(action))
            return ActionResult(action, ok=False, error=message, dependency=dependency_of(exc, None))
        return ActionResult(action, ok=True)

    async def _apply(self, action: Action) -> None:
        s = self.settings
        match action:
            case RemoveContainer(name=name, container_id=cid):
                await self._log_tail(cid or name, action)
                await self._runtime.stop(cid or name, timeout_s=s.agent_stop_timeout_s)
                await self._runtime.remove(cid or name)
            case RestartAgent(name=name, container_id=cid, key=key, mode=mode) if key is not None:
                dead = await self._runtime.get(cid or name)
                # Humans wait: the dead one's name is freed at once where the engine can, its logs and removal follow.
                aside = cid is not None and isinstance(self._runtime, NameRelease) and await self._runtime.set_aside(cid)
                if not aside:
                    await self._retire(cid or name, dead, action)
                try:
                    _, made = await self._launcher.launch_for_key(key, mode=Mode(mode))
                finally:
                    if aside:
                        await self._retire(cid or name, dead, action)
                # The new agent shows why the key was restarted (an engine that keeps exit codes: Docker's `_seen`),
                # as one Docker restarted in place does: `ps`, the rooms API and the feed keep naming the cause.
                if dead is not None and dead.exit_code and (note := getattr(self._runtime, "note_exit", None)) is not None:
                    note(made.name, dead.exit_code)
            case GiveUp(name=name, container_id=cid):
                tail = await self._runtime.logs_tail(cid or name, lines=20)
                log.error("giving up on %s: %s; last log lines:\n%s", name, action.reason, tail, extra=log_fields(action))
                await self._runtime.remove(cid or name)
            case DeleteRoom(client_id=client_id, room=room):
                client = await self._tenants.get_client(client_id)
                await self._livekit.delete_room(client.livekit, room=room)
            case SetRoomMetadata(client_id=client_id, room=room, metadata=metadata):
                client = await self._tenants.get_client(client_id)
                await self._livekit.update_room_metadata(client.livekit, room=room, metadata=metadata)
            case _:
                raise TypeError(f"no executor for {action!r}")

    async def _retire(self, ref: str, info: ContainerInfo | None, action: Action) -> None:
        """A dead agent's last lines kept (as `_log_tail`), then its container removed."""
        await self._log_tail(ref, action, info=info)
        await self._runtime.remove(ref)

    async def _log_tail(self, name: str, action: Action, *, info: ContainerInfo | None = None) -> ContainerInfo | None:
        """The agent's last lines go to our log only when it ended abnormally (agent_states.ended_abnormally);
        the container as it was (None when gone). `info`: as read before (a container set aside is no agent)."""
        info = info or await self._runtime.get(name)
        if info is None or not ended_abnormally(info):
            log.info("%s %s (%s)", action.kind, name, action.reason, extra=log_fields(action))
            return info
        tail = await self._runtime.logs_tail(name, lines=20)
        log.info("%s %s (%s); last log lines:\n%s", action.kind, name, action.reason, tail, extra=log_fields(action))
        return info
