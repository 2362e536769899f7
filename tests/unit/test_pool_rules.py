"""Warm pool rules (pure tables): pool identity, sizing, refill bound, the claim state machine and recycling."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from orchestrator.rules import pool as rules
from orchestrator.rules.naming import Label

SPEC = {"name": "agent_c_farah_r1", "labels": {"x": "1"}, "env": {"LIVEKIT_TOKEN": "t"}, "image": "img", "network": "n1",
        "memory": "512m", "cpus": 1.0, "runtime": None}


@pytest.mark.parametrize(("change", "same_pool"), [
    ({"name": "agent_other"}, True),  # tenant fields never split a pool
    ({"labels": {"y": "2"}}, True),
    ({"env": {"LIVEKIT_TOKEN": "other", "OPENAI_API_KEY": "k"}}, True),
    ({"network": "n2"}, False),  # another network is another isolation domain
    ({"runtime": "runsc"}, False),  # gVisor gets its own pool
    ({"image": "img2"}, False),
    ({"memory": "1g"}, False),
])
def test_pool_identity(change: dict, same_pool: bool) -> None:
    a = rules.pool_hash(engine="docker", spec=SPEC)
    assert (rules.pool_hash(engine="docker", spec={**SPEC, **change}) == a) is same_pool


def test_engines_never_share_a_pool() -> None:
    assert rules.pool_hash(engine="docker", spec=SPEC) != rules.pool_hash(engine="kubernetes", spec=SPEC)


def test_member_names_are_no_agent_names_and_one_record_name_per_member() -> None:
    name = rules.member_name(scope="prod", pool="abc", nonce="1234")
    assert not rules.is_canonical(name) and rules.is_canonical("agent_c_farah_r1")
    # The record is the claim's mutex: every claimant of a member asks the engine for the same name.
    assert rules.record_name("m" * 64) == rules.record_name("m" * 64) != rules.record_name("n" * 64)
    labels = rules.member_labels(scope="prod", pool="abc", image_id="sha256:1", created_at="t")
    assert Label.MANAGED not in labels and labels[Label.SCOPE] == "prod"


@pytest.mark.parametrize(("record", "keyed"), [
    ({Label.CLIENT_ID: "c", Label.AGENT_SLUG: "farah", Label.ROOM: "r1", rules.POOL_MEMBER: "id", rules.POOL_NAME: "n"}, True),
    (None, False),  # renamed without a record: unkeyed, an orphan to the planner
])
def test_claimed_labels(record: dict | None, keyed: bool) -> None:
    labels = rules.claimed_labels(member_labels={rules.POOL: "abc", Label.SCOPE: "s"}, record=record)
    assert labels[Label.MANAGED] == "true" and labels[rules.POOL] == "abc"
    assert (Label.ROOM in labels) is keyed and rules.POOL_MEMBER not in labels and rules.POOL_NAME not in labels


@pytest.mark.parametrize(("rate", "expected"), [
    (0.0, 2),  # idle: the minimum
    (1.0, 3),  # 1/s × 1.5 s × 2 = 3
    (5.0, 15),
    (100.0, 20),  # capped at the maximum
])
def test_target_size(rate: float, expected: int) -> None:
    assert rules.target_size(minimum=2, maximum=20, claims_per_s=rate, warm_time_s=1.5) == expected


@pytest.mark.parametrize(("samples", "expected"), [
    ([4.0], 4.0),  # the first member made: its time as is
    ([1.0, 5.0], 2.2),  # one slow member moves the estimate a third of the way
    ([1.0] + [5.0] * 10, 4.89),  # a loaded engine: the estimate follows it
    ([5.0] * 5 + [1.0] * 10, 1.11),  # and comes back down when the engine is quiet again
])
def test_measured_warm_time(samples: list[float], expected: float) -> None:
    estimate = None
    for s in samples:
        estimate = rules.smoothed(estimate, s)
    assert estimate == pytest.approx(expected, abs=0.01)
    # the sizing follows it: 5 claims/s while members take ~5 s to make want 50 members (× 2 headroom), not 15
    assert rules.target_size(minimum=2, maximum=100, claims_per_s=5, warm_time_s=5.0) == 50


@pytest.mark.parametrize(("target", "idle", "creating", "concurrency", "expected"), [
    (10, 0, 0, 4, 4),  # bounded by the refill concurrency
    (10, 0, 3, 4, 1),
    (10, 8, 0, 4, 2),
    (2, 5, 0, 4, 0),  # over target: nothing (recycling trims, creation never goes negative)
    (10, 0, 6, 4, 0),
])
def test_to_create(target: int, idle: int, creating: int, concurrency: int, expected: int) -> None:
    assert rules.to_create(target=target, idle=idle, creating=creating, concurrency=concurrency) == expected


@pytest.mark.parametrize(("claims", "at", "peak"), [
    ([], 0.0, 0),
    ([100.0 + i * 0.02 for i in range(100)], 105.0, 100),  # 100 rooms in 2 s: a burst of 100
    ([100.0 + i * 0.02 for i in range(100)], 100.0 + 3500, 100),  # kept for an hour
    ([100.0 + i * 0.02 for i in range(100)], 100.0 + 3600 + 200, 0),  # then forgotten
    ([i * 0.25 for i in range(480)], 130.0, 40),  # a steady 4/s for 2 minutes: 40 within any 10 s
    ([0.0, 5.0, 9.9, 10.0, 19.9], 20.0, 3),  # a span is 10 s: 0, 5 and 9.9 together; 10.0 is a new span
])
def test_claim_rate_peak(claims: list[float], at: float, peak: int) -> None:
    rate = rules.ClaimRate()
    for t in claims:
        rate.record(t)
    assert rate.peak(at) == peak


def test_a_learnt_burst_sizes_the_pool_after_the_rate_has_fallen() -> None:
    """A burst of 100 an hour ago is still in the target although its minute's rate is gone (capped at the max)."""
    rate = rules.ClaimRate()
    for i in range(100):
        rate.record(100.0 + i * 0.02)
    now = 100.0 + 1800
    assert rate.per_second(now) == 0.0
    assert rules.target_size(minimum=2, maximum=100, claims_per_s=0.0, warm_time_s=1.5, peak=rate.peak(now)) == 100
    assert rules.target_size(minimum=2, maximum=10, claims_per_s=0.0, warm_time_s=1.5, peak=rate.peak(now)) == 10


