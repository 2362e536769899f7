"""The reconciler's executor and book-keeping on the fake tier: what each action does, and what a pass remembers."""

from __future__ import annotations


from datetime import timedelta

import pytest

from orchestrator.rules import room_metadata
from orchestrator.core.errors import DependencyUnavailable
from orchestrator.core.models import ContainerKey, ContainerStatus, Mode
from orchestrator.rules.naming import agent_identity, container_labels, container_name, retired_name, spec_hash
from orchestrator.rules.planner import DeleteRoom, GiveUp, Removal, RemoveContainer, RestartAgent, RestartRecord, SetRoomMetadata
from orchestrator.observability.pass_report import ActionResult
from orchestrator.services.reconciler import Reconciler
from orchestrator.rules.rooms import RoomSnapshot, RoomState
from orchestrator.settings import Settings
from orchestrator.rules import ownership
from orchestrator.services.signing_key import signing_key
from orchestrator.services.trigger import TriggerService
from devtools.fakes import CLIENT, CREDS, FARAH, T0, FakeRooms, FakeRuntime, tenants

S = Settings(scope="unit", grace_period_s=60, restart_backoff_s=0)
KEY = ContainerKey(client_id="c1", agent_slug="farah", room="r1")
NAME = container_name(KEY)


def world(now=T0):  # type: ignore[no-untyped-def]
    rt, rooms, store = FakeRuntime(), FakeRooms(), tenants()
    launcher = TriggerService(settings=S, tenants=store, livekit=rooms, runtime=rt)
    rec = Reconciler(settings=S, runtime=rt, tenants=store, livekit=rooms, launcher=launcher, clock=lambda: now)
    return rt, rooms, rec


def ours(rt: FakeRuntime, *, status: ContainerStatus = ContainerStatus.running, exit_code: int | None = None):  # type: ignore[no-untyped-def]
    labels = container_labels(KEY, agent=FARAH, mode=Mode.voice, scope="unit",
                              spec=spec_hash(FARAH, image=S.agent_image, mode=Mode.voice), created_at=T0)
    return rt.put(NAME, labels=labels, status=status, exit_code=exit_code)


async def test_remove_acts_on_the_observed_id_and_keeps_a_newer_namesake() -> None:
    rt, _, rec = world()
    old = ours(rt)
    await rt.remove(NAME)
    new = ours(rt)  # a trigger replaced it under the same name since the observation
    result = await rec.executor.execute(RemoveContainer(reason="x", category=Removal.exited, name=NAME, container_id=old.id))
    assert result.ok and rt.containers[NAME].id == new.id


async def test_remove_of_a_gone_container_is_done() -> None:
    _, _, rec = world()
    assert (await rec.executor.execute(RemoveContainer(reason="x", name=NAME, container_id="gone"))).ok


async def test_restart_replaces_the_crashed_container_through_the_trigger_path() -> None:
    rt, rooms, rec = world()
    crashed = ours(rt, status=ContainerStatus.exited, exit_code=1)
    rt.logs[crashed.id] = "Traceback: boom"
    result = await rec.executor.execute(RestartAgent(reason="crashed", name=NAME, container_id=crashed.id, key=KEY, mode="text"))
    assert result.ok
    assert rt.containers[NAME].id != crashed.id and rt.containers[NAME].status is ContainerStatus.running
    assert rt.last_spec.env["AGENT_MODE"] == "text"
    assert ("ensure_room", "r1") in rooms.calls  # the same room rule as a trigger


async def test_give_up_removes_by_id() -> None:
    rt, _, rec = world()
    crashed = ours(rt, status=ContainerStatus.exited, exit_code=1)
    assert (await rec.executor.execute(GiveUp(reason="cap", name=NAME, container_id=crashed.id, key=KEY, attempts=5))).ok
    assert NAME not in rt.containers and ("logs", crashed.id) in rt.calls


