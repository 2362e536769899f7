"""The pure rules of LiveKit dispatch: registrations, room owner, room patterns, mode, load."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import SecretStr

from orchestrator.dispatch.rules import (
    AUTOMATIC,
    AgentRef,
    RegistrationKey,
    agent_for_job,
    desired_registrations,
    job_mode,
    load_for,
    registration_changes,
    room_owner,
)
from orchestrator.dispatch.worker import Accept, Reject, Served, agent_url, availability_response
from orchestrator.core.models import LiveKitCredentials, Mode
from orchestrator.settings import Settings

A = LiveKitCredentials(url="ws://lk-a", api_key="ka", api_secret=SecretStr("sa"))
A_ROTATED = LiveKitCredentials(url="ws://lk-a", api_key="ka", api_secret=SecretStr("sa2"))
B = LiveKitCredentials(url="ws://lk-b", api_key="kb", api_secret=SecretStr("sb"))
DEFAULT_PATTERNS = [re.compile(p) for p in Settings().dispatch_room_patterns]
VOXIE = [re.compile(r"^voxie-creation-(?P<agent_slug>[a-z0-9-]+?)-[a-z0-9]+$")]


def test_one_registration_per_client_and_slug_plus_unnamed_when_automatic() -> None:
    clients = [("c1", A, ["farah", "clarence"]), ("c2", B, [])]
    assert set(desired_registrations(clients, automatic=False)) == {RegistrationKey("c1", "farah"), RegistrationKey("c1", "clarence")}
    assert set(desired_registrations(clients, automatic=True)) == {
        RegistrationKey("c1", "farah"), RegistrationKey("c1", "clarence"), RegistrationKey("c1", AUTOMATIC), RegistrationKey("c2", AUTOMATIC),
    }


@pytest.mark.parametrize(
    ("current", "desired", "stop", "start"),
    [
        ({}, {"farah": A}, [], ["farah"]),                                   # new agent
        ({"farah": A, "old": A}, {"farah": A}, ["old"], []),                 # removed agent
        ({"farah": A}, {"farah": A_ROTATED}, ["farah"], ["farah"]),          # rotated secret: reconnect
        ({"farah": A}, {"farah": B}, ["farah"], ["farah"]),                  # moved to another server
        ({"farah": A}, {"farah": A}, [], []),                                # nothing changed
    ],
)
def test_registration_changes(current: dict, desired: dict, stop: list[str], start: list[str]) -> None:
    key = lambda name: RegistrationKey("c1", name)  # noqa: E731
    got_stop, got_start = registration_changes({key(k): v for k, v in current.items()}, {key(k): v for k, v in desired.items()})
    assert [k.agent_name for k in got_stop] == stop
    assert [k.agent_name for k in got_start] == start


C1, C2 = json.dumps({"client_id": "c1"}), json.dumps({"client_id": "c2"})


@pytest.mark.parametrize(
    ("sharing", "room_meta", "job_meta", "proven", "owner"),
    [
        (["c1"], "", "", None, "c1"),                 # own server: the room is ours
        (["c1"], C1, "", None, "c1"),                 # own server, our claim
        (["c1"], C1, C2, None, None),                 # own server, the dispatch says another
        (["c1", "c2"], "", "", None, None),           # shared server, nothing proven: refuse
        (["c1", "c2"], C1, "", None, None),           # shared: a client_id anyone could write is no proof
        (["c1", "c2"], "", C1, None, None),           # ... in the dispatch metadata neither
        (["c1", "c2"], C1, "", "c1", "c1"),           # stamped by the orchestrator for c1
        (["c1", "c2"], C2, "", "c2", None),           # stamped for another tenant
        (["c1"], C1, "", "c2", None),                 # a valid stamp for another client wins over any claim
        (["c1", "c2"], "not json", "", None, None),
    ],
)
def test_room_owner(sharing: list[str], room_meta: str, job_meta: str, proven: str | None, owner: str | None) -> None:
    got = room_owner(registered_for="c1", sharing_server=sharing, room_metadata=room_meta, job_metadata=job_meta, proven=proven)
    assert got.client_id == owner
    assert bool(got.reason) == (owner is None)


UUID = "123e4567-e89b-12d3-a456-426614174000"


@pytest.mark.parametrize(
    ("agent_name", "room", "room_meta", "job_meta", "patterns", "want"),
    [
        ("farah", "anything", "", "", DEFAULT_PATTERNS, AgentRef(slug="farah")),                  # named dispatch
        (AUTOMATIC, f"agent-{UUID}-abc123", "", "", DEFAULT_PATTERNS, AgentRef(agent_id=UUID)),     # seed 000's name
        (AUTOMATIC, "agent-x-1", json.dumps({"agent_id": "y"}), "", DEFAULT_PATTERNS, AgentRef(agent_id="y")),  # metadata first
        (AUTOMATIC, "agent-x-1", "", json.dumps({"agent_slug": "farah"}), DEFAULT_PATTERNS, AgentRef(slug="farah")),
        (AUTOMATIC, "voxie-creation-voxie-7f", "", "", VOXIE, AgentRef(slug="voxie")),           # seed 001's other deployment
    ],
)
def test_agent_for_job(agent_name: str, room: str, room_meta: str, job_meta: str, patterns: list, want: AgentRef) -> None:
    assert agent_for_job(agent_name=agent_name, room=room, room_metadata=room_meta, job_metadata=job_meta, patterns=patterns) == want


@pytest.mark.parametrize(
    ("room", "room_meta", "patterns"),
    [
        ("test-room-1", json.dumps({"agent_id": "y"}), DEFAULT_PATTERNS),   # outside every pattern: metadata alone is not enough
        ("agent-onlyone", "", DEFAULT_PATTERNS),                             # no suffix: not the pattern
        (f"agent-{UUID}-abc", "", VOXIE),                                    # the voxie deployment leaves agent rooms alone
        ("voxie-creation-x-1", "", [re.compile(r"^voxie-creation-")]),       # matches, but names no agent
    ],
)
def test_agent_for_job_refuses(room: str, room_meta: str, patterns: list) -> None:
    ref = agent_for_job(agent_name=AUTOMATIC, room=room, room_metadata=room_meta, job_metadata="", patterns=patterns)
    assert ref.slug is None and ref.agent_id is None and ref.reason


@pytest.mark.parametrize(
    ("job_meta", "room_meta", "mode"),
    [("", "", Mode.voice), (json.dumps({"mode": "text"}), "", Mode.text), ("", json.dumps({"mode": "text"}), Mode.text),
     (json.dumps({"mode": "telepathy"}), "", Mode.voice)],
)
def test_job_mode(job_meta: str, room_meta: str, mode: Mode) -> None:
    assert job_mode(job_meta, room_meta) is mode


@pytest.mark.parametrize(
    ("client", "total", "load", "full"),
    [(0, 0, 0.0, False), (1, 10, 0.2, False), (4, 5, 0.8, False), (5, 5, 1.0, True), (2, 50, 1.0, True), (6, 7, 1.0, True)],
)
def test_load_is_the_fuller_limit(client: int, total: int, load: float, full: bool) -> None:
    got = load_for(client_running=client, total_running=total, max_per_client=5, max_total=50)
    assert (round(got.value, 3), got.full) == (load, full)


@pytest.mark.parametrize(
    ("url", "want"),
    [("ws://127.0.0.1:7880", "ws://127.0.0.1:7880/agent"), ("https://x.livekit.cloud", "wss://x.livekit.cloud/agent"),
     ("wss://h/base/", "wss://h/base/agent")],
)
def test_agent_url(url: str, want: str) -> None:
    assert agent_url(url) == want


def test_bad_room_pattern_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="not a regular expression"):
        Settings(dispatch_room_patterns=["agent-(unclosed"])


@pytest.mark.parametrize(
    ("answer", "available", "terminate", "identity"),
    [(Accept(identity="agent-farah", name="Farah"), True, False, "agent-farah"),
     (Served(container="agent_x"), False, True, ""),
     (Reject("room is full", kind="limits"), False, False, "")],
)
def test_availability_response(answer: object, available: bool, terminate: bool, identity: str) -> None:
    resp = availability_response("AJ_1", answer)  # type: ignore[arg-type]
    assert (resp.job_id, resp.available, resp.terminate, resp.participant_identity) == ("AJ_1", available, terminate, identity)
    assert "room is full" not in resp.SerializeToString().decode(errors="replace")  # the protocol carries no reason