def test_claim_rate_window() -> None:
    rate = rules.ClaimRate(window_s=10)
    for t in range(10):
        rate.record(float(t))
    assert rate.per_second(9.0) == 1.0
    assert rate.per_second(15.0) == 0.5  # the first five fell out of the window
    assert rate.per_second(100.0) == 0.0


@pytest.mark.parametrize(("name", "record", "running", "state"), [
    ("pool_s_abc_1", False, True, rules.MemberState.idle),
    ("pool_s_abc_1", True, True, rules.MemberState.reserved),
    ("agent_c_farah_r1", True, True, rules.MemberState.claimed),
    ("agent_c_farah_r1", True, False, rules.MemberState.claimed),  # a claimed agent's death is the reconciler's
    ("agent_c_farah_r1", False, True, rules.MemberState.stray),
    ("pool_s_abc_1", False, False, rules.MemberState.dead),
])
def test_state_machine(name: str, record: bool, running: bool, state: rules.MemberState) -> None:
    assert rules.state_of(name=name, has_record=record, running=running) is state


def facts(**over: object) -> rules.MemberFacts:
    base: dict[str, object] = dict(name="pool_s_abc_1", has_record=False, running=True, age_s=10.0, record_age_s=None,
                                   image_id="sha256:1", pool="abc")
    return rules.MemberFacts(**{**base, **over})  # type: ignore[arg-type]


@pytest.mark.parametrize(("member", "verdict"), [
    (facts(), rules.Verdict.keep),
    (facts(age_s=4000.0), rules.Verdict.recycle_age),
    (facts(image_id="sha256:old"), rules.Verdict.recycle_drift),  # the tag moved to a new image
    (facts(pool="gone"), rules.Verdict.recycle_unwanted),  # its spec changed: nobody claims from it
    (facts(running=False), rules.Verdict.remove_dead),
    (facts(has_record=True, record_age_s=5.0), rules.Verdict.keep),  # a claim between its two steps
    (facts(has_record=True, record_age_s=60.0), rules.Verdict.remove_reserved),  # its claimer died there
    (facts(name="agent_c_farah_r1", has_record=True, age_s=9999.0), rules.Verdict.leave),
    (facts(name="agent_c_farah_r1", running=False), rules.Verdict.leave),
])
def test_verdicts(member: rules.MemberFacts, verdict: rules.Verdict) -> None:
    got = rules.verdict(member, current_image={"abc": "sha256:1"}, wanted=frozenset({"abc"}), max_age_s=3600, reserve_timeout_s=30)
    assert got is verdict