async def test_room_actions_reach_the_room_service() -> None:
    _, rooms, rec = world()
    rooms.join(CREDS, "r1", agents=frozenset({"agent-farah"}))
    md = room_metadata.with_grace("{}", T0) or ""
    assert (await rec.executor.execute(SetRoomMetadata(reason="grace", client_id="c1", room="r1", metadata=md))).ok
    assert room_metadata.grace_started(rooms.rooms[(CREDS.api_key, "r1")].metadata) == T0
    assert (await rec.executor.execute(DeleteRoom(reason="grace over", client_id="c1", room="r1"))).ok
    assert (CREDS.api_key, "r1") not in rooms.rooms


async def test_a_failure_names_its_dependency_and_the_pass_goes_on() -> None:
    _, rooms, rec = world()
    rooms.fail = DependencyUnavailable("LiveKit down", dependency="livekit")
    result = await rec.executor.execute(DeleteRoom(reason="grace over", client_id="c1", room="r1"))
    assert (result.ok, result.dependency, result.error) == (False, "livekit", "LiveKit down")


@pytest.mark.parametrize(("action", "ok", "remembered"), [
    (RestartAgent(reason="crashed", name=NAME, key=KEY, attempt=2), True, 2),
    (RestartAgent(reason="crashed", name=NAME, key=KEY, attempt=3), False, 3),  # a failed restart counts too
])
async def test_after_counts_restart_attempts(action: RestartAgent, ok: bool, remembered: int) -> None:
    rt, _, rec = world()
    ours(rt)
    observed, _ = await rec.observe()
    rec._after(observed, [ActionResult(action, ok=ok)], T0)
    assert rec.restarts[KEY].attempts == remembered and rec.restarts[KEY].last_at == T0


async def test_after_gives_a_recovered_agent_a_fresh_budget() -> None:
    """(A closed room is forgotten by the close itself, under the room lock: test_a_pass_closes_a_room_whose_grace_expired.)"""
    rt, rooms, rec = world()
    ours(rt)
    rooms.join(CREDS, "r1", humans=frozenset({"alice"}), agents=frozenset({agent_identity("farah")}))
    observed, _ = await rec.observe()
    rec._sync_registry(observed)
    rec.restarts[KEY] = RestartRecord(attempts=1, last_at=T0)
    rec._after(observed, [], T0)
    assert KEY not in rec.restarts  # the agent is back in its room: a fresh budget next time


async def test_a_pass_restarts_a_crashed_agent_while_a_human_waits() -> None:
    rt, rooms, rec = world()
    crashed = ours(rt, status=ContainerStatus.exited, exit_code=137)
    stamp = ownership.stamp(signing_key(S), client_id=CLIENT.id, room="r1", created_at=T0)  # made by our trigger
    rooms.rooms[(CREDS.api_key, "r1")] = RoomSnapshot(exists=True, metadata=room_metadata.for_new_room(
        agent=FARAH, client_id=CLIENT.id, stamp=stamp))
    rooms.join(CREDS, "r1", humans=frozenset({"alice"}))
    report = await rec.run_once()
    assert [(r.action.kind, r.ok) for r in report.results] == [("RestartAgent", True)]
    assert rt.containers[NAME].id != crashed.id and rec.restarts[KEY].attempts == 1
    assert rec.registry.get("c1", "r1").state is RoomState.STARTING


async def test_a_pass_closes_a_room_whose_grace_expired() -> None:
    later = T0 + timedelta(seconds=61)
    rt, rooms, rec = world(now=later)
    ours(rt)
    rooms.rooms[(CREDS.api_key, "r1")] = RoomSnapshot(
        exists=True, agents=frozenset({agent_identity("farah")}), metadata=room_metadata.with_grace("{}", T0) or ""
    )
    report = await rec.run_once()
    assert sorted(r.action.kind for r in report.results) == ["DeleteRoom", "RemoveContainer"]
    assert not rt.containers and (CREDS.api_key, "r1") not in rooms.rooms
    assert CLIENT.id not in {k[0] for k in rec.registry.rooms}


