"""Every branch of reuse-or-launch on the fake tier (no engine): what is answered and what is done."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from orchestrator.core.errors import Conflict, DependencyUnavailable, LimitExceeded
from orchestrator.core.models import ContainerKey, ContainerStatus, Mode, TriggerOutcome
from orchestrator.rules.naming import Label, container_labels, container_name, spec_hash
from orchestrator.settings import Settings
from orchestrator.services.trigger import TriggerService
from devtools.fakes import CLARENCE, FARAH, T0, FakeRooms, FakeRuntime, tenants

S = Settings(scope="unit", max_agents_per_room=2, max_agents_per_client=3, max_agents_total=4,
             container_start_timeout_s=0.2)
KEY = ContainerKey(client_id="c1", agent_slug="farah", room="r1")
NAME = container_name(KEY)


def labels(key: ContainerKey = KEY, *, mode: Mode = Mode.voice, scope: str = "unit") -> dict[str, str]:
    agent = FARAH if key.agent_slug == "farah" else CLARENCE
    return container_labels(key, agent=agent, mode=mode, scope=scope,
                            spec=spec_hash(agent, image=S.agent_image, mode=mode), created_at=T0)


def service(rt: FakeRuntime, *, rooms: FakeRooms | None = None, settings: Settings = S) -> TriggerService:
    return TriggerService(settings=settings, tenants=tenants(), livekit=rooms or FakeRooms(), runtime=rt)


async def trigger(rt: FakeRuntime, *, room: str = "r1", slug: str = "farah", client: str = "c1",
                  mode: Mode = Mode.voice, svc: TriggerService | None = None):  # type: ignore[no-untyped-def]
    return await (svc or service(rt)).trigger(client_id=client, agent_slug=slug, mode=mode, user_id="u", room_name=room)


def other(room: str, slug: str = "clarence-coherence", client: str = "c1") -> tuple[str, dict[str, str]]:
    key = ContainerKey(client_id=client, agent_slug=slug, room=room)
    return container_name(key), labels(key)


def put_running(*pairs: tuple[str, dict[str, str]], status: ContainerStatus = ContainerStatus.running) -> Callable[[FakeRuntime], None]:
    def setup(rt: FakeRuntime) -> None:
        for name, lab in pairs:
            rt.put(name, labels=lab, status=status, exit_code=1 if status is ContainerStatus.exited else None)
    return setup


def race(rt: FakeRuntime) -> None:
    rt.race_names.add(NAME)


def race_other_key(rt: FakeRuntime) -> None:
    rt.race_names.add(NAME)
    rt.race_labels = labels(ContainerKey(client_id="c1", agent_slug="clarence-coherence", room="zz"))


def unstartable(rt: FakeRuntime) -> None:
    rt.put(NAME, labels=labels(), status=ContainerStatus.created)
    rt.fail_start.add(NAME)


CASES: list[tuple[str, Callable[[FakeRuntime], None], TriggerOutcome, list[str]]] = [
    ("nothing there → created", lambda rt: None, TriggerOutcome.created, ["create"]),
    ("running → reused as it is", put_running((NAME, labels())), TriggerOutcome.reused, []),
    ("created but never started → started", put_running((NAME, labels()), status=ContainerStatus.created),
     TriggerOutcome.reused, ["start"]),
    ("created and unstartable → replaced", unstartable, TriggerOutcome.created, ["start", "remove", "create"]),
    ("exited → last logs kept, replaced", put_running((NAME, labels()), status=ContainerStatus.exited),
     TriggerOutcome.created, ["logs", "remove", "create"]),
    ("paused (frozen by someone) → replaced like a dead one", put_running((NAME, labels()), status=ContainerStatus.paused),
     TriggerOutcome.created, ["logs", "remove", "create"]),
    ("restarting that never comes up → replaced", put_running((NAME, labels()), status=ContainerStatus.restarting),
     TriggerOutcome.created, ["logs", "remove", "create"]),
    ("name race: another process's container for this key is reused", race, TriggerOutcome.reused, ["create"]),
    ("dead containers do not count against the limits",
     put_running(other("r1"), other("r1", "x1"), status=ContainerStatus.exited), TriggerOutcome.created, ["create"]),
]


@pytest.mark.parametrize(("name", "setup", "outcome", "acts"), CASES, ids=[c[0] for c in CASES])
async def test_reuse_or_launch(name: str, setup: Callable[[FakeRuntime], None], outcome: TriggerOutcome, acts: list[str]) -> None:
    rt = FakeRuntime()
    setup(rt)
    result = await trigger(rt)
    assert result.outcome is outcome
    assert result.container.name == NAME and rt.containers[NAME].status is ContainerStatus.running
    assert [what for what, ref in rt.calls if what not in ("get", "list") and ref == NAME] == acts
    assert result.user_token == "user-token:u:r1"


@pytest.mark.parametrize(("starts_by_itself", "acts", "status"), [
    (False, ["start"], ContainerStatus.running),  # Docker, Swarm: a created container is started and waited for
    (True, [], ContainerStatus.created),  # Kubernetes: the kubelet runs it; answered as its create was
])
async def test_a_created_container_is_waited_for_only_where_a_create_waits(
    starts_by_itself: bool, acts: list[str], status: ContainerStatus,
) -> None:
    rt = FakeRuntime()
    rt.starts_by_itself = starts_by_itself
    rt.put(NAME, labels=labels(), status=ContainerStatus.created)
    result = await trigger(rt)
    assert (result.outcome, result.container.status) == (TriggerOutcome.reused, status)
    assert [what for what, ref in rt.calls if what not in ("get", "list") and ref == NAME] == acts


REFUSALS = [
    ("another key holds the name → 409", put_running((NAME, labels(ContainerKey(client_id="c2", agent_slug="farah", room="zz")))),
     Conflict),
    ("another deployment holds the name → 409", put_running((NAME, labels(scope="other"))), Conflict),
    ("name race won by another key → 409", race_other_key, Conflict),
    ("room full (distinct slugs) → 429", put_running(other("r1"), other("r1", "x1")), LimitExceeded),
    ("client full → 429", put_running(other("a"), other("b"), other("c")), LimitExceeded),
    ("deployment full → 429", put_running(other("a"), other("b"), other("c", client="c2"), other("d", client="c2")),
     LimitExceeded),
]


@pytest.mark.parametrize(("name", "setup", "error"), REFUSALS, ids=[c[0] for c in REFUSALS])
async def test_refusals_create_nothing(name: str, setup: Callable[[FakeRuntime], None], error: type[Exception]) -> None:
    rt = FakeRuntime()
    setup(rt)
    before = dict(rt.containers)
    with pytest.raises(error):
        await trigger(rt)
    ours = labels()
    assert not [c for n, c in rt.containers.items() if n not in before and c.labels == ours]  # a race winner may be there
    assert not [what for what, _ in rt.calls if what in ("remove", "stop")]


async def test_no_room_no_container() -> None:
    rt, rooms = FakeRuntime(), FakeRooms()
    rooms.fail = DependencyUnavailable("LiveKit down", dependency="livekit")
    with pytest.raises(DependencyUnavailable) as info:
        await trigger(rt, svc=service(rt, rooms=rooms))
    assert info.value.dependency == "livekit" and not rt.containers


async def test_reused_container_answers_its_own_mode() -> None:
    """A text request that reuses a voice agent is told `voice` (the container's label), not its own wish."""
    rt = FakeRuntime()
    rt.put(NAME, labels=labels(mode=Mode.voice))
    result = await trigger(rt, mode=Mode.text)
    assert (result.outcome, result.mode, result.spec_stale) == (TriggerOutcome.reused, Mode.voice, False)


async def test_created_container_gets_the_requested_mode() -> None:
    rt = FakeRuntime()
    result = await trigger(rt, mode=Mode.text)
    assert result.mode is Mode.text and rt.last_spec.env["AGENT_MODE"] == "text"
    assert rt.last_spec.env["LIVEKIT_TOKEN"] == "agent-token:farah:r1"


async def test_a_list_older_than_a_finished_create_still_counts_it() -> None:
    """Deployment limit 1: B's list is taken while A's create is under way and answers after it.

    B must still count A's container (it is neither in B's list nor in flight any more).
    """
    rt = FakeRuntime()
    svc = service(rt, settings=S.model_copy(update={"max_agents_total": 1}))
    rt.create_gate = asyncio.Event()
    a = asyncio.create_task(trigger(rt, room="ra", svc=svc))
    await until(lambda: rt.creating == 1)
    rt.list_gate = asyncio.Event()
    b = asyncio.create_task(trigger(rt, room="rb", svc=svc))
    await until(lambda: rt.listing == 1)  # B's snapshot is taken: A's container is not in it
    rt.create_gate.set()
    assert (await a).outcome is TriggerOutcome.created
    rt.list_gate.set()
    with pytest.raises(LimitExceeded):
        await b
    assert len(rt.containers) == 1


async def test_concurrent_triggers_for_one_key_make_one_container() -> None:
    rt = FakeRuntime()
    svc = service(rt)
    results = await asyncio.gather(*(trigger(rt, svc=svc) for _ in range(10)))
    assert sorted(r.outcome.value for r in results) == ["created"] + ["reused"] * 9
    assert [what for what, _ in rt.calls].count("create") == 1


async def until(probe: Callable[[], bool], *, rounds: int = 1000) -> None:
    """Let other tasks run until `probe` holds (bounded; no wall-clock sleeps)."""
    for _ in range(rounds):
        if probe():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def test_a_view_that_has_not_seen_a_new_container_yet_still_counts_it() -> None:
    """Deployment limit 1, limits read from the watch-fed view: A's container is made but its event has not
    arrived; B must still be refused."""
    from orchestrator.runtime import WatchEvent
    from orchestrator.rules.view import AgentView

    rt, view = FakeRuntime(), AgentView()
    view.apply(WatchEvent(kind="relist"), now=T0)  # synced, and it stays behind: no informer feeds it
    svc = TriggerService(settings=S.model_copy(update={"max_agents_total": 1}), tenants=tenants(), livekit=FakeRooms(),
                         runtime=rt, view=view)
    assert (await trigger(rt, room="ra", svc=svc)).outcome is TriggerOutcome.created
    with pytest.raises(LimitExceeded):
        await trigger(rt, room="rb", svc=svc)
    assert len(rt.containers) == 1


async def test_once_the_view_has_shown_a_container_its_removal_frees_the_slot_at_once() -> None:
    from orchestrator.runtime import WatchEvent
    from orchestrator.rules.view import AgentView

    rt, view = FakeRuntime(), AgentView()
    view.apply(WatchEvent(kind="relist"), now=T0)
    svc = TriggerService(settings=S.model_copy(update={"max_agents_total": 1}), tenants=tenants(), livekit=FakeRooms(),
                         runtime=rt, view=view)
    made = (await trigger(rt, room="ra", svc=svc)).container
    view.apply(WatchEvent(kind="upsert", info=made), now=T0)
    with pytest.raises(LimitExceeded):
        await trigger(rt, room="rb", svc=svc)  # the view shows it now: counted once, by the view
    await rt.remove(made.name)
    view.apply(WatchEvent(kind="delete", info=made), now=T0)
    assert (await trigger(rt, room="rb", svc=svc)).outcome is TriggerOutcome.created


async def test_agents_the_view_saw_come_and_go_are_not_counted_even_unasked() -> None:
    """Churn: a client at its limit closes every agent; the view saw each container come and go without any
    trigger asking it in between. The next round of triggers must all be admitted (it runs nothing)."""
    from orchestrator.runtime import WatchEvent
    from orchestrator.rules.view import AgentView

    rt, view = FakeRuntime(), AgentView()
    view.apply(WatchEvent(kind="relist"), now=T0)
    svc = TriggerService(settings=S, tenants=tenants(), livekit=FakeRooms(), runtime=rt, view=view)
    for cycle in range(3):
        rooms = [f"c{cycle}-{i}" for i in range(S.max_agents_per_client)]
        made = await asyncio.gather(*(trigger(rt, room=r, svc=svc) for r in rooms))  # all asked before any is shown
        assert [m.outcome for m in made] == [TriggerOutcome.created] * len(rooms), f"cycle {cycle}"
        for m in made:  # shown, then closed: the view sees each come and go; nobody asks it meanwhile
            view.apply(WatchEvent(kind="upsert", info=m.container), now=T0)
            await rt.remove(m.container.name)
            view.apply(WatchEvent(kind="delete", info=m.container), now=T0)


async def test_admission_error_counts_reserved_keys_and_changes_nothing() -> None:
    """A dispatch offer asks before it accepts: the answer counts promised keys and holds no slot itself."""
    rt = FakeRuntime()
    svc = service(rt, settings=S.model_copy(update={"max_agents_per_room": 1}))
    promised = ContainerKey(client_id="c1", agent_slug="clarence-coherence", room="r1")
    assert await svc.admission_error(KEY) is None
    assert await svc.admission_error(KEY) is None  # asking twice took no slot
    refused = await svc.admission_error(KEY, reserved=[promised])
    assert isinstance(refused, LimitExceeded) and "max_agents_per_room" in refused.message
    assert (await trigger(rt, svc=svc)).outcome is TriggerOutcome.created  # nothing was left in flight


async def test_a_dispatched_launch_joins_with_the_jobs_token_and_labels() -> None:
    rt = FakeRuntime()
    outcome, _ = await service(rt).launch_dispatched(
        KEY, client=await tenants().get_client("c1"), agent=FARAH, mode=Mode.voice, token="job-token",
        labels={Label.JOB_ID: "AJ_1"},
    )
    assert outcome is TriggerOutcome.created and rt.last_spec.env["LIVEKIT_TOKEN"] == "job-token"
    assert rt.last_spec.labels[Label.JOB_ID] == "AJ_1"