@pytest.mark.parametrize(("claimed_at", "predates"), [
    ("2026-12-02T10:00:00+00:00", True),  # claimed 5 s ago: Docker has not checked it since
    ("2026-12-02T09:59:00+00:00", False),
    (None, False),
    ("not a time", False),
])
def test_health_predates_claim(claimed_at: str | None, predates: bool) -> None:
    from datetime import datetime, timezone

    now = datetime(2026, 12, 2, 10, 0, 5, tzinfo=timezone.utc)
    assert rules.health_predates_claim(claimed_at, now=now) is predates


@pytest.mark.parametrize(("label", "expected"), [
    ("stdin-v1", {"stdin-v1"}),  # images built before Swarm had a pool
    ("stdin-v1,livekit-lobby-v1", {"stdin-v1", "livekit-lobby-v1"}),
    (" livekit-lobby-v1 , ", {"livekit-lobby-v1"}),
    ("", set()),
    (None, set()),
])
def test_an_image_lists_its_handover_protocols(label: str | None, expected: set[str]) -> None:
    assert rules.protocols(label) == expected


def test_a_lobby_is_per_scope_and_pool() -> None:
    a = rules.lobby_room(scope="s1", pool="abc")
    assert a == rules.lobby_room(scope="s1", pool="abc")  # a restarted orchestrator finds its members' lobby
    assert a != rules.lobby_room(scope="s2", pool="abc") and a != rules.lobby_room(scope="s1", pool="abd")


@pytest.mark.parametrize(("gone", "created", "age_s", "alive"), [
    (False, False, 5.0, True),  # running
    (False, True, 1.0, True),  # made a moment ago: its start is on its way
    (False, True, rules.NEVER_STARTED_S + 1, False),  # never started (a start and its cleanup failed under load)
    (True, False, 5.0, False),  # exited
])
def test_a_member_stuck_in_created_is_dead(gone: bool, created: bool, age_s: float, alive: bool) -> None:
    assert rules.alive(gone=gone, created=created, age_s=age_s) is alive
    facts = rules.MemberFacts(name="pool_s_p_1", has_record=False, running=alive, age_s=age_s, record_age_s=None,
                              image_id="i", pool="p")
    removed = rules.verdict(facts, current_image={"p": "i"}, wanted=frozenset({"p"}), max_age_s=3600, reserve_timeout_s=30)
    assert (removed is rules.Verdict.remove_dead) is (not alive)


def test_with_memory_sums_each_pools_sampled_members_and_leaves_unsampled_ones_unknown() -> None:
    snapshot = {"enabled": True, "claims": {"warm": 3},
                "pools": [{"pool": "a", "idle": 2}, {"pool": "b", "idle": 1}, {"pool": "c", "idle": 0}],
                "members": [{"name": "m1", "domain": "a"}, {"name": "m2", "domain": "a"}, {"name": "m3", "domain": "b"}]}
    shown = rules.with_memory(snapshot, {"m1": 25 << 20, "m2": 27 << 20, "gone": 1 << 30})  # m3 not sampled yet
    assert [(p["pool"], p["memory_used_bytes"]) for p in shown["pools"]] == [("a", 52 << 20), ("b", None), ("c", None)]
    assert [(m["name"], m["memory_bytes"]) for m in shown["members"]] == [("m1", 25 << 20), ("m2", 27 << 20), ("m3", None)]
    assert shown["claims"] == {"warm": 3} and "memory_used_bytes" not in snapshot["pools"][0]  # the snapshot is not changed


@pytest.mark.parametrize(("stamp", "age"), [
    ("2026-01-01T00:00:00+00:00", 90.0),
    ("2026-01-01T00:02:00+00:00", 0.0),  # a clock ahead of ours: new, never negative
    ("2026-01-01T00:01:00", 30.0),  # no offset: read as UTC, as the planner reads the same label
    ("", 0.0),
    (None, 0.0),
    ("yesterday", 0.0),  # unparseable: treated as new (kept), never an error
])
def test_stamp_age(stamp: str | None, age: float) -> None:
    assert rules.stamp_age(stamp, datetime(2026, 1, 1, 0, 1, 30, tzinfo=timezone.utc)) == age