@pytest.mark.parametrize(("seen_after_s", "kept"), [
    (2, True),  # a view a moment behind the trigger's create: the close must survive it
    (30, False),  # long after: a room with no container of ours is not ours to track
])
async def test_a_room_that_just_changed_is_not_forgotten_for_a_container_the_view_lacks(seen_after_s: float, kept: bool) -> None:
    from orchestrator.rules.planner import Observation
    from orchestrator.rules.rooms import AgentLaunched, CloseRequested

    _, _, rec = world()
    rec.registry.apply("c1", "r1", AgentLaunched(), now=T0)
    rec.registry.apply("c1", "r1", CloseRequested(reason="closed by an operator"), now=T0 + timedelta(seconds=1))
    rec._sync_registry(Observation(at=T0 + timedelta(seconds=seen_after_s), containers=()))  # no container in it
    room = rec.registry.rooms.get(("c1", "r1"))
    assert (room is not None and room.state is RoomState.CLOSING) is kept


class SettingAside(FakeRuntime):
    """runtime.NameRelease on the fake engine: a rename to the retired name, or a refusal (`refuse`)."""

    def __init__(self, *, refuse: bool = False) -> None:
        super().__init__()
        self.refuse = refuse

    async def set_aside(self, container_id: str) -> bool:
        self.calls.append(("set_aside", container_id))
        if self.refuse or (info := self._find(container_id)) is None:
            return False
        del self.containers[info.name]
        self.containers[retired_name(container_id)] = info.model_copy(update={"name": retired_name(container_id)})
        return True


def steps(rt: FakeRuntime, crashed_id: str) -> list[str]:
    """The engine calls of a restart, by kind, with the dead container's id shown as `dead`."""
    return [f"{kind} {'dead' if ref == crashed_id else ref}" for kind, ref in rt.calls if kind != "list"]


@pytest.mark.parametrize("refuse, expected", [
    # The key's name is freed at once: the replacement starts before the dead one's logs and removal.
    (False, ["get dead", "set_aside dead", f"get {NAME}", f"create {NAME}", "logs dead", "remove dead"]),
    # An engine that cannot set it aside (gone, daemon trouble): removed first, as engines without a rename do.
    (True, ["get dead", "set_aside dead", "logs dead", "remove dead", f"get {NAME}", f"create {NAME}"]),
])
async def test_a_restart_frees_the_keys_name_before_its_replacement_starts(refuse: bool, expected: list[str]) -> None:
    _, _, rec = world()
    rt = SettingAside(refuse=refuse)
    rec.executor._runtime = rec.executor._launcher._runtime = rt  # type: ignore[attr-defined]
    crashed = ours(rt, status=ContainerStatus.exited, exit_code=1)
    result = await rec.executor.execute(RestartAgent(reason="crashed", name=NAME, container_id=crashed.id, key=KEY, mode="voice"))
    assert result.ok, result.error
    assert [s for s in steps(rt, crashed.id) if s.split()[0] in ("get", "set_aside", "create", "logs", "remove")] == expected
    assert set(rt.containers) == {NAME} and rt.containers[NAME].id != crashed.id  # nothing set aside is left


async def test_a_restart_that_cannot_launch_still_removes_the_container_it_set_aside() -> None:
    _, _, rec = world()
    rt = SettingAside()
    rec.executor._runtime = rec.executor._launcher._runtime = rt  # type: ignore[attr-defined]
    crashed = ours(rt, status=ContainerStatus.exited, exit_code=1)

    async def refused(spec: object) -> None:
        raise DependencyUnavailable("the engine refused the create", dependency="docker")

    rt.create_and_start = refused  # type: ignore[method-assign]
    result = await rec.executor.execute(RestartAgent(reason="crashed", name=NAME, container_id=crashed.id, key=KEY, mode="voice"))
    assert not result.ok and result.dependency == "docker"
    assert rt.containers == {} and rt.calls[-1] == ("remove", crashed.id)  # the next pass restarts an absent agent
